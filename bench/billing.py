"""What the deployed stack bills by, and the bill of what bench/cost.py recorded.

The deployment is read from the stack itself: infra/ synthesized offline (as tests/infra does, an empty
directory as the functions' asset), so a change to infra/ or cdk.json shows here: the API's type (REST or
HTTP), its access-log format, execution-log level and X-Ray sampling rule, each function's memory, log
format and levels, tracing and environment, the functions an event source mapping invokes, the alarms and
dashboards. If the synth fails, infra/config.py's defaults and runplane.definitions are used, and the
report says so. What AWS itself writes to CloudWatch Logs, which no handler prints (Lambda's platform
lines, API Gateway's access-log line), is built from the documented shapes with realistic ids.

Prices are us-east-1 list prices (on demand, the first tier), as read on PRICES_READ; a GB is 2^30 bytes.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from async_agents import per_million
from resources import GB, S3_FREE, S3_GET, S3_PUT, S3_WRITES
from runplane import definitions as defs

if TYPE_CHECKING:
    from cost import Made

ROOT = Path(__file__).resolve().parents[1]
STACK = "runplane-dev"
TRACE_ROOT = "1-674c5a10-0123456789abcdef01234567"
TRACE_HEADER = f"Root={TRACE_ROOT};Parent=1a2b3c4d5e6f7a8b;Sampled=0;Lineage=1:2b3c4d5e:0"
LAMBDA_TRACE_RATE = 0.05  # Lambda's own sampling (and X-Ray's default rule) past 1 a second
LEVELS = {"TRACE": "DEBUG", "DEBUG": "DEBUG", "INFO": "INFO", "WARN": "WARNING", "ERROR": "ERROR"}
LEVELS |= {"FATAL": "CRITICAL", "WARNING": "WARNING", "CRITICAL": "CRITICAL"}


@dataclass(frozen=True)
class Function:
    name: str
    memory_mb: int
    log_format: str = "JSON"  # or "Text"
    app_level: str = "INFO"  # what the Powertools logger lets through (ALC first, then POWERTOOLS_LOG_LEVEL)
    system_level: str = "INFO"  # Lambda's platform lines (JSON format only)
    tracing: bool = True  # active tracing
    function_name: str = ""  # as CloudFormation names it: it is in every log line
    environment: dict[str, str] = field(default_factory=dict)  # the plain values (not the resources' names)


@dataclass(frozen=True)
class Deployment:
    source: str
    api_type: str  # "REST" or "HTTP"
    api_tracing: bool
    api_trace_rate: float  # of the API's requests past the reservoir: its stage's sampling rule, else 5 %
    access_logs: bool
    access_log_format: str | None
    execution_log_level: str  # REST only: "OFF", "ERROR" or "INFO"
    data_trace: bool
    functions: dict[str, Function]
    event_source_queues: tuple[str, ...]  # the functions an event source mapping invokes
    alarms: int
    dashboards: int


def read() -> Deployment:
    try:
        return _from_template(_synth())
    except Exception as problem:  # a half-edited infra/, no node: the code's own defaults
        return _from_config(
            f"infra/config.py defaults (the synth failed: {type(problem).__name__}: {problem})"
        )


def _infra() -> None:
    """infra/ importable, and jsii quiet about this machine's node version."""
    import sys

    os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")
    os.environ.setdefault("JSII_SILENCE_WARNING_UNTESTED_NODE_VERSION", "1")
    os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", ",".join(map(str, range(12, 40))))
    sys.path.insert(0, str(ROOT))


def _synth() -> dict[str, Any]:
    _infra()
    import aws_cdk as cdk
    from aws_cdk import aws_lambda as lambda_

    from infra.stack import RunplaneStack

    context = json.loads((ROOT / "cdk.json").read_text())["context"]
    with tempfile.TemporaryDirectory() as out, tempfile.TemporaryDirectory() as asset:
        app = cdk.App(context=context, outdir=out)
        RunplaneStack(app, STACK, code=lambda_.Code.from_asset(asset))
        return app.synth().get_stack_by_name(STACK).template


