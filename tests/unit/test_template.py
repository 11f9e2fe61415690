"""template.yaml and samconfig.toml: routes and auth, least privilege, schedule and fan-out,
alarms, tables, the engine layer's pins, and cfn-lint."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.template_tables import (
    ROOT,
    TEMPLATE,
    cloudformation_table_definitions,
    load_template,
    resources_of_type,
    table_definitions,
)

BASE_PATH = "/api/v1/execution"
ROUTES = {
    (f"{BASE_PATH}/evaluate/{{strategy_id}}", "post"): "EvaluateByIdFunction",
    (f"{BASE_PATH}/evaluate", "post"): "EvaluateByObjectFunction",
    (f"{BASE_PATH}/evaluate/bulk", "post"): "EvaluateBulkFunction",
}
FUNCTIONS = {
    "EvaluateByIdFunction": "evaluate_by_id",
    "EvaluateByObjectFunction": "evaluate_by_object",
    "EvaluateBulkFunction": "evaluate_bulk",
    "PublishEventsFunction": "publish_events",
    "DeliverWebhookFunction": "deliver_webhook",
    "NotifyTelegramFunction": "notify_telegram",
}
EVENT_FUNCTIONS = {"PublishEventsFunction", "DeliverWebhookFunction", "NotifyTelegramFunction"}
TABLES = {
    "StrategiesTable",
    "PositionsTable",
    "OrdersTable",
    "CooldownsTable",
    "CandlesTable",
    "OutboxTable",
}
# what a commit writes: the state, and its events in the outbox (never read by an evaluation)
STATE_TABLES = TABLES - {"CandlesTable"}
READ_TABLES = TABLES - {"OutboxTable"}

DYNAMODB_READ = {
    "dynamodb:GetItem",
    "dynamodb:BatchGetItem",
    "dynamodb:Query",
    "dynamodb:Scan",
    "dynamodb:ConditionCheckItem",
}
DYNAMODB_WRITE = {
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:BatchWriteItem",
}
# What each function may do, table by table: evaluate_by_object only reads candles; the other
# two read the strategy, its state and candles, and commit state (never candles: the CLI
# imports those).
EXPECTED_DYNAMODB = {
    "EvaluateByObjectFunction": {"read": {"CandlesTable"}, "write": set()},
    "EvaluateByIdFunction": {"read": READ_TABLES, "write": STATE_TABLES},
    "EvaluateBulkFunction": {"read": READ_TABLES, "write": STATE_TABLES},
    # the webhook and Telegram functions touch no table; the publisher only reads the
    # outbox's stream (test_the_publisher_reads_only_the_outbox_stream_and_puts_only_on_the_bus)
    "DeliverWebhookFunction": {"read": set(), "write": set()},
    "NotifyTelegramFunction": {"read": set(), "write": set()},
}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


@pytest.fixture(scope="module")
def resources(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    resources: dict[str, dict[str, Any]] = template["Resources"]
    return resources


def _functions(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return resources_of_type(template, "AWS::Serverless::Function")


def _events(function: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    events = function["Properties"].get("Events", {})
    return {name: event for name, event in events.items() if event["Type"] == kind}


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _statements(node: Any) -> Iterator[dict[str, Any]]:
    """Every IAM statement anywhere in the template (roles, function policies, queue policies)."""
    if isinstance(node, dict):
        statements = node.get("Statement")
        if statements is not None:
            yield from _as_list(statements)
        for value in node.values():
            yield from _statements(value)
    elif isinstance(node, list):
        for value in node:
            yield from _statements(value)


def _getatt(value: Any) -> tuple[str, str] | None:
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        resource, attribute = value["Fn::GetAtt"]
        return resource, attribute
    return None


def _table_of(resource: Any) -> tuple[str, str]:
    """(table logical id, "table" | "index") for a table or index ARN; fails on anything else."""
    getatt = _getatt(resource)
    if getatt is not None and getatt[1] == "Arn":
        return getatt[0], "table"
    if isinstance(resource, dict) and isinstance(resource.get("Fn::Sub"), str):
        match = re.fullmatch(r"\$\{(\w+)\.Arn\}/index/\*", resource["Fn::Sub"])
        if match:
            return match.group(1), "index"
    raise AssertionError(f"DynamoDB permission on something that is not a table: {resource!r}")


def _dynamodb_grants(function: dict[str, Any]) -> dict[str, set[str]]:
    """{"read": tables, "write": tables} that the function's own policies grant."""
    grants: dict[str, set[str]] = {"read": set(), "write": set()}
    for statement in _statements(function["Properties"].get("Policies", [])):
        actions = set(_as_list(statement["Action"]))
        dynamodb = {a for a in actions if a.startswith("dynamodb:")}
        if not dynamodb:
            continue
        assert statement["Effect"] == "Allow"
        unknown = dynamodb - DYNAMODB_READ - DYNAMODB_WRITE
        assert not unknown, f"unexpected DynamoDB actions (wildcards?): {sorted(unknown)}"
        tables = {_table_of(r)[0] for r in _as_list(statement["Resource"])}
        assert tables <= TABLES, f"DynamoDB permission outside the tables: {tables - TABLES}"
        if dynamodb & DYNAMODB_READ:
            grants["read"] |= tables
        if dynamodb & DYNAMODB_WRITE:
            grants["write"] |= tables
    return grants


