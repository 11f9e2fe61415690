"""Hostile and hurried input over real HTTP against the local stack (issue 10).

Every answer is a JSON error with the contract `{code, message, details}` or a correct 200:
never a dropped connection, an HTML page, a 5xx other than the documented 503, nor a write
the caller did not ask for.
"""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest
import requests

from tests.e2e.test_fuzz_api import assert_error_contract
from tests.e2e.test_local_stack import scan_all

pytestmark = pytest.mark.e2e

SEEDED = "demo-rsi-btc"


def post(
    stack: dict[str, Any],
    path: str,
    body: str | bytes | None,
    *,
    content_type: str = "application/json",
    params: dict[str, str] | list[tuple[str, str]] | None = None,
) -> requests.Response:
    try:
        return requests.post(
            f"{stack['base']}{path}",
            data=body,
            params=params,
            headers={"Content-Type": content_type},
            timeout=30,
        )
    except requests.ConnectionError as exc:
        raise AssertionError(f"no HTTP answer, the connection was dropped: {exc}") from None


def draft_text(entry: str = '{"left": "close", "op": ">", "right": 0}', **extra: Any) -> str:
    """A draft request as text, so that `entry` may be nested deeper than json.dumps allows."""
    strategy = {
        "strategy_id": "hostile",
        "name": "hostile",
        "assets": ["BTC/USDT"],
        "timeframe": "1h",
        "entry": "@ENTRY@",
        **extra,
    }
    return json.dumps({"strategy": strategy}).replace('"@ENTRY@"', entry)


def nested_not(depth: int) -> str:
    return '{"not": ' * depth + '{"left": "close", "op": ">", "right": 0}' + "}" * depth


def nested_all(depth: int) -> str:
    return '{"all": [' * depth + '{"left": "close", "op": ">", "right": 0}' + "]}" * depth


def problem_text(answer: requests.Response) -> str:
    body = answer.json()
    return body["message"] + " " + " ".join(d["message"] for d in body["details"])


def positions_written(stack: dict[str, Any]) -> int:
    return sum(len(items) for name, items in scan_all(stack["db"]).items() if "position" in name)


# --- 1: limits before anything recursive ----------------------------------------------------


@pytest.mark.parametrize("depth", [33, 60])
def test_conditions_nested_past_the_limit_are_422_naming_it(
    stack: dict[str, Any], depth: int
) -> None:
    answer = post(stack, "/evaluate", draft_text(nested_not(depth)))
    assert answer.status_code == 422, answer.text[:300]
    assert_error_contract(answer)
    assert "at most 32" in problem_text(answer)
    assert any(d["path"] == "strategy.entry" for d in answer.json()["details"])


def test_conditions_at_the_limit_are_evaluated(stack: dict[str, Any]) -> None:
    for entry in (nested_not(31), nested_all(31)):
        answer = post(stack, "/evaluate", draft_text(entry))
        assert answer.status_code == 200, answer.text[:300]


def test_too_many_conditions_are_422_naming_the_limit(stack: dict[str, Any]) -> None:
    leaf = '{"left": "close", "op": ">", "right": 0}'
    answer = post(stack, "/evaluate", draft_text('{"any": [' + ", ".join([leaf] * 600) + "]}"))
    assert answer.status_code == 422, answer.text[:300]
    assert_error_contract(answer)
    assert "at most 500" in problem_text(answer)


@pytest.mark.parametrize("depth", [190, 250, 1_000, 5_000])
def test_deeply_nested_bodies_are_422_naming_the_limit(stack: dict[str, Any], depth: int) -> None:
    answer = post(stack, "/evaluate", draft_text(nested_not(depth)))
    assert answer.status_code == 422, answer.text[:300]
    assert_error_contract(answer)
    assert "at most 100" in answer.json()["message"]


def test_deeply_nested_arrays_in_a_bulk_body_are_422(stack: dict[str, Any]) -> None:
    body = '{"strategy_ids": ' + "[" * 3_000 + "]" * 3_000 + ', "persist": false}'
    answer = post(stack, "/evaluate/bulk", body)
    assert answer.status_code == 422, answer.text[:300]
    assert_error_contract(answer)


@pytest.mark.parametrize("digits", [500, 5_000, 50_000])
def test_a_number_of_thousands_of_digits_is_422(stack: dict[str, Any], digits: int) -> None:
    answer = post(
        stack, "/evaluate", draft_text(f'{{"left": "close", "op": ">", "right": {"7" * digits}}}')
    )
    assert answer.status_code == 422, answer.text[:300]
    assert_error_contract(answer)
    assert any(d["path"].startswith("strategy.entry.right") for d in answer.json()["details"])


# --- 2: positions of a draft are validated --------------------------------------------------

POSITION = {
    "position_id": "p1",
    "strategy_id": "hostile",
    "asset": "BTC/USDT",
    "entry_time": "2026-01-01T00:00:00Z",
    "entry_price": 60_000,
    "quantity": 1,
}