def _from_template(template: dict[str, Any]) -> Deployment:
    resources = template["Resources"]

    def of(kind: str) -> dict[str, dict[str, Any]]:
        return {k: v.get("Properties", {}) for k, v in resources.items() if v["Type"] == kind}

    by_handler = {f.handler: f.name for f in defs.FUNCTIONS}
    functions, ids = {}, {}
    for logical, props in of("AWS::Lambda::Function").items():
        name = by_handler.get(props.get("Handler", ""))
        if name is None:
            continue
        ids[logical] = name
        logging = props.get("LoggingConfig", {})
        variables = props.get("Environment", {}).get("Variables", {})
        plain = {k: v for k, v in variables.items() if isinstance(v, str)}
        log_format = logging.get("LogFormat", "Text")
        alc = logging.get("ApplicationLogLevel") if log_format == "JSON" else None
        functions[name] = Function(
            name=name,
            memory_mb=int(props.get("MemorySize", 128)),
            log_format=log_format,
            app_level=LEVELS[(alc or plain.get("POWERTOOLS_LOG_LEVEL") or "INFO").upper()],
            system_level=LEVELS[logging.get("SystemLogLevel", "INFO").upper()],
            tracing=props.get("TracingConfig", {}).get("Mode") == "Active",
            function_name=_physical_name(logical),
            environment=plain,
        )
    mapped = []
    for props in of("AWS::Lambda::EventSourceMapping").values():
        target = props.get("FunctionName", {})
        mapped.append(ids.get(target.get("Ref", "") if isinstance(target, dict) else "", str(target)))
    rest_stages, http_stages = of("AWS::ApiGateway::Stage"), of("AWS::ApiGatewayV2::Stage")
    http = bool(http_stages) and not rest_stages
    stage = next(iter((http_stages if http else rest_stages).values()), {})
    logs = (stage.get("AccessLogSettings") if http else stage.get("AccessLogSetting")) or {}
    method = next(iter(stage.get("MethodSettings", [])), {})
    rules = [p.get("SamplingRule", {}) for p in of("AWS::XRay::SamplingRule").values()]
    rules = sorted(
        (r for r in rules if r.get("ServiceType") in ("AWS::ApiGateway::Stage", "*")), key=_priority
    )
    traced_stage = not http and bool(stage.get("TracingEnabled"))  # else the api function samples itself
    return Deployment(
        source="the synthesized stack (infra/, cdk.json)",
        api_type="HTTP" if http else "REST",
        api_tracing=traced_stage or functions["api"].tracing,
        api_trace_rate=float(rules[0].get("FixedRate", LAMBDA_TRACE_RATE))
        if traced_stage and rules
        else LAMBDA_TRACE_RATE,
        access_logs=bool(logs.get("Format")),
        access_log_format=logs.get("Format"),
        execution_log_level="OFF" if http else method.get("LoggingLevel", "OFF"),
        data_trace=bool(method.get("DataTraceEnabled")),
        functions=functions,
        event_source_queues=tuple(sorted(mapped)),
        alarms=len(of("AWS::CloudWatch::Alarm")),
        dashboards=len(of("AWS::CloudWatch::Dashboard")),
    )


def _from_config(source: str) -> Deployment:
    _infra()
    from infra.config import DEFAULTS

    context = {**DEFAULTS, **json.loads((ROOT / "cdk.json").read_text())["context"]}
    api_type = str(context.get("api") or context.get("api_type") or "rest").upper()  # the switch, if any
    functions = {
        f.name: Function(f.name, f.memory_mb, function_name=_physical_name(f.name)) for f in defs.FUNCTIONS
    }
    return Deployment(
        source=source,
        api_type=api_type,
        api_tracing=True,
        api_trace_rate=LAMBDA_TRACE_RATE,
        access_logs=True,
        access_log_format=None,
        execution_log_level="ERROR" if api_type == "REST" else "OFF",
        data_trace=False,
        functions=functions,
        event_source_queues=tuple(sorted(f.name for f in defs.FUNCTIONS if f.queue)),
        alarms=0,
        dashboards=0,
    )


def _priority(rule: dict[str, Any]) -> int:
    return int(rule.get("Priority", 10_000))