# --- routes and auth ----------------------------------------------------------------------


def test_every_route_is_under_the_base_path_on_the_one_iam_authorized_api(
    template: dict[str, Any], resources: dict[str, dict[str, Any]]
) -> None:
    apis = resources_of_type(template, "AWS::Serverless::Api")
    assert list(apis) == ["ExecutionApi"]
    assert not resources_of_type(template, "AWS::Serverless::HttpApi")
    assert not [r for r in resources.values() if r["Type"].startswith("AWS::ApiGateway::")]
    auth = apis["ExecutionApi"]["Properties"]["Auth"]
    assert auth["DefaultAuthorizer"] == "AWS_IAM"
    # API Gateway invokes through the functions' resource policies, not callers' credentials
    assert auth.get("InvokeRole") == "NONE"

    routes = {}
    for name, function in _functions(template).items():
        for event in _events(function, "Api").values():
            props = event["Properties"]
            # no RestApiId would put the route on SAM's implicit, unauthenticated API
            assert props.get("RestApiId") == {"Ref": "ExecutionApi"}, name
            assert props["Path"].startswith(f"{BASE_PATH}/"), props["Path"]
            # a route may only restate AWS_IAM, never switch auth off or to another authorizer
            assert props.get("Auth", {}).get("Authorizer", "AWS_IAM") == "AWS_IAM", name
            routes[(props["Path"], props["Method"].lower())] = name
        assert not _events(function, "HttpApi"), name
    assert routes == ROUTES


def test_the_stage_is_throttled(template: dict[str, Any]) -> None:
    settings = template["Resources"]["ExecutionApi"]["Properties"]["MethodSettings"]
    everything = [s for s in settings if s["ResourcePath"] == "/*" and s["HttpMethod"] == "*"]
    assert everything, "no stage-wide method settings"
    assert "ThrottlingRateLimit" in everything[0]
    assert "ThrottlingBurstLimit" in everything[0]


# --- least privilege ----------------------------------------------------------------------


def test_no_iam_statement_grants_every_resource_except_xray(template: dict[str, Any]) -> None:
    statements = list(_statements(template["Resources"]))
    assert statements
    for statement in statements:
        assert "NotResource" not in statement and "NotAction" not in statement, statement
        if statement["Effect"] == "Deny":
            continue  # denying everything (TLS-only queues) grants nothing
        resources = _as_list(statement.get("Resource", []))
        actions = _as_list(statement.get("Action", []))
        assert not any(isinstance(a, str) and a.endswith(":*") for a in actions), statement
        if "*" in resources or any(isinstance(r, str) and r.endswith(":*") for r in resources):
            assert all(a.startswith("xray:") for a in actions), statement


def test_functions_use_no_broad_managed_or_template_policies(template: dict[str, Any]) -> None:
    for name, function in _functions(template).items():
        for policy in _as_list(function["Properties"].get("Policies", [])):
            assert isinstance(policy, dict) and "Statement" in policy, (
                f"{name}: only explicit statements, not {policy!r}"
            )
        assert "Role" not in function["Properties"], name


@pytest.mark.parametrize("function_name", sorted(EXPECTED_DYNAMODB))
def test_each_function_reaches_only_its_own_tables(
    template: dict[str, Any], function_name: str
) -> None:
    grants = _dynamodb_grants(_functions(template)[function_name])
    assert grants == EXPECTED_DYNAMODB[function_name]