@pytest.mark.parametrize(
    ("field", "literal"),
    [
        ("entry_price", "NaN"),
        ("entry_price", "Infinity"),
        ("entry_price", "-Infinity"),
        ("entry_price", "-5"),
        ("entry_price", "0"),
        ("quantity", "-1"),
        ("quantity", "true"),
        ("quantity", '"1"'),
        ("entry_fee", "-0.5"),
        ("stop_loss_price", "NaN"),
        ("entry_time", '"0001-01-01T00:00:00Z"'),
        ("entry_time", '"2999-01-01T00:00:00Z"'),
    ],
)
def test_an_impossible_position_is_422(stack: dict[str, Any], field: str, literal: str) -> None:
    position = json.dumps({**POSITION, field: "@V@"}).replace('"@V@"', literal)
    body = draft_text().removesuffix("}") + f', "positions": [{position}]}}'
    answer = post(stack, "/evaluate", body)
    assert answer.status_code == 422, answer.text[:300]
    assert_error_contract(answer)
    assert field in answer.text


def test_a_valid_position_answers_strict_json(stack: dict[str, Any]) -> None:
    body = draft_text().removesuffix("}") + f', "positions": [{json.dumps(POSITION)}]}}'
    answer = post(stack, "/evaluate", body)
    assert answer.status_code == 200, answer.text[:300]
    json.loads(answer.text, parse_constant=lambda name: pytest.fail(f"{name} is not JSON"))


# --- 3: a misspelt dry-run flag never writes ------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {"dry_run": "true"},
        {"Persist": "false"},
        {"persist[]": "false"},
        {"persist ": "false"},
        [("persist", "false"), ("persist", "true")],
        {"persist": "false", "verbose": "1"},
    ],
    ids=["dry_run", "Persist", "persist[]", "persist-space", "twice", "extra"],
)
def test_unknown_or_repeated_query_parameters_are_422_and_write_nothing(
    stack: dict[str, Any], params: Any
) -> None:
    before = scan_all(stack["db"])
    answer = post(stack, f"/evaluate/{SEEDED}", None, params=params)
    assert answer.status_code == 422, answer.text[:300]
    assert_error_contract(answer)
    assert scan_all(stack["db"]) == before


@pytest.mark.parametrize("path", ["/evaluate", "/evaluate/bulk"])
def test_routes_without_query_parameters_refuse_them(stack: dict[str, Any], path: str) -> None:
    body = json.dumps({"strategy_ids": [SEEDED]}) if path.endswith("bulk") else draft_text()
    before = scan_all(stack["db"])
    answer = post(stack, path, body, params={"persist": "false"})
    assert answer.status_code == 422, answer.text[:300]
    assert_error_contract(answer)
    assert scan_all(stack["db"]) == before


def test_a_misspelt_query_parameter_is_named_with_a_suggestion(stack: dict[str, Any]) -> None:
    answer = post(stack, f"/evaluate/{SEEDED}", None, params={"Persist": "false"})
    assert "did you mean 'persist'" in answer.json()["message"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/evaluate/bulk", {"strategy_ids": [SEEDED], "persist": False, "dry_run": True}),
        ("/evaluate/bulk", {"strategy_ids": [SEEDED], "Persist": False}),
        ("/evaluate", {"strategy": {}, "persist": False}),
    ],
)
def test_unknown_body_keys_are_422(stack: dict[str, Any], path: str, body: Any) -> None:
    before = scan_all(stack["db"])
    answer = post(stack, path, json.dumps(body))
    assert answer.status_code == 422, answer.text[:300]
    assert_error_contract(answer)
    assert scan_all(stack["db"]) == before


# --- 4: content types and JSON types --------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    ["APPLICATION/JSON", "Application/Json; charset=UTF-8", "application/vnd.api+json", ""],
)
def test_json_media_types_are_accepted_in_any_spelling(
    stack: dict[str, Any], content_type: str
) -> None:
    body = json.dumps({"strategy_ids": ["nope"], "persist": False})
    answer = post(stack, "/evaluate/bulk", body, content_type=content_type)
    assert answer.status_code == 200, answer.text[:300]
    assert answer.json()["results"][0]["error"]["code"] == "strategy_not_found"


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/jsonx"]
)
def test_other_media_types_are_415_in_the_contract(
    stack: dict[str, Any], content_type: str
) -> None:
    body = json.dumps({"strategy_ids": ["nope"], "persist": False})
    answer = post(stack, "/evaluate/bulk", body, content_type=content_type)
    assert answer.status_code == 415, answer.text[:300]
    assert_error_contract(answer)


@pytest.mark.parametrize("persist", ["0", "1", '"false"', "null"])
def test_persist_must_be_a_json_boolean(stack: dict[str, Any], persist: str) -> None:
    before = scan_all(stack["db"])
    answer = post(
        stack, "/evaluate/bulk", f'{{"strategy_ids": ["{SEEDED}"], "persist": {persist}}}'
    )
    assert answer.status_code == 422, answer.text[:300]
    assert_error_contract(answer)
    assert scan_all(stack["db"]) == before


