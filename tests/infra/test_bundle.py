"""The Lambda asset: built without Docker for arm64 with the runtime dependencies, nothing local-only and
nothing unused, the runtime's boto3 and botocore rather than any of its own; and each handler imports and
handles an event from it in an interpreter that has only what the Lambda runtime provides."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer
from packaging.requirements import Requirement
from packaging.version import Version
from runplane import definitions as defs
from runplane.local.gateway import proxy_event
from runplane.local.provision import provision

from infra.bundle import Dist, Platform, build, canonical, check_sdk, host_platform, select

pytestmark = pytest.mark.infra

# What the Lambda python3.14 runtime provides beside the function's code: boto3 and botocore (a pair AWS
# ships together) with their dependencies s3transfer, jmespath, python-dateutil, six and urllib3. AWS does
# not publish the version (it depends on the runtime version and the Region, and changes when the runtime
# is updated). Assumed: the 1.40 line, current when the python3.14 runtime came out (November 2025) and
# older than the SDK the project develops against, so a handler that needs a newer SDK fails here.
RUNTIME_SDK = ("boto3==1.40.76", "botocore==1.40.76")
SDK_ONLY = {"boto3", "botocore", "s3transfer", "python-dateutil", "six"}  # nothing else needs these
HANDLERS = ("api", "worker", "callbacks", "intake", "dead_letters", "sweeper")

# Runs in `python -I -S -B`: no environment variables, user or site packages, and no bytecode written (as
# /var/task is read-only); sys.path is the asset first, then the runtime's packages (in Lambda: /var/task,
# then the runtime's), then the standard library.
CHILD = r"""
import importlib, json, sys, sysconfig
args = json.loads(sys.argv[1])
sys.path[:0] = [args["asset"], args["runtime"]]


class Context:  # what Lambda passes (the attributes Powertools reads)
    function_name = "runplane-test"
    function_version = "$LATEST"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:runplane-test"
    aws_request_id = "c6af9ac6-7b61-11e6-9a41-93e812345678"

    def get_remaining_time_in_millis(self):
        return 60_000


if args["handler"] == "traced run":
    from runplane.observability import run_span
    with run_span("run-1", "runnable-1", "python", traced=True) as subsegment_id:
        result = subsegment_id
else:
    handler = importlib.import_module("runplane.handlers." + args["handler"]).lambda_handler
    result = handler(args["event"], Context())
allowed = (args["asset"], args["runtime"], sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"])
files = {name: getattr(module, "__file__", None) for name, module in list(sys.modules.items())}
print("RESULT " + json.dumps({
    "result": result,
    "isolated": bool(sys.flags.isolated and sys.flags.no_site),
    "outside": sorted(f for f in files.values() if f and not f.startswith(allowed)),
    "sdk": {name: files[name] for name in ("boto3", "botocore", "aws_xray_sdk") if name in files},
}))
"""


@pytest.fixture(scope="module")
def asset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    target = tmp_path_factory.mktemp("arm64") / "lambda"
    return target, build(target)


@pytest.fixture(scope="module")
def host_asset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same asset for this machine's architecture and Python, so that it can be imported here."""
    if sys.platform != "linux":
        pytest.skip("the asset's wheels are Linux wheels")
    target = tmp_path_factory.mktemp("host") / "lambda"
    build(target, host_platform())
    return target


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the Lambda runtime provides beside the function's code, installed (and compiled) by pip."""
    target = tmp_path_factory.mktemp("runtime")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--only-binary=:all:", "--target", str(target), *RUNTIME_SDK],
        check=True,
    )  # fmt: skip
    return target