def test_evaluate_by_object_cannot_write_anything(template: dict[str, Any]) -> None:
    function = _functions(template)["EvaluateByObjectFunction"]
    for statement in _statements(function["Properties"]["Policies"]):
        actions = set(_as_list(statement["Action"]))
        assert not actions & DYNAMODB_WRITE, statement
        assert actions <= DYNAMODB_READ, statement
    assert "EventInvokeConfig" not in function["Properties"]


def test_bulk_sends_and_consumes_only_the_fanout_queue(template: dict[str, Any]) -> None:
    function = _functions(template)["EvaluateBulkFunction"]
    sqs = [
        s
        for s in _statements(function["Properties"]["Policies"])
        if any(a.startswith("sqs:") for a in _as_list(s["Action"]))
    ]
    assert sqs
    actions = set()
    for statement in sqs:
        assert [_getatt(r) for r in _as_list(statement["Resource"])] == [("FanoutQueue", "Arn")]
        actions |= set(_as_list(statement["Action"]))
    assert "sqs:SendMessage" in actions


# --- schedule and fan-out -----------------------------------------------------------------


def test_the_schedule_triggers_bulk_every_minute_with_retries_and_a_dead_letter_queue(
    template: dict[str, Any], resources: dict[str, dict[str, Any]]
) -> None:
    schedules = {
        name: _events(function, "Schedule") for name, function in _functions(template).items()
    }
    assert {name for name, events in schedules.items() if events} == {"EvaluateBulkFunction"}
    (schedule,) = schedules["EvaluateBulkFunction"].values()
    props = schedule["Properties"]
    assert props["Schedule"] == "rate(1 minute)"
    assert _getatt(props["DeadLetterConfig"]["Arn"]) == ("ScheduleDeadLetterQueue", "Arn")
    assert props["RetryPolicy"]["MaximumRetryAttempts"] >= 1
    assert resources["ScheduleDeadLetterQueue"]["Type"] == "AWS::SQS::Queue"

    # EventBridge may write to the DLQ, only from this schedule's rule
    policy = resources["ScheduleDeadLetterQueuePolicy"]
    assert policy["Properties"]["Queues"] == [{"Ref": "ScheduleDeadLetterQueue"}]
    (statement,) = [
        s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Allow"
    ]
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    assert statement["Condition"]["ArnEquals"]["aws:SourceArn"] == {
        "Fn::GetAtt": ["EvaluateBulkFunctionSchedule", "Arn"]
    }

    # a run that fails after delivery: Lambda's async retry, then the same DLQ
    invoke = _functions(template)["EvaluateBulkFunction"]["Properties"]["EventInvokeConfig"]
    on_failure = invoke["DestinationConfig"]["OnFailure"]
    assert on_failure["Type"] == "SQS"
    assert _getatt(on_failure["Destination"]) == ("ScheduleDeadLetterQueue", "Arn")

    # the handler's idea of the interval is the schedule's
    bulk_env = _functions(template)["EvaluateBulkFunction"]["Properties"]["Environment"]
    assert bulk_env["Variables"]["SCHEDULE_INTERVAL_SECONDS"] == "60"


def test_the_fanout_queue_redrives_and_outlasts_the_bulk_function(
    template: dict[str, Any], resources: dict[str, dict[str, Any]]
) -> None:
    queue = resources["FanoutQueue"]["Properties"]
    redrive = queue["RedrivePolicy"]
    assert _getatt(redrive["deadLetterTargetArn"]) == ("FanoutDeadLetterQueue", "Arn")
    assert redrive["maxReceiveCount"] == 3
    bulk = _functions(template)["EvaluateBulkFunction"]["Properties"]
    assert queue["VisibilityTimeout"] >= 6 * bulk["Timeout"]
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    assert env["FANOUT_QUEUE_URL"] == {"Ref": "FanoutQueue"}


