"""`make dev`: start moto's DynamoDB server, create and seed the tables, serve the API.

Runs until interrupted. moto keeps its data in memory: a restart begins from the seed.
Ports: LOCAL_DYNAMODB_PORT (8000) and LOCAL_API_PORT (3000), on 127.0.0.1.
With WEBHOOK_URL (and WEBHOOK_SECRET) set, the order events are POSTed there, signed.
"""

from __future__ import annotations

import os
import sys
import threading
import time

from engine.entrypoints.local.template import literal_environment
from engine.settings import Settings


def main() -> int:
    host = "127.0.0.1"
    db_port = int(os.environ.get("LOCAL_DYNAMODB_PORT", "8000"))
    api_port = int(os.environ.get("LOCAL_API_PORT", "3000"))
    endpoint = f"http://{host}:{db_port}"
    # The functions' settings, as the template gives them, pointed at the local DynamoDB.
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "local")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "local")
    os.environ.setdefault("AWS_REGION", "us-east-1")
    os.environ.setdefault("AWS_DEFAULT_REGION", os.environ["AWS_REGION"])
    os.environ["DYNAMODB_ENDPOINT"] = endpoint
    os.environ.setdefault("STALE_DATA_POLICY", "warn")
    os.environ.setdefault("MARKET_DATA_PROVIDER", "dynamodb")
    # moto applies one request at a time (engine.entrypoints.local.moto), as DynamoDB applies each
    # atomically: commits may run concurrently as deployed.
    os.environ.setdefault("COMMIT_WORKERS", literal_environment()["COMMIT_WORKERS"])
    # ...but a candle Query on moto reads the whole table (0.3 s at a few thousand candles),
    # so concurrent fetches would only queue behind each other against the read timeout.
    os.environ.setdefault("MARKET_DATA_CONCURRENCY", "1")
    os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")

    from engine.entrypoints.local.moto import dynamodb_requests_atomic

    with dynamodb_requests_atomic():
        return _serve(host, api_port, db_port, endpoint)


def _serve(host: str, api_port: int, db_port: int, endpoint: str) -> int:
    from engine.entrypoints.local.moto import QuietMotoServer

    moto = QuietMotoServer(ip_address=host, port=db_port, verbose=False)
    moto.start()

    from engine.adapters.dynamodb import (
        DynamoCandleRepository,
        DynamoStrategyRepository,
        configure,
        create_tables,
    )
    from engine.entrypoints.local.seed import (
        DEMO_ASSET,
        DEMO_TIMEFRAME,
        demo_candles,
        demo_strategy,
    )
    from engine.entrypoints.local.server import make_server

    configure(Settings.from_env())
    create_tables()
    if os.environ.get("LOCAL_SEED", "1") != "0":
        DynamoStrategyRepository().put(demo_strategy())
        DynamoCandleRepository().put(
            DEMO_ASSET, DEMO_TIMEFRAME, demo_candles(int(time.time() * 1000))
        )

    relay_stop = _start_event_relay(endpoint)
    server = make_server(host, api_port, log=sys.stdout)
    print(f"DynamoDB (moto) on {endpoint}", flush=True)
    print(f"API on http://{host}:{api_port}/api/v1/execution  (OpenAPI: /openapi.json)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        if relay_stop is not None:
            relay_stop.set()
        server.server_close()
        moto.stop()
    return 0


def _start_event_relay(endpoint: str) -> threading.Event | None:
    """With WEBHOOK_URL set: deliver the order events there, signed (engine.entrypoints.local.events)."""
    from engine.entrypoints.local.events import relay_from_env

    relay = relay_from_env(os.environ, endpoint, os.environ["AWS_REGION"])
    if relay is None:
        return None
    stop = threading.Event()
    threading.Thread(target=relay.run, args=(stop,), name="webhook-relay", daemon=True).start()
    print(f"Order events to {relay.sender.url} (signed, X-Signature-256)", flush=True)
    return stop


if __name__ == "__main__":
    sys.exit(main())