def _physical_name(logical: str) -> str:
    """A function's name as CloudFormation makes it: stack, logical id, a 12-character suffix."""
    return f"{STACK}-{logical}-{uuid.uuid4().hex[:12].upper()}"[:64]


# --- what AWS writes to the logs itself ---


def platform_lines(function: Function, billed_ms: int = 124) -> list[str]:
    """The lines Lambda writes for one warm invocation, at the function's log format and system level."""
    request = str(uuid.uuid4())
    if function.log_format != "JSON":
        xray = (
            f"\nXRAY TraceId: {TRACE_ROOT}\tSegmentId: 1a2b3c4d5e6f7a8b\tSampled: false"
            if function.tracing
            else ""
        )
        return [
            f"START RequestId: {request} Version: $LATEST",
            f"END RequestId: {request}",
            f"REPORT RequestId: {request}\tDuration: {billed_ms - 0.53:.2f} ms\tBilled Duration: {billed_ms} ms"
            f"\tMemory Size: {function.memory_mb} MB\tMax Memory Used: 98 MB\t{xray}",
        ]

    def line(kind: str, record: dict[str, Any]) -> str:
        body = {"time": "2026-12-01T12:00:00.123Z", "type": f"platform.{kind}", "record": record}
        return json.dumps(body, separators=(",", ":"))

    tracing = {"spanId": "1a2b3c4d5e6f7a8b", "type": "X-Amzn-Trace-Id", "value": TRACE_HEADER}
    metrics = {"durationMs": billed_ms - 0.531, "billedDurationMs": billed_ms}
    metrics |= {"memorySizeMB": function.memory_mb, "maxMemoryUsedMB": 98}
    start = line("start", {"requestId": request, "version": "$LATEST"})
    done = {
        "requestId": request,
        "status": "success",
        "metrics": {"durationMs": billed_ms - 0.9, "producedBytes": 312},
    }
    report = {"requestId": request, "metrics": metrics, **({"tracing": tracing} if function.tracing else {})}
    report["status"] = "success"
    if function.system_level == "DEBUG":
        return [start, line("runtimeDone", done), line("report", report)]
    return [start, line("report", report)] if function.system_level == "INFO" else []


CONTEXT_VALUES = {  # $context variables of an access-log format, with realistic values
    "requestId": str(uuid.UUID(int=0)),
    "extendedRequestId": "Ab1Cd2Ef3Gh4Ij=",
    "identity.sourceIp": "203.0.113.45",
    "requestTime": "01/Dec/2026:12:00:00 +0000",
    "requestTimeEpoch": "1796126400123",
    "protocol": "HTTP/1.1",
    "resourcePath": "/{proxy+}",
    "routeKey": "ANY /{proxy+}",
    "stage": "dev",
    "domainName": "abcd123456.execute-api.us-east-1.amazonaws.com",
    "identity.userAgent": "python-requests/2.32.3",
    "integrationLatency": "85",
    "responseLatency": "92",
    "integrationStatus": "200",
    "error.message": "-",
}


def access_line(format_: str | None, method: str, path: str, status: int, length: int) -> str:
    """API Gateway's access-log line for one request (a JSON line of the standard fields if no format)."""
    if format_ is None:
        format_ = (
            '{"requestId":"$context.requestId","ip":"$context.identity.sourceIp","requestTime":"$context.'
            'requestTime","httpMethod":"$context.httpMethod","resourcePath":"$context.resourcePath","status":'
            '"$context.status","protocol":"$context.protocol","responseLength":"$context.responseLength"}'
        )
    values = {**CONTEXT_VALUES, "httpMethod": method, "path": path, "status": str(status)}
    values |= {"responseLength": str(length), "requestId": str(uuid.uuid4())}
    return re.sub(r"\$context\.([A-Za-z.]+[A-Za-z])", lambda m: values.get(m.group(1), "x" * 12), format_)


# REST execution logs at INFO: ≈ 20 lines a request (method request, endpoint request, response, usage),
# ≈ 100 bytes each without data tracing; with it, the request and response bodies as well (an estimate).
EXECUTION_LOG_INFO_BYTES = 2000


# --- prices and the bill ---

