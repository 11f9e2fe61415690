"""Which DynamoDB the storage commands talk to, chosen in one visible way.

In order: `--endpoint URL`; `--local` (the `make dev` stack on 127.0.0.1, port
LOCAL_DYNAMODB_PORT, default 8000); DYNAMODB_ENDPOINT; `--aws` or ENGINE_TARGET=aws (AWS
itself, with the usual credential chain). With none of these, a local stack that answers is
used, and otherwise the command stops and says how to choose: a checkout never reaches a real
account by accident. The choice is printed on stderr (`target: ...`) before the command runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import socket
import sys
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from engine.entrypoints.cli.base import CommandError
from engine.settings import Settings

LOCAL_HOST = "127.0.0.1"
DEFAULT_LOCAL_PORT = 8000
# moto accepts any credentials; a fresh machine has none, and needs none for the local stack
LOCAL_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local"}


@dataclass(frozen=True)
class Target:
    endpoint: str | None  # None: AWS itself
    why: str

    def describe(self) -> str:
        where = f"DynamoDB at {self.endpoint}" if self.endpoint else "AWS (your credentials)"
        return f"target: {where} ({self.why})"


def add_target_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--local", action="store_true", help="the `make dev` stack on this machine")
    group.add_argument("--aws", action="store_true", help="AWS itself, with your credentials")
    group.add_argument("--endpoint", metavar="URL", help="a DynamoDB endpoint, e.g. moto's")


def local_endpoint(env: Mapping[str, str]) -> str:
    port = (env.get("LOCAL_DYNAMODB_PORT") or "").strip() or str(DEFAULT_LOCAL_PORT)
    return f"http://{LOCAL_HOST}:{port}"


def answers(endpoint: str, timeout_s: float = 0.3) -> bool:
    """Whether something listens at the endpoint's host and port."""
    parts = urlsplit(endpoint)
    try:
        with socket.create_connection(
            (parts.hostname or LOCAL_HOST, parts.port or 80), timeout=timeout_s
        ):
            return True
    except OSError:
        return False


def choose_target(args: argparse.Namespace, env: Mapping[str, str]) -> Target:
    if getattr(args, "endpoint", None):
        return Target(args.endpoint, "--endpoint")
    if getattr(args, "local", False):
        endpoint = local_endpoint(env)
        if not answers(endpoint):
            raise CommandError(f"no local stack answers at {endpoint}: start it with `make dev`")
        return Target(endpoint, "--local")
    if (env.get("DYNAMODB_ENDPOINT") or "").strip():
        return Target(env["DYNAMODB_ENDPOINT"].strip(), "DYNAMODB_ENDPOINT")
    if getattr(args, "aws", False) or (env.get("ENGINE_TARGET") or "").lower() == "aws":
        return Target(None, "--aws" if getattr(args, "aws", False) else "ENGINE_TARGET=aws")
    endpoint = local_endpoint(env)
    if answers(endpoint):
        return Target(endpoint, "the local stack answers; --aws for AWS")
    raise CommandError(
        f"no DynamoDB to talk to: no local stack answers at {endpoint} (start one with "
        "`make dev`), and AWS is used only when asked (--aws, or ENGINE_TARGET=aws)"
    )


def settings_for(
    args: argparse.Namespace, env: MutableMapping[str, str] | None = None, **overrides: object
) -> Settings:
    """The settings of a storage command: the environment's, on the chosen target (printed)."""
    env = os.environ if env is None else env
    target = choose_target(args, env)
    if target.endpoint is None:
        _require_aws_credentials()
    else:
        for name, value in LOCAL_CREDENTIALS.items():
            env.setdefault(name, value)
    print(target.describe(), file=sys.stderr)
    try:
        config = Settings.from_env(env)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    return dataclasses.replace(config, dynamodb_endpoint=target.endpoint, **overrides)  # type: ignore[arg-type]


def _require_aws_credentials() -> None:
    import botocore.session

    if botocore.session.get_session().get_credentials() is None:
        raise CommandError(
            "no AWS credentials found: configure them (aws configure, AWS_PROFILE, or "
            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY), or use the local stack (--local)"
        )