def test_bulk_consumes_the_fanout_queue_reporting_batch_item_failures(
    template: dict[str, Any],
) -> None:
    # a SAM SQS event, or (as now) a plain event source mapping on the bulk function
    sources = [
        (event["Properties"]["Queue"], event["Properties"])
        for event in _events(_functions(template)["EvaluateBulkFunction"], "SQS").values()
    ]
    for mapping in resources_of_type(template, "AWS::Lambda::EventSourceMapping").values():
        props = mapping["Properties"]
        if props["FunctionName"]["Ref"] in EVENT_FUNCTIONS:
            continue  # the order events' sources: tested below
        assert props["FunctionName"] == {"Ref": "EvaluateBulkFunction"}
        sources.append((props["EventSourceArn"], props))
    assert len(sources) == 1
    ((queue, props),) = sources
    assert _getatt(queue) == ("FanoutQueue", "Arn")
    assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


# --- alarms -------------------------------------------------------------------------------


def test_alarms_watch_errors_throttles_and_both_dead_letter_queues(
    template: dict[str, Any],
) -> None:
    alarms = resources_of_type(template, "AWS::CloudWatch::Alarm").values()
    watched = set()
    for alarm in alarms:
        props = alarm["Properties"]
        (dimension,) = props["Dimensions"]
        target = dimension["Value"]
        name = target["Ref"] if "Ref" in target else _getatt(target)[0]  # type: ignore[index]
        watched.add((props["Namespace"], props["MetricName"], name))
        # notifications go to the optional topic when one is given
        assert props["AlarmActions"] == {
            "Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]
        }
    for function in FUNCTIONS:
        assert ("AWS/Lambda", "Errors", function) in watched
        assert ("AWS/Lambda", "Throttles", function) in watched
    assert ("AWS/Lambda", "IteratorAge", "PublishEventsFunction") in watched
    for queue in (
        "FanoutDeadLetterQueue",
        "ScheduleDeadLetterQueue",
        "PublishDeadLetterQueue",
        "WebhookDeadLetterQueue",
        "TelegramDeadLetterQueue",
    ):
        assert ("AWS/SQS", "ApproximateNumberOfMessagesVisible", queue) in watched
    assert template["Parameters"]["AlarmTopicArn"]["Default"] == ""


# --- tables -------------------------------------------------------------------------------


def test_tables_are_exactly_the_designed_ones() -> None:
    simple = {
        name: {k: v for k, v in table.items() if k in ("env", "hash", "range", "gsis")}
        for name, table in table_definitions().items()
    }
    assert simple == {
        "StrategiesTable": {
            "env": "STRATEGIES_TABLE",
            "hash": "strategy_id",
            "range": None,
            "gsis": {
                "status-timeframe-index": ("status", "timeframe", "ALL"),
                "due-index": ("status", "next_due_ms", "ALL"),
            },
        },
        "PositionsTable": {
            "env": "POSITIONS_TABLE",
            "hash": "strategy_id",
            "range": "position_id",
            "gsis": {"open-positions-index": ("open_shard", "strategy_id", "ALL")},
        },
        "OrdersTable": {
            "env": "ORDERS_TABLE",
            "hash": "strategy_id",
            "range": "order_id",
            "gsis": {"open-orders-index": ("open_shard", "strategy_id", "ALL")},
        },
        "CooldownsTable": {
            "env": "COOLDOWNS_TABLE",
            "hash": "strategy_id",
            "range": "asset",
            "gsis": {},
        },
        "CandlesTable": {
            "env": "CANDLES_TABLE",
            "hash": "market",
            "range": "open_time",
            "gsis": {},
        },
        "OutboxTable": {
            "env": "OUTBOX_TABLE",
            "hash": "strategy_id",
            "range": "state_version",
            "gsis": {},
        },
    }
    for name, table in table_definitions().items():
        keys = {table["hash"], table["range"]} - {None}
        for index_hash, index_range, _ in table["gsis"].values():
            keys |= {index_hash, index_range} - {None}
        # CloudFormation wants exactly the key attributes defined, no more
        assert set(table["attributes"]) == keys, name
        expected_type = {"open_time": "N", "next_due_ms": "N", "state_version": "N"}
        for attribute, kind in table["attributes"].items():
            assert kind == expected_type.get(attribute, "S"), (name, attribute)
        assert table["billing_mode"] == "PAY_PER_REQUEST", name