PRICES_READ = "2026-12-01"
PRICES = {  # name: (USD, per, what)
    "wru": (0.625e-6, "WRU", "DynamoDB on-demand write request unit"),
    "rru": (0.125e-6, "RRU", "DynamoDB on-demand read request unit"),
    "sqs": (0.40e-6, "request", "SQS standard request (each 64 KB chunk)"),
    "lambda_request": (0.20e-6, "request", "Lambda invocation"),
    "lambda_gb_s": (0.0000133334, "GB-second", "Lambda duration, arm64"),
    "logs_gb": (0.50, "GB", "CloudWatch Logs ingestion, standard class"),
    "xray_recorded": (5.00e-6, "trace", "X-Ray trace recorded"),
    "xray_retrieved": (0.50e-6, "trace", "X-Ray trace retrieved or scanned (none here)"),
    "rest": (3.50e-6, "request", "API Gateway REST API request"),
    "http": (1.00e-6, "request", "API Gateway HTTP API request (each 512 KB)"),
    "s3_put": (S3_PUT, "request", "S3 PUT, COPY, POST, LIST"),
    "s3_get": (S3_GET, "request", "S3 GET and other requests (DELETE free)"),
    "metric_month": (0.30, "metric-month", "CloudWatch custom metric (EMF)"),
    "alarm_month": (0.10, "alarm-month", "CloudWatch standard alarm"),
    "dashboard_month": (3.00, "dashboard-month", "CloudWatch dashboard"),
}
PRICE = {name: value for name, (value, _, _) in PRICES.items()}
ITEMS = ("DynamoDB writes", "DynamoDB reads", "SQS", "API Gateway", "Lambda requests", "Lambda duration")
ITEMS += ("Logs", "X-Ray", "S3")
ESM_POLLS_PER_MINUTE = 15  # an idle event source mapping: 5 pollers, each a 20 s long poll
MINUTES_A_MONTH = 30 * 24 * 60