@pytest.fixture(scope="module")
def aws() -> Any:
    """A moto server with every resource provisioned; the environment that points the handlers at it."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    credentials = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )

    class AtEndpoint:
        def client(self, service: str) -> Any:
            return session.client(service, endpoint_url=endpoint)

    created = provision(AtEndpoint(), "bundle")
    yield (
        AtEndpoint(),
        {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
            **credentials,
            **created,
        },
    )
    server.stop()


def distributions(path: Path) -> dict[str, metadata.Distribution]:
    return {canonical(d.metadata["Name"]): d for d in metadata.distributions(path=[str(path)])}


def run_in_lambda_interpreter(
    asset: Path, runtime: Path, handler: str, event: Any, env: dict[str, str]
) -> Any:
    args = json.dumps({"asset": str(asset), "runtime": str(runtime), "handler": handler, "event": event})
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-B", "-c", CHILD, args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    [line] = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    reply = json.loads(line.removeprefix("RESULT "))
    assert reply["isolated"]
    assert reply["outside"] == []  # nothing imported from anywhere but the asset, the runtime, the stdlib
    return reply


def sqs_event(body: str) -> dict[str, Any]:
    return {
        "Records": [
            {
                "messageId": "059f36b4-87a3-44ab-83d2-661975830a7d",
                "receiptHandle": "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a",
                "body": body,
                "attributes": {
                    "ApproximateReceiveCount": "1",
                    "SentTimestamp": "1545082649183",
                    "SenderId": "AIDAIENQZJOLO23YVJ4VO",
                    "ApproximateFirstReceiveTimestamp": "1545082649185",
                },
                "messageAttributes": {},
                "md5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:queue",
                "awsRegion": "us-east-1",
            }
        ]
    }


def test_the_asset_holds_the_handlers_and_arm64_wheels_but_not_local_mode(
    asset: tuple[Path, dict[str, int]],
) -> None:
    target, measured = asset
    assert (target / "runplane" / "handlers" / "worker.py").is_file()
    assert not (target / "runplane" / "local").exists()
    assert not [
        name for name in ("cli.py", "cli_runs.py", "cli_output.py") if (target / "runplane" / name).exists()
    ]
    assert not list(target.rglob("__pycache__"))
    [core] = list((target / "pydantic_core").glob("_pydantic_core.*.so"))
    assert "aarch64" in core.name
    assert core.read_bytes()[18] == 0xB7  # ELF e_machine EM_AARCH64
    for package in ("aws_lambda_powertools", "pydantic", "jsonschema", "requests", "requests_hardened"):
        assert (target / package).is_dir(), package
    # traced runs import the X-Ray SDK when they execute: it is bundled, its botocore is the runtime's
    assert (target / "aws_xray_sdk").is_dir()
    assert (target / "wrapt").is_dir()
    assert measured["zipped_bytes"] < 50 * 1024 * 1024  # Lambda's limit for a direct zip upload


def test_the_asset_has_the_runtimes_sdk_and_never_a_botocore_of_its_own(
    asset: tuple[Path, dict[str, int]],
) -> None:
    target, measured = asset
    bundled = distributions(target)
    assert not SDK_ONLY & bundled.keys()
    for module in ("boto3", "botocore", "s3transfer", "dateutil", "six.py"):
        assert not (target / module).exists(), module
    # shared with the SDK: bundled for their other users (Powertools, requests)
    assert {"jmespath", "urllib3"} <= bundled.keys()
    check_sdk(target)  # what build() refuses: a botocore that is not one its boto3 accepts
    assert measured["unzipped_bytes"] < 20_000_000  # a bundled botocore alone is 23 MB


def test_a_botocore_its_boto3_does_not_accept_is_refused(tmp_path: Path) -> None:
    def install(name: str, version: str, *requires: str) -> None:
        info = tmp_path / f"{name}.dist-info"
        info.mkdir(exist_ok=True)
        lines = [f"Name: {name}", f"Version: {version}", *(f"Requires-Dist: {r}" for r in requires)]
        (info / "METADATA").write_text("Metadata-Version: 2.1\n" + "\n".join(lines) + "\n")

    install("botocore", "1.44.8")
    with pytest.raises(RuntimeError, match="no boto3"):
        check_sdk(tmp_path)
    install("boto3", "1.40.76", "botocore (<1.41.0,>=1.40.76)", "botocore[crt] (>=1.21.0) ; extra == 'crt'")
    with pytest.raises(RuntimeError, match=r"botocore 1\.44\.8 but boto3 1\.40\.76 requires"):
        check_sdk(tmp_path)
    install("boto3", "1.44.8", "botocore (<1.45.0,>=1.44.8)")
    check_sdk(tmp_path)  # a matched pair


def test_the_selection_leaves_out_the_sdk_what_only_it_needs_and_what_markers_exclude() -> None:
    def dist(name: str, *requires: str) -> Dist:
        return Dist(name, "1.0", tuple(Requirement(r) for r in requires))

    resolved = {
        d.name: d
        for d in (
            dist("app", "aws-xray-sdk", "jmespath"),
            dist("aws-xray-sdk", "wrapt", "botocore>=1.11.3"),
            dist("botocore", "jmespath", "python-dateutil", "urllib3"),
            dist("python-dateutil", "six"),
            dist("jmespath"),
            dist("six"),
            dist("urllib3"),
            dist("wrapt", "pytest; extra == 'dev'"),
            dist("pytest"),
            dist("typing-extensions"),
            dist("referencing", "typing-extensions; python_version < '3.13'"),
        )
    }
    roots = [Requirement("app"), Requirement("referencing"), Requirement("boto3>=1.34")]
    chosen = select(resolved, roots, Platform("manylinux2014_aarch64", "3.14"))
    assert [d.name for d in chosen] == ["app", "aws-xray-sdk", "jmespath", "referencing", "wrapt"]
    older = select(resolved, roots, Platform("manylinux2014_aarch64", "3.12"))
    assert "typing-extensions" in [d.name for d in older]


def test_the_asset_carries_nothing_that_is_never_read(asset: tuple[Path, dict[str, int]]) -> None:
    target, _ = asset
    files = [p.relative_to(target) for p in target.rglob("*") if p.is_file()]
    assert not [f for f in files if f.suffix in (".pyi", ".c") or f.name == "py.typed"]
    assert not [f for f in files if f.parts[0].endswith(".dist-info") and f.name in ("RECORD", "INSTALLER")]
    assert not [f for f in files if {"tests", "benchmarks"} & set(f.parts) or f.parts[0].endswith("-stubs")]
    assert not (target / "bin").exists()
    # nothing left refers to what was removed
    removed = re.compile(r"^\s*(from|import)\s+[\w.]*\b(tests|benchmarks)\b", re.MULTILINE)
    for path in target.rglob("*.py"):
        assert not removed.search(path.read_text(errors="replace")), path
    # the metadata read at run time stays: jsonschema and attrs read their own version from it
    bundled = distributions(target)
    assert all(bundled[name].version for name in ("jsonschema", "attrs", "pydantic"))


def test_the_bundled_packages_the_sdk_shares_are_versions_the_runtimes_sdk_accepts(
    host_asset: Path, runtime: Path
) -> None:
    bundled, provided = distributions(host_asset), distributions(runtime)
    checked = set()
    for sdk in ("boto3", "botocore"):
        for requirement in map(Requirement, provided[sdk].requires or []):
            name = canonical(requirement.name)
            if name in bundled and (requirement.marker is None or requirement.marker.evaluate()):
                assert Version(bundled[name].version) in requirement.specifier, (sdk, str(requirement))
                checked.add(name)
    assert checked == {"jmespath", "urllib3"}


@pytest.mark.parametrize("handler", HANDLERS)
def test_each_handler_handles_an_event_from_the_asset_with_only_the_lambda_runtime_beside_it(
    host_asset: Path, runtime: Path, aws: tuple[Any, dict[str, str]], handler: str
) -> None:
    session, env = aws
    missing = json.dumps({"account_id": "acct-1", "run_id": "run-1", "delivery_id": "delivery-1"})
    events: dict[str, Any] = {
        "api": proxy_event("GET", "/openapi.json", {"Accept": ["application/json"]}, b"", "203.0.113.9"),
        "worker": sqs_event(missing),  # a run that is not there: looked up, ignored
        "callbacks": sqs_event(missing),
        "dead_letters": sqs_event(missing),
        "intake": sqs_event("not json"),  # parked in the intake DLQ with the reason
        "sweeper": {"version": "0", "source": "aws.events", "detail-type": "Scheduled Event", "detail": {}},
    }
    reply = run_in_lambda_interpreter(host_asset, runtime, handler, events[handler], env)

    result = reply["result"]
    if handler == "api":
        assert result["statusCode"] == 200
        assert json.loads(result["body"])["openapi"].startswith("3.")
    elif handler == "sweeper":
        assert result == {"actions": {}}
    else:
        assert result == {"batchItemFailures": []}
    if handler != "api":  # these called AWS
        assert "boto3" in reply["sdk"]
    for module in ("boto3", "botocore"):  # Powertools imports botocore at import time
        assert reply["sdk"].get(module, str(runtime)).startswith(str(runtime)), module
    if handler == "intake":
        sqs = session.client("sqs")
        parked = sqs.receive_message(QueueUrl=env[defs.INTAKE_DLQ.env_var], MessageAttributeNames=["All"])
        assert [m["Body"] for m in parked["Messages"]] == ["not json"]


def test_a_traced_run_imports_the_bundled_xray_sdk_over_the_runtimes_botocore(
    host_asset: Path, runtime: Path, aws: tuple[Any, dict[str, str]]
) -> None:
    _, env = aws
    lambda_env = {
        **env,
        "LAMBDA_TASK_ROOT": str(host_asset),
        "_X_AMZN_TRACE_ID": "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
        "AWS_XRAY_DAEMON_ADDRESS": "127.0.0.1:2000",  # UDP, on this machine; nothing needs to listen
    }
    reply = run_in_lambda_interpreter(host_asset, runtime, "traced run", None, lambda_env)
    assert re.fullmatch(r"[0-9a-f]{16}", reply["result"])  # the run's subsegment
    assert reply["sdk"]["aws_xray_sdk"].startswith(str(host_asset))
    assert reply["sdk"]["botocore"].startswith(str(runtime))


def test_the_host_asset_is_the_arm64_asset_for_another_platform(
    asset: tuple[Path, dict[str, int]], host_asset: Path
) -> None:
    arm64, _ = asset
    assert {n: d.version for n, d in distributions(arm64).items()} == {
        n: d.version for n, d in distributions(host_asset).items()
    }
    assert sorted(p.name for p in arm64.iterdir()) == sorted(p.name for p in host_asset.iterdir())