def test_tables_keep_backups_encryption_and_survive_stack_deletion(
    template: dict[str, Any],
) -> None:
    for name, table in resources_of_type(template, "AWS::DynamoDB::Table").items():
        props = table["Properties"]
        assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
        assert props["SSESpecification"]["SSEEnabled"] is True
        assert table["DeletionPolicy"] == "Retain", name
        assert table["UpdateReplacePolicy"] == "Retain", name


def test_the_pynamodb_models_declare_the_same_tables() -> None:
    from engine.adapters.dynamodb import admin  # the project's own: a broken import must fail

    ours = cloudformation_table_definitions()
    theirs = {
        definition["TableNameEnv"]: {
            key: value
            for key, value in definition.items()
            if key not in ("TableNameEnv", "DefaultTableName")
        }
        for definition in admin.table_definitions().values()
    }
    assert theirs == ours


# --- functions, layer, configuration ------------------------------------------------------


def test_functions_run_their_folder_app_on_the_engine_layer(template: dict[str, Any]) -> None:
    functions = _functions(template)
    assert set(functions) == set(FUNCTIONS)
    globals_ = template["Globals"]["Function"]
    assert globals_["Layers"] == [{"Ref": "EngineLayer"}]
    assert globals_["Tracing"] == "Active"
    assert globals_["Architectures"] == ["x86_64"]
    runtime = globals_["Runtime"]
    for name, folder in FUNCTIONS.items():
        props = functions[name]["Properties"]
        assert props["CodeUri"] == f"functions/{folder}/"
        assert props["Handler"] == "app.lambda_handler"
        assert "Runtime" not in props and "Layers" not in props, name
        assert (ROOT / "functions" / folder).is_dir()
    layer = template["Resources"]["EngineLayer"]
    assert layer["Properties"]["ContentUri"] == "layers/engine"
    assert layer["Properties"]["CompatibleRuntimes"] == [runtime]
    assert layer["Metadata"]["BuildMethod"] == "makefile"
    makefile = (ROOT / "layers" / "engine" / "Makefile").read_text(encoding="utf-8")
    assert "build-EngineLayer:" in makefile
    # the layer is installed for the functions' Python
    version = runtime.removeprefix("python")
    assert f"--python-version {version}" in makefile
    assert f"PYTHON ?= python{version}" in makefile


def test_functions_get_their_configuration_from_the_environment(template: dict[str, Any]) -> None:
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    assert {
        "STRATEGIES_TABLE": {"Ref": "StrategiesTable"},
        "POSITIONS_TABLE": {"Ref": "PositionsTable"},
        "ORDERS_TABLE": {"Ref": "OrdersTable"},
        "COOLDOWNS_TABLE": {"Ref": "CooldownsTable"},
        "CANDLES_TABLE": {"Ref": "CandlesTable"},
        "MARKET_DATA_PROVIDER": {"Ref": "MarketDataProvider"},
        "CCXT_EXCHANGE": {"Ref": "CcxtExchange"},
        "STALE_DATA_POLICY": {"Ref": "StaleDataPolicy"},
        "FANOUT_QUEUE_URL": {"Ref": "FanoutQueue"},
        "BULK_CHUNK_SIZE": {"Ref": "BulkChunkSize"},
        "LOG_LEVEL": {"Ref": "LogLevel"},
    }.items() <= env.items()
    assert env["POWERTOOLS_SERVICE_NAME"]
    assert env["POWERTOOLS_METRICS_NAMESPACE"]
    params = template["Parameters"]
    assert params["MarketDataProvider"]["Default"] == "dynamodb"
    assert params["MarketDataProvider"]["AllowedValues"] == ["dynamodb", "ccxt", "file"]
    assert params["CcxtExchange"]["Default"] == "binance"
    assert params["StaleDataPolicy"]["Default"] == "reject"
    assert params["StaleDataPolicy"]["AllowedValues"] == ["reject", "warn"]
    assert params["BulkChunkSize"]["Default"] == 200


def test_outputs_give_the_api_url_and_table_names(template: dict[str, Any]) -> None:
    outputs = template["Outputs"]
    assert BASE_PATH in outputs["ApiUrl"]["Value"]["Fn::Sub"]
    for table in TABLES:
        assert outputs[f"{table}Name"]["Value"] == {"Ref": table}


def _requirement_lines(text: str) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [line for line in lines if line]