class Biller:
    def __init__(self, deployed: Deployment):
        self.d = deployed

    def log_bytes(self, run: Made) -> dict[str, float]:
        """Bytes CloudWatch Logs ingests: what the functions wrote, and Lambda's and API Gateway's lines."""
        platform = 0
        for name, count in run.invocations.items():
            lines = platform_lines(self.d.functions[name], run.billed_ms[name] // count)
            platform += count * sum(len(line.encode()) for line in lines)
        access = sum(len(access_line(self.d.access_log_format, *call).encode()) for call in run.api_calls)
        execution = 0
        if self.d.execution_log_level == "INFO":
            execution = len(run.api_calls) * EXECUTION_LOG_INFO_BYTES
            execution += sum(call[3] for call in run.api_calls) if self.d.data_trace else 0
        return {
            "functions": sum(run.log_bytes.values()),
            "platform": platform,
            "access": access if self.d.access_logs else 0,
            "execution": execution,
        }

    def traces(self, run: Made) -> float:
        """Traces recorded at volume: one per API request, at the API's rate; one per invocation by a queue
        (a linked trace), at Lambda's 5 %."""
        api = len(run.api_calls) * self.d.api_trace_rate if self.d.api_tracing else 0
        queued = (run.invocations[f] for f in self.d.event_source_queues if self.d.functions[f].tracing)
        return api + LAMBDA_TRACE_RATE * sum(queued)

    def bill(self, run: Made, api_type: str | None = None) -> dict[str, float]:
        """Dollars by line item; API Gateway at `api_type`'s price (default: as deployed)."""
        s3 = sum(
            n * (PRICE["s3_put"] if op in S3_WRITES else PRICE["s3_get"])
            for (_, service, op), n in run.requests.items()
            if service == "s3" and op not in S3_FREE
        )
        gb_s = sum(ms / 1000 * self.d.functions[f].memory_mb / 1024 for f, ms in run.billed_ms.items())
        return {
            "DynamoDB writes": sum(run.wru.values()) * PRICE["wru"],
            "DynamoDB reads": sum(run.rru.values()) * PRICE["rru"],
            "SQS": run.count("sqs") * PRICE["sqs"],
            "API Gateway": len(run.api_calls) * PRICE[(api_type or self.d.api_type).lower()],
            "Lambda requests": sum(run.invocations.values()) * PRICE["lambda_request"],
            "Lambda duration": gb_s * PRICE["lambda_gb_s"],
            "Logs": sum(self.log_bytes(run).values()) / GB * PRICE["logs_gb"],
            "X-Ray": self.traces(run) * PRICE["xray_recorded"],
            "S3": s3,
        }

    def dollars(self, run: Made, api_type: str | None = None) -> float:
        return sum(self.bill(run, api_type).values())

    # --- the report ---

    def print_header(self, settings: object) -> None:
        print(f"prices: us-east-1 list prices, read {PRICES_READ}")
        for value, per, what in PRICES.values():
            small = value < 1e-3
            print(f"  {what:<50} ${value * 1e6 if small else value:>9,.4f} per {'1M ' if small else ''}{per}")
        d = self.d
        print(f"\ndeployment, from {d.source}:")
        print(
            f"  API Gateway {d.api_type}, access log {'on' if d.access_logs else 'off'}, execution log"
            f" {d.execution_log_level}, requests traced {f'{d.api_trace_rate:.0%}' if d.api_tracing else 'never'}"
            f" (past 1 a second); event source mappings invoke {', '.join(d.event_source_queues)}"
        )
        for f in d.functions.values():
            print(
                f"  {f.name:<13} {f.memory_mb:>5} MB arm64, {f.log_format} logs, application {f.app_level},"
                f" system {f.system_level}, tracing {'active' if f.tracing else 'off'}"
            )
        print(
            f"  settings: per-key rate limit {settings.rate_limit_per_second:g}/s, burst"  # type: ignore[attr-defined]
            f" {settings.rate_limit_burst}; account max_concurrency {settings.account_max_concurrency}"  # type: ignore[attr-defined]
        )

    def print_run(self, title: str, runs: list[Made]) -> Made:
        """The scenario's median run (by cost): its requests by component, its logs, its bill."""
        ordered = sorted(runs, key=self.dollars)
        run = ordered[len(ordered) // 2]
        total = self.dollars(run)
        print(f"\n{title}")
        print(
            f"  {len(runs)} runs after a warm-up; the median one: {per_million(total)} per 1M runs (all"
            f" {per_million(self.dollars(ordered[0]))} to {per_million(self.dollars(ordered[-1]))})"
        )
        print(f"  {'function':<16} {'service':<9} {'operation':<24} {'requests':>8} {'WRU':>6} {'RRU':>6}")
        for key in sorted(run.requests):
            wru, rru = run.wru[(key[0], key[2])], run.rru[(key[0], key[2])]
            print(
                f"  {key[0]:<16} {key[1]:<9} {key[2]:<24} {run.requests[key]:>8}"
                f" {format(wru, 'g') if wru else '.':>6} {format(rru, 'g') if rru else '.':>6}"
            )
        failed = f", {sum(run.failed.values())} failed conditions" if run.failed else ""
        print(
            f"  {'all':<51} {sum(run.requests.values()):>8} {sum(run.wru.values()):>6g}"
            f" {sum(run.rru.values()):>6g}   (DynamoDB: {run.count('dynamodb'):g} requests{failed})"
        )
        calls = ", ".join(f"{f} {n} ({run.billed_ms[f]} ms)" for f, n in sorted(run.invocations.items()))
        print(
            f"  Lambda invocations (billed ms, moto's): {calls}; API Gateway requests: {len(run.api_calls)}"
        )
        logs = self.log_bytes(run)
        wrote = ", ".join(
            f"{f} {run.log_bytes[f]:,} B in {run.log_lines[f]} lines, {run.emf_lines[f]} EMF"
            for f in sorted(run.log_lines)
        )
        print(
            f"  logs {sum(logs.values()):,.0f} B: the functions' {logs['functions']:,.0f} ({wrote or 'none'}),"
            f" Lambda's platform lines {logs['platform']:,.0f}, access log {logs['access']:,.0f}"
            + (f", execution log {logs['execution']:,.0f}" if logs["execution"] else "")
            + f"; X-Ray traces recorded: {self.traces(run):.2f}"
        )
        cost = self.bill(run)
        print(f"  {'line item':<16} {'$ per 1M runs':>13} {'share':>6}")
        for item in ITEMS:
            print(f"  {item:<16} {per_million(cost[item]):>13} {cost[item] / total:>6.1%}")
        print(f"  {'total':<16} {per_million(total):>13}")
        return run

    def print_summary(self, rows: dict[str, tuple[Made, list[Made]]]) -> None:
        other = "HTTP" if self.d.api_type == "REST" else "REST"
        print(f"\nsummary: $ per million runs (the median run), API Gateway {self.d.api_type} as deployed")
        print(
            f"  {'scenario':<12} {'$/1M':>8} {'all runs':>17} {'if ' + other:>8}  {'largest item':<23}"
            f" {'DynamoDB':>8} {'WRU':>4} {'RRU':>4} {'API':>3} {'Lambda':>6} {'log B':>6}"
        )
        for name, (run, runs) in rows.items():
            cost, total = self.bill(run), self.dollars(run)
            largest = max(cost, key=cost.__getitem__)
            spread = sorted(self.dollars(r) for r in runs)
            print(
                f"  {name:<12} {per_million(total):>8} {per_million(spread[0]) + ' to ' + per_million(spread[-1]):>17}"
                f" {per_million(self.dollars(run, other)):>8}  {f'{largest} {cost[largest] / total:.0%}':<23}"
                f" {run.count('dynamodb'):>8g} {sum(run.wru.values()):>4g} {sum(run.rru.values()):>4g}"
                f" {len(run.api_calls):>3} {sum(run.invocations.values()):>6} {sum(self.log_bytes(run).values()):>6,.0f}"
            )

    def print_fixed(self, sweep: Made, sweep_minutes: int, metrics: set[tuple[str, str, str]]) -> None:
        """What the deployment costs a month whatever the number of runs."""
        d, queues = self.d, len(self.d.event_source_queues)
        polls = queues * ESM_POLLS_PER_MINUTE * MINUTES_A_MONTH
        sweeps, reservoir = MINUTES_A_MONTH // sweep_minutes, 60 * MINUTES_A_MONTH
        samplers = int(d.api_tracing) + sum(d.functions[f].tracing for f in d.event_source_queues)
        # a sweep is traced: alone in its second, it is always the reservoir's
        once = self.dollars(sweep) - self.bill(sweep)["X-Ray"] + PRICE["xray_recorded"]
        actions = (sweep.answer or {}).get("actions") if isinstance(sweep.answer, dict) else None
        sweeping = (
            f"sweeper every {sweep_minutes} min ({f'actions {actions}' if actions else 'idle'}), {sweeps:,} x"
            f" ({sum(sweep.requests.values())} requests, {sum(sweep.rru.values()):g} RRU,"
            f" {sweep.billed_ms['sweeper']} ms, {sum(self.log_bytes(sweep).values()):,.0f} B of logs, a trace)"
        )
        items = [
            (
                f"event source mappings' empty long polls, {queues} queues x {ESM_POLLS_PER_MINUTE} a minute",
                polls * PRICE["sqs"],
            ),
            (sweeping, sweeps * once),
            (
                f"custom metrics (EMF), the {len(metrics)} seen (name x dimensions)",
                len(metrics) * PRICE["metric_month"],
            ),
            (
                f"alarms ({d.alarms}) and dashboards ({d.dashboards})",
                d.alarms * PRICE["alarm_month"] + d.dashboards * PRICE["dashboard_month"],
            ),
        ]
        width = max(len(what) for what, _ in items)
        print("\nfixed, a month of 30 days, whatever the number of runs")
        for what, cost in items:
            print(f"  {what:<{width}} ${cost:>9,.2f}")
        one = reservoir * PRICE["xray_recorded"]  # X-Ray's reservoir is shared by the services of a rule
        print(
            f"  {'X-Ray reservoir, with traffic every second: 1 trace a second':<{width}} ${one:>9,.2f}\n"
            f"  {f'  (if Lambda keeps one per function: x {samplers}, the API and the queue-invoked)':<{width}}"
            f" ${samplers * one:>9,.2f}"
        )
        total = sum(c for _, c in items)
        print(f"  {'total':<{width}} ${total + one:>9,.2f} to ${total + samplers * one:,.2f}")
