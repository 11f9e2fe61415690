"""`python -m engine events ...`: watch the order events, republish them, check a signature."""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path
from typing import Any

from engine.entrypoints.cli.base import EXIT_OK, CommandError
from engine.entrypoints.cli.target import add_target_options, settings_for

EXIT_BAD_SIGNATURE = 1


def add_events_commands(subparsers: Any) -> None:
    events = subparsers.add_parser(
        "events", help="order events: tail them, republish them, verify a signature"
    )
    actions = events.add_subparsers(dest="action", required=True)
    tail = actions.add_parser(
        "tail",
        help="print order events as their commits arrive (one JSON line each)",
        description="Reads the outbox table's stream on the storage target (the local stack, "
        "--endpoint, or AWS with --aws) and prints each event as one JSON line, until "
        "interrupted.",
    )
    add_target_options(tail)
    tail.add_argument(
        "--from-start",
        action="store_true",
        help="begin with the oldest events the stream still holds, not with new ones",
    )
    tail.add_argument("--interval", type=float, default=0.5, help="seconds between polls")
    tail.set_defaults(handler=_tail)
    republish = actions.add_parser(
        "republish",
        help="put a strategy's events from the outbox on the bus again (same ids)",
        description="Reads the strategy's events still in the outbox table (kept 7 days) that "
        "were committed after --after-version, in order, and puts them on the EventBridge bus "
        "(--bus, else EVENT_BUS_NAME) as the publisher does. For events the publisher gave up "
        "on (its stream records parked in the dead-letter queue): each event keeps its id, so "
        "a subscriber that already has one drops the copy. --dry-run lists them only.",
    )
    add_target_options(republish)
    republish.add_argument("strategy_id", metavar="STRATEGY_ID")
    republish.add_argument(
        "--after-version",
        type=int,
        default=0,
        help="only events of commits after this state version (default: all)",
    )
    republish.add_argument("--bus", help="the bus name (default: EVENT_BUS_NAME)")
    republish.add_argument(
        "--dry-run", action="store_true", help="print the events, put nothing on the bus"
    )
    republish.set_defaults(handler=_republish)
    verify = actions.add_parser(
        "verify",
        help="check a webhook body's X-Signature-256 (exit 0: valid, 1: not)",
        description="Checks that SIGNATURE (sha256=<hex>, or the bare hex) is the HMAC-SHA256 "
        "of BODY_FILE's exact bytes with the secret. Prints one line.",
    )
    verify.add_argument("--secret", required=True, help="the webhook secret")
    verify.add_argument("body_file", metavar="BODY_FILE", type=Path, help="the body, as received")
    verify.add_argument("signature", metavar="SIGNATURE", help="the X-Signature-256 header value")
    verify.set_defaults(handler=_verify)


def _verify(args: argparse.Namespace) -> int:
    from engine.adapters.events.wire import verify

    try:
        body = args.body_file.read_bytes()
    except OSError as exc:
        raise CommandError(f"{args.body_file}: cannot read: {exc.strerror or exc}") from None
    if verify(body, args.secret, args.signature):
        print(f"valid: {args.body_file} is signed with this secret")
        return EXIT_OK
    print(f"invalid: the signature does not match {args.body_file} with this secret")
    return EXIT_BAD_SIGNATURE


def _republish(args: argparse.Namespace) -> int:
    from engine.adapters import aws
    from engine.adapters.dynamodb import configure
    from engine.adapters.dynamodb.outbox import outbox_events
    from engine.adapters.events.publisher import EventBridgeBus, Publisher, PublishFailed

    config = settings_for(args)
    bus: str = args.bus or config.events.bus_name or ""
    if not bus and not args.dry_run:
        raise CommandError("which bus? give --bus NAME or set EVENT_BUS_NAME")
    configure(config)
    try:
        events = outbox_events(args.strategy_id, args.after_version)
    except Exception as exc:  # no table, no endpoint: one line, not a traceback
        raise CommandError(f"cannot read the outbox: {exc}", exit_code=1) from None
    if args.dry_run:
        for event in events:
            print(f"{event.id} {event.type} {event.time} sequence {event.sequence}")
        print(f"{len(events)} events of {args.strategy_id} in the outbox", file=sys.stderr)
        return EXIT_OK
    client = aws.client("events", region_name=config.region)
    try:
        Publisher(EventBridgeBus(client, bus)).publish(events)
    except PublishFailed as exc:
        raise CommandError(f"not every event was put on {bus}: {exc}", exit_code=1) from None
    print(f"{len(events)} events of {args.strategy_id} put on {bus} again", file=sys.stderr)
    return EXIT_OK


def _tail(args: argparse.Namespace) -> int:
    from engine.adapters import aws
    from engine.adapters.events.stream import OutboxStream, streams_client
    from engine.entrypoints.local.events import tail

    config = settings_for(args)
    endpoint, region = config.dynamodb_endpoint, config.region
    dynamodb = aws.client("dynamodb", endpoint_url=endpoint, region_name=region)
    try:
        stream = OutboxStream.of_table(
            dynamodb,
            streams_client(endpoint, region),
            config.table_names["OutboxModel"],
            "TRIM_HORIZON" if args.from_start else "LATEST",
        )
    except Exception as exc:  # no table, no endpoint: one line, not a traceback
        raise CommandError(f"cannot read the outbox stream: {exc}", exit_code=1) from None
    print(f"tailing {stream.stream_arn} (Ctrl-C stops)", file=sys.stderr, flush=True)
    tail(stream, sys.stdout, threading.Event(), args.interval)
    return EXIT_OK