@pytest.mark.parametrize(
    "config",
    [
        {"position_sizing": {"type": "fixed_quantity", "value": True}},
        {"max_open_positions": True},
        {"max_open_positions": "2"},
        {"fee_rate": False},
    ],
)
def test_booleans_and_strings_are_not_numbers(stack: dict[str, Any], config: Any) -> None:
    answer = post(stack, "/evaluate", draft_text(execution_config=config))
    assert answer.status_code == 422, answer.text[:300]
    assert_error_contract(answer)


# --- 5: a malformed bulk id fails alone -----------------------------------------------------


def test_a_malformed_bulk_id_fails_alone(stack: dict[str, Any]) -> None:
    ids = [SEEDED, "bad id!", "", "x" * 65, "nope"]
    answer = post(stack, "/evaluate/bulk", json.dumps({"strategy_ids": ids, "persist": False}))
    assert answer.status_code == 200, answer.text[:300]
    results = answer.json()["results"]
    assert [r["strategy_id"] for r in results] == ids
    assert "error" not in results[0]
    codes = [r["error"]["code"] for r in results[1:]]
    assert codes == ["invalid_request"] * 3 + ["strategy_not_found"]
    assert "malformed" in results[1]["error"]["message"]


# --- 7: the local server's own refusals are JSON --------------------------------------------


def raw_request(stack: dict[str, Any], data: bytes) -> tuple[int, dict[str, str], bytes]:
    host, port = stack["root"].removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        conn.sendall(data)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


def assert_json_error(status: int, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    assert headers.get("content-type") == "application/json", (status, headers, body[:200])
    error = json.loads(body)
    assert set(error) == {"code", "message", "details"}, error
    return dict(error)


def test_an_unknown_method_is_a_json_405(stack: dict[str, Any]) -> None:
    status, headers, body = raw_request(
        stack,
        b"QUERY /api/v1/execution/evaluate HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    assert status == 405
    assert assert_json_error(status, headers, body)["code"] == "method_not_allowed"


def test_a_known_route_with_another_method_is_a_json_405(stack: dict[str, Any]) -> None:
    answer = requests.get(f"{stack['base']}/evaluate/bulk", timeout=30)
    assert answer.status_code == 405
    assert answer.headers["Allow"] == "POST"
    assert_error_contract(answer)


def test_a_too_long_request_line_is_a_json_414(stack: dict[str, Any]) -> None:
    path = "/api/v1/execution/evaluate/" + "x" * 70_000
    status, headers, body = raw_request(
        stack, f"POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    )
    assert status == 414
    assert_json_error(status, headers, body)


def test_too_many_headers_are_a_json_431(stack: dict[str, Any]) -> None:
    many = "".join(f"X-H{n}: {n}\r\n" for n in range(200))
    status, headers, body = raw_request(
        stack,
        f"POST /api/v1/execution/evaluate HTTP/1.1\r\nHost: x\r\n{many}Connection: close\r\n\r\n".encode(),
    )
    assert status == 431
    assert_json_error(status, headers, body)


@pytest.mark.parametrize("length", ["-1", "abc", "1e3"])
def test_a_bad_content_length_is_a_json_400(stack: dict[str, Any], length: str) -> None:
    status, headers, body = raw_request(
        stack,
        f"POST /api/v1/execution/evaluate HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n"
        "Connection: close\r\n\r\n".encode(),
    )
    assert status == 400
    assert_json_error(status, headers, body)


# --- 10: messages that say what to do -------------------------------------------------------


def test_a_bare_strategy_is_told_to_wrap_it(stack: dict[str, Any]) -> None:
    strategy = json.loads(draft_text())["strategy"]
    answer = post(stack, "/evaluate", json.dumps(strategy))
    assert answer.status_code == 422
    assert 'wrap the strategy in {"strategy": ...}' in answer.json()["message"]


def test_malformed_json_gives_line_and_column(stack: dict[str, Any]) -> None:
    answer = post(stack, "/evaluate", '{"strategy": {\n  "name": "x",,\n}}')
    assert answer.status_code == 400
    assert_error_contract(answer)
    assert "line 2 column 15" in answer.json()["message"]


def test_unknown_names_get_a_suggestion(stack: dict[str, Any]) -> None:
    indicators = {"r": {"fn": "RSII", "params": {}}, "s": {"fn": "SMA", "params": {"timeperod": 5}}}
    answer = post(
        stack,
        "/evaluate",
        draft_text(indicators=indicators, execution_config={"stop_los": {}}),
    )
    assert answer.status_code == 422
    text = problem_text(answer)
    assert "did you mean 'RSI'" in text
    assert "did you mean 'timeperiod'" in text
    assert "did you mean 'stop_loss'" in text


def test_a_market_without_candles_says_how_to_import_them(stack: dict[str, Any]) -> None:
    answer = post(stack, "/evaluate", draft_text(assets=["NOCANDLES/USDT"]))
    assert answer.status_code == 503
    assert_error_contract(answer)
    assert "candles import" in answer.json()["message"]