def test_the_layer_requirements_are_the_runtime_pins_of_pyproject() -> None:
    with (ROOT / "pyproject.toml").open("rb") as handle:
        pins = tomllib.load(handle)["project"]["dependencies"]
    layer = (ROOT / "layers" / "engine" / "requirements.txt").read_text(encoding="utf-8")
    assert _requirement_lines(layer) == pins
    for folder in FUNCTIONS.values():
        own = ROOT / "functions" / folder / "requirements.txt"
        assert not _requirement_lines(own.read_text(encoding="utf-8")), own


def test_samconfig() -> None:
    with (ROOT / "samconfig.toml").open("rb") as handle:
        config = tomllib.load(handle)
    assert config["version"] == 0.1
    default = config["default"]
    assert default["build"]["parameters"]["cached"] is True
    assert default["build"]["parameters"]["parallel"] is True
    deploy = default["deploy"]["parameters"]
    assert deploy["stack_name"]
    assert deploy["capabilities"] == "CAPABILITY_IAM"
    assert deploy["confirm_changeset"] is True
    assert deploy["resolve_s3"] is True
    assert default["validate"]["parameters"]["lint"] is True


def test_cfn_lint_passes() -> None:
    cfn_lint = Path(sys.executable).with_name("cfn-lint")
    command = [str(cfn_lint)] if cfn_lint.exists() else [sys.executable, "-m", "cfnlint"]
    result = subprocess.run(
        [*command, str(TEMPLATE)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_literal_environment_is_what_the_template_sets_without_cloudformation() -> None:
    # bench/bulk.py measures cold starts with these, as Lambda would run the functions
    from engine.entrypoints.local.template import literal_environment

    env = literal_environment()
    assert env["POWERTOOLS_SERVICE_NAME"] == "execution-engine"
    assert env["PYDANTIC_DISABLE_PLUGINS"] == "__all__"
    assert env["OPENBLAS_NUM_THREADS"] == "1"
    assert "STRATEGIES_TABLE" not in env  # a !Ref: only CloudFormation knows its value
    assert all(isinstance(value, str) for value in env.values())


def test_api_access_logs_are_json_lines_in_a_retained_log_group_when_on(
    template: dict[str, Any], resources: dict[str, dict[str, Any]]
) -> None:
    import json

    parameter = template["Parameters"]["ApiAccessLogs"]
    assert parameter["Default"] == "off"  # "on" needs the account's CloudWatch role first
    assert template["Conditions"]["AccessLogsOn"] == {
        "Fn::Equals": [{"Ref": "ApiAccessLogs"}, "on"]
    }
    setting = resources["ExecutionApi"]["Properties"]["AccessLogSetting"]["Fn::If"]
    assert setting[0] == "AccessLogsOn" and setting[2] == {"Ref": "AWS::NoValue"}
    assert setting[1]["DestinationArn"] == {"Fn::GetAtt": ["ApiAccessLogGroup", "Arn"]}
    # every $context variable is quoted, so each line parses as JSON whatever it holds
    line = re.sub(r"\$context\.[A-Za-z.]+", "x", setting[1]["Format"])
    fields = json.loads(line)
    assert {"requestId", "caller", "sourceIp", "httpMethod", "resourcePath", "status"} <= set(
        fields
    )
    group = resources["ApiAccessLogGroup"]
    assert group["Condition"] == "AccessLogsOn"
    assert group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}


# --- hardening (issue 10) -----------------------------------------------------------------


def test_every_queue_refuses_requests_without_tls(template: dict[str, Any]) -> None:
    queues = set(resources_of_type(template, "AWS::SQS::Queue"))
    covered = set()
    for policy in resources_of_type(template, "AWS::SQS::QueuePolicy").values():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            if statement.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") == "false":
                assert statement["Effect"] == "Deny" and statement["Principal"] == "*"
                assert statement["Action"] == "sqs:*"
                covered |= {_getatt(r)[0] for r in _as_list(statement["Resource"])}  # type: ignore[index]
    assert covered == queues


def test_functions_have_reserved_concurrency_the_throttle_alarms_refer_to(
    template: dict[str, Any],
) -> None:
    for name, function in _functions(template).items():
        reserved = function["Properties"]["ReservedConcurrentExecutions"]
        _condition, value, otherwise = reserved["Fn::If"]
        assert otherwise == {"Ref": "AWS::NoValue"}, name
        assert template["Parameters"][value["Ref"]]["Default"] > 0, name
    bulk = template["Parameters"]["BulkReservedConcurrency"]["Default"]
    fanout = template["Resources"]["EvaluateBulkFanoutEventSource"]["Properties"]
    assert bulk > fanout["ScalingConfig"]["MaximumConcurrency"]  # room for the schedule and HTTP


def test_tables_are_protected_from_deletion(template: dict[str, Any]) -> None:
    for name in TABLES:
        assert template["Resources"][name]["Properties"]["DeletionProtectionEnabled"] is True


def test_history_expires_only_when_configured(template: dict[str, Any]) -> None:
    for name in ("PositionsTable", "OrdersTable"):
        ttl = template["Resources"][name]["Properties"]["TimeToLiveSpecification"]
        assert ttl == {"AttributeName": "expires_at", "Enabled": True}
    assert template["Parameters"]["HistoryRetentionDays"]["Default"] == 0  # kept unless asked
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    assert variables["HISTORY_TTL_DAYS"] == {"Ref": "HistoryRetentionDays"}


def test_bodies_are_validated_by_api_gateway_and_refusals_keep_the_error_shape(
    template: dict[str, Any],
) -> None:
    api = template["Resources"]["ExecutionApi"]["Properties"]
    models = api["Models"]
    for function, model in (
        ("EvaluateByObjectFunction", "EvaluateDraftRequest"),
        ("EvaluateBulkFunction", "BulkRequest"),
    ):
        (event,) = _events(_functions(template)[function], "Api").values()
        request = event["Properties"]["RequestModel"]
        assert request == {"Model": model, "Required": True, "ValidateBody": True}
        assert models[model]["additionalProperties"] is False
    for response in api["GatewayResponses"].values():
        shape = response["ResponseTemplates"]["application/json"]
        assert '"code":' in shape and '"message":' in shape and '"details": []' in shape


def test_write_actions_are_only_those_a_transaction_sends(template: dict[str, Any]) -> None:
    for name in ("EvaluateByIdFunction", "EvaluateBulkFunction"):
        writes: dict[str, set[str]] = {}
        for statement in _statements(_functions(template)[name]["Properties"]["Policies"]):
            for action in set(_as_list(statement["Action"])) & DYNAMODB_WRITE:
                for resource in _as_list(statement["Resource"]):
                    writes.setdefault(action, set()).add(_table_of(resource)[0])
        # positions, orders and cooldowns are put; the strategy's version is updated
        assert writes == {
            "dynamodb:PutItem": {"PositionsTable", "OrdersTable", "CooldownsTable", "OutboxTable"},
            "dynamodb:UpdateItem": {"StrategiesTable"},
        }, name


# --- order events (issue 13) ----------------------------------------------------------------


def _grants(function: dict[str, Any]) -> dict[str, set[Any]]:
    """action -> the resources (as written) the function's own statements grant it on."""
    out: dict[str, set[Any]] = {}
    for statement in _statements(function["Properties"].get("Policies", [])):
        assert statement["Effect"] == "Allow"
        for action in _as_list(statement["Action"]):
            for resource in _as_list(statement["Resource"]):
                out.setdefault(action, set()).add(
                    _getatt(resource) or repr(resource)  # type: ignore[arg-type]
                )
    return out


def test_only_a_commit_writes_events_and_evaluations_never_put_them_on_the_bus(
    template: dict[str, Any],
) -> None:
    functions = _functions(template)
    for name in ("EvaluateByIdFunction", "EvaluateBulkFunction", "EvaluateByObjectFunction"):
        assert not any(a.startswith("events:") for a in _grants(functions[name])), name
    outbox = template["Resources"]["OutboxTable"]["Properties"]
    assert outbox["StreamSpecification"] == {"StreamViewType": "NEW_IMAGE"}
    assert outbox["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}


def test_the_publisher_reads_only_the_outbox_stream_and_puts_only_on_the_bus(
    template: dict[str, Any], resources: dict[str, dict[str, Any]]
) -> None:
    grants = _grants(_functions(template)["PublishEventsFunction"])
    stream = {("OutboxTable", "StreamArn")}
    assert grants == {
        "dynamodb:DescribeStream": stream,
        "dynamodb:GetRecords": stream,
        "dynamodb:GetShardIterator": stream,
        "dynamodb:ListStreams": stream,
        "events:PutEvents": {("EventBus", "Arn")},
        "sqs:SendMessage": {("PublishDeadLetterQueue", "Arn")},
    }
    source = resources["PublishEventsStreamSource"]["Properties"]
    assert _getatt(source["EventSourceArn"]) == ("OutboxTable", "StreamArn")
    assert source["FunctionName"] == {"Ref": "PublishEventsFunction"}
    assert source["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert source["ParallelizationFactor"] == 1  # one strategy's records in order
    # parked before the stream's 24 hours run out, never dropped silently
    assert source["MaximumRecordAgeInSeconds"] < 86_400
    on_failure = source["DestinationConfig"]["OnFailure"]["Destination"]
    assert _getatt(on_failure) == ("PublishDeadLetterQueue", "Arn")
    env = _functions(template)["PublishEventsFunction"]["Properties"]["Environment"]
    assert env["Variables"]["EVENT_BUS_NAME"] == {"Ref": "EventBus"}


def test_the_webhook_is_signed_with_a_secret_from_ssm_retried_then_dead_lettered(
    template: dict[str, Any], resources: dict[str, dict[str, Any]]
) -> None:
    from engine.adapters.events.webhook import RetrySchedule

    function = _functions(template)["DeliverWebhookFunction"]
    props = function["Properties"]
    assert function["Condition"] == "WebhookOn"
    grants = _grants(function)
    secret = repr(
        {
            "Fn::Sub": "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:"
            "parameter${WebhookSecretParameter}"
        }
    )
    assert grants == {
        "ssm:GetParameter": {secret},
        "sqs:ReceiveMessage": {("WebhookQueue", "Arn")},
        "sqs:DeleteMessage": {("WebhookQueue", "Arn")},
        "sqs:GetQueueAttributes": {("WebhookQueue", "Arn")},
        "sqs:ChangeMessageVisibility": {("WebhookQueue", "Arn")},
        "sqs:SendMessage": {("WebhookDeadLetterQueue", "Arn")},
    }
    variables = props["Environment"]["Variables"]
    # the template names the parameter, never holds the secret
    assert variables["WEBHOOK_SECRET_PARAMETER"] == {"Ref": "WebhookSecretParameter"}
    assert not any("SECRET" in k and k != "WEBHOOK_SECRET_PARAMETER" for k in variables)
    assert template["Parameters"]["WebhookSecretParameter"]["Default"].startswith("/")
    assert template["Parameters"]["WebhookUrl"]["Default"] == ""
    queue = resources["WebhookQueue"]["Properties"]
    attempts = queue["RedrivePolicy"]["maxReceiveCount"]
    assert attempts == int(variables["WEBHOOK_ATTEMPTS"]) == RetrySchedule().attempts
    assert _getatt(queue["RedrivePolicy"]["deadLetterTargetArn"]) == (
        "WebhookDeadLetterQueue",
        "Arn",
    )
    assert queue["VisibilityTimeout"] >= 6 * props["Timeout"]
    rule = resources["WebhookRule"]["Properties"]
    assert rule["EventBusName"] == {"Ref": "EventBus"}
    (target,) = rule["Targets"]
    assert _getatt(target["Arn"]) == ("WebhookQueue", "Arn")
    assert _getatt(target["DeadLetterConfig"]["Arn"]) == ("WebhookDeadLetterQueue", "Arn")
    source = resources["DeliverWebhookEventSource"]["Properties"]
    assert _getatt(source["EventSourceArn"]) == ("WebhookQueue", "Arn")
    assert source["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


def test_telegram_is_off_by_default_and_hears_only_fills_and_cooldown_trips(
    template: dict[str, Any],
) -> None:
    assert template["Parameters"]["TelegramNotifications"]["Default"] == "off"
    function = _functions(template)["NotifyTelegramFunction"]
    assert function["Condition"] == "TelegramOn"
    (rule,) = _events(function, "EventBridgeRule").values()
    assert rule["Properties"]["EventBusName"] == {"Ref": "EventBus"}
    assert rule["Properties"]["Pattern"]["detail-type"] == ["order.filled", "cooldown.tripped"]
    (secret,) = _grants(function)["ssm:GetParameter"]
    assert "TelegramBotTokenParameter" in secret
    assert set(_grants(function)) == {"ssm:GetParameter"}
