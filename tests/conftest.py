"""Shared fixtures: moto-backed AWS with every resource provisioned from runplane.definitions."""

from __future__ import annotations

try:
    import fcntl
except ImportError:  # Windows: there `alone` tests run beside the others
    fcntl = None  # type: ignore[assignment]
import contextlib
import functools
import itertools
import json
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import botocore.loaders
import botocore.session
import pytest
from moto import mock_aws
from runplane import definitions as defs
from runplane.api.app import create_app, serve
from runplane.domain.errors import Conflict
from runplane.domain.models import RunnableFields
from runplane.local import moto_atomic
from runplane.local.gateway import proxy_event
from runplane.local.lambda_context import LocalLambdaContext
from runplane.local.poller import Poller
from runplane.local.provision import provision
from runplane.logic import keys, services
from runplane.logic.runnables import create_runnable
from runplane.logic.sweep import sweep

from tests.contract import assert_reply, is_dialect

moto_atomic.install()


class _UniquePaths(list):
    """A loader's search paths: boto3 adds its data folder to the loader of every session it makes."""

    def append(self, path: str) -> None:
        if path not in self:
            super().append(path)


@functools.cache
def _shared_loader(search_path_string: str | None = None) -> botocore.loaders.Loader:
    """One botocore data loader per process: each test makes new boto3 sessions and clients (nothing of
    one test's session reaches the next), but the AWS models, endpoints and rulesets they read are parsed
    once instead of once per session (0.1 to 0.5 s a test, most of the `env` fixture's time)."""
    loader = _create_loader(search_path_string)
    loader._search_paths = _UniquePaths(loader.search_paths)
    return loader


_create_loader = botocore.session.create_loader
botocore.session.create_loader = _shared_loader

# A public address that test hostnames resolve to: callback URLs on them pass the SSRF policy. Nothing
# listens there from the test machine, so an attempt to deliver to one fails (fast, see `env`).
PUBLIC_ADDRESS = "93.184.215.14"


@pytest.fixture(autouse=True)
def dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str] | None]:
    """Name resolution under the test's control: add `name -> [addresses]` (None: the lookup fails, as
    for a name that does not exist); other names resolve as usual."""
    names: dict[str, list[str] | None] = {
        "example.com": [PUBLIC_ADDRESS],
        "hooks.example.com": [PUBLIC_ADDRESS],
    }
    resolve = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        if host not in names:
            return resolve(host, port, *args, **kwargs)
        if names[host] is None:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (ip, port, 0, 0))
            if ":" in ip
            else (socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port))
            for ip in names[host]
        ]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return names


# USD per 1M tokens. The `llm` fixture runnable's usage then costs, by hand:
#   gpt-4o: (100 - 5 cached) x 20 + 5 x 10 + 20 x 25 = 2450;  claude: 50 x 6 + 10 x 25 = 550
#   (2450 + 550) / 1M = $0.003 per run
TEST_PRICES = {
    "gpt-4o": {"input": 20, "output": 25, "cached": 10},
    "claude": {"input": 6, "output": 25},
    "amazon.nova-lite-v1:0": {"input": 1, "output": 4, "cached": 0.25},
}
LLM_RUN_COST = 0.003


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """Moto in-process, all resources created, settings and clients pointed at them."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "POWERTOOLS_METRICS_DISABLED": "true",
        "RUNPLANE_RUNNABLE_PACKAGES": "tests.fixtures.runnables",
        "RUNPLANE_CALLBACK_CONNECT_TIMEOUT_SECONDS": "0.2",
        "RUNPLANE_CALLBACK_TIMEOUT_SECONDS": "2",
        "RUNPLANE_RATE_LIMIT_BURST": "0",  # tests of the rate limit turn it on
        "RUNPLANE_MODEL_PRICES": json.dumps(TEST_PRICES),
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        from runplane.adapters import aws

        # fresh clients (a test may register handlers on one), from sessions kept across tests: a new
        # session parses the services' models again, most of a test's set-up
        aws._client.cache_clear()
        created = provision(_provisioning_session(), "test")
        for name, value in created.items():
            monkeypatch.setenv(name, value)
        services.reset()
        keys._cache = keys._PrincipalCache()
        yield created
        aws._client.cache_clear()
    services.reset()


@functools.cache
def _provisioning_session() -> Any:
    return boto3.session.Session()


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


class Api:
    """Calls the api handler with API Gateway proxy events, as the gateway does."""

    def __init__(self, token: str | None):
        self.token = token
        self.app = create_app()

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        raw: str | bytes | None = None,
        token: str | None = "default",
    ) -> Reply:
        sent: dict[str, list[str]] = {"Content-Type": ["application/json"]}
        bearer = self.token if token == "default" else token
        if bearer:
            sent["Authorization"] = [f"Bearer {bearer}"]
        for name, value in (headers or {}).items():
            sent[name] = [value]
        data = raw if raw is not None else (json.dumps(body) if body is not None else b"")
        data = data.encode() if isinstance(data, str) else data
        event = proxy_event(method, path, sent, data, "127.0.0.1")
        response = serve(self.app, event, LocalLambdaContext("api"))
        merged = dict(response.get("headers") or {})
        merged.update({k: v[-1] for k, v in (response.get("multiValueHeaders") or {}).items()})
        reply = Reply(response["statusCode"], merged, response.get("body") or "")
        if is_dialect(path):  # every Roe AI and Cotool answer is checked against its transcribed schema
            assert_reply(method, path, reply.status, reply.text)
        return reply

    def get(self, path: str, **kw: Any) -> Reply:
        return self.call("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Reply:
        return self.call("POST", path, body, **kw)


@pytest.fixture
def account(env: dict[str, str]) -> keys.CreatedKey:
    return keys.create_key("acme", scopes=["admin"])


@pytest.fixture
def api(account: keys.CreatedKey) -> Api:
    return Api(account.token)


def drop_dispatches(env: dict[str, str]) -> None:
    """Drop the dispatch messages waiting: lost, or received by workers the test plays itself."""
    sqs, url = boto3.client("sqs"), env["RUNPLANE_DISPATCH_QUEUE_URL"]
    while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        for message in messages:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


def make_runnable(account_id: str, function: str = "echo", **fields: Any) -> str:
    """A python runnable named after its function (`echo-2`, `echo-3`, … when the account has that name:
    names are unique within an account)."""
    names = (function if n == 1 else f"{function}-{n}" for n in itertools.count(1))
    while True:
        spec = RunnableFields(name=next(names), kind="python", config={"function": function}, **fields)
        with contextlib.suppress(Conflict):
            return create_runnable(account_id, spec).id


@pytest.fixture
def echo_id(account: keys.CreatedKey) -> str:
    return make_runnable(account.account_id, "echo")


def pollers() -> dict[str, Poller]:
    return {f.name: Poller(f, wait_seconds=0) for f in defs.FUNCTIONS if f.queue}


def drain(*names: str, rounds: int = 50) -> None:
    """Deliver queued messages to their handlers until the named queues are empty."""
    chosen = pollers()
    for _ in range(rounds):
        if not sum(chosen[n].poll_once() for n in names or chosen):
            return


@contextmanager
def working(workers: int = 2, *, sweeper: bool = False) -> Iterator[None]:
    """Worker functions polling the dispatch queue side by side, as Lambda's event source mapping does,
    and, with `sweeper`, the sweeper on a compressed schedule (every second)."""
    until = threading.Event()

    def loop() -> None:
        worker = pollers()["worker"]
        while not until.is_set():
            try:
                polled = worker.poll_once()
            except Exception:  # an SQS error from moto under load: poll again, as the ESM does
                polled = 0
            if not polled:
                time.sleep(0.01)

    def sweeping() -> None:
        while not until.wait(1):
            sweep()

    threads = [threading.Thread(target=loop) for _ in range(workers)]
    threads += [threading.Thread(target=sweeping)] if sweeper else []
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        until.set()
        for thread in threads:
            thread.join()


# --- pytest-xdist: `make test` runs `pytest -n auto --dist loadgroup --no-loadscope-reorder` ---

TESTS = Path(__file__).resolve().parent
# What the workers start first: the tests that take minutes and run local stacks, so that none of them is
# the last one left while the other worker idles.
FIRST = ("openapi", "e2e", "infra")
# Tests that run while no other worker runs one (marker `alone`): the local stack's (marker `e2e`). A
# stack, its clients and another worker's test share the cores: beside the latter, a sync run can outlast
# its wait (2 s for the Roe SDK's, 5 s for Schemathesis' cases) and fail its check.
ALONE = "e2e"
SHARED = "runplane_shared"  # the workerinput key of the run's folder: the `alone` locks, the groups
HANDED = "fault_points"  # the workerinput key of the fault matrix's points (tests/faults/conftest.py)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """The controller, for each worker it starts: the run's shared folder, and the fault matrix's points,
    found once here from clean runs, so that every worker collects the same scenarios."""
    config = node.config
    node.workerinput[SHARED] = _shared_folder(config)
    if _collects(config, TESTS / "faults"):
        from tests.faults import flows

        node.workerinput[HANDED] = flows.all_points()  # cached: made once for all workers


def _shared_folder(config: pytest.Config) -> str:
    if not hasattr(config, "_runplane_shared"):
        config._runplane_shared = tempfile.mkdtemp(prefix="runplane-pytest-")
    return config._runplane_shared


def pytest_unconfigure(config: pytest.Config) -> None:
    if hasattr(config, "_runplane_shared"):
        shutil.rmtree(config._runplane_shared, ignore_errors=True)


def _collects(config: pytest.Config, folder: Path) -> bool:
    """Whether the run's arguments may collect tests in `folder`."""
    for arg in config.args:
        path = Path(config.invocation_params.dir, arg.split("::", 1)[0]).resolve()
        if not path.exists() or path.is_relative_to(folder) or folder.is_relative_to(path):
            return True
    return False


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`--dist loadgroup`, with the groups the workers wrote: xdist's own scheduler reads a test's group
    from a suffix of its node id, which pytest 9.2 no longer lets a plugin add."""
    if config.getoption("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    folder = Path(_shared_folder(config))

    class Grouped(LoadScopeScheduling):
        """Each test its own unit of work, but a group's tests one unit, sent to one worker."""

        @functools.cached_property
        def groups(self) -> dict[str, str]:
            written = sorted(folder.glob("groups-*.json"))  # the workers' collections are the same
            return json.loads(written[0].read_text()) if written else {}

        def _split_scope(self, nodeid: str) -> str:
            if nodeid in self.groups:
                return self.groups[nodeid]
            return nodeid.rsplit("@", 1)[-1] if "@" in nodeid else nodeid  # pytest < 9.2: xdist's suffix

    return Grouped(config, log)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On a worker: the slowest kinds of test first (every worker sorts its collection the same way), the
    `alone` marker on the `e2e` tests, and under `--dist loadgroup` one group for the tests that share a
    module's or a folder's fixture (a local stack, the synthesized template) or name one (xdist_group):
    one worker runs them in their order, with one instance of the fixture, as a serial run does."""
    if not hasattr(config, "workerinput"):
        return
    items.sort(key=_rank)  # stable: a module's tests keep their order
    root = TESTS.relative_to(config.rootpath).as_posix()
    groups: dict[str, str] = {}
    for item in items:
        if item.get_closest_marker(ALONE):
            item.add_marker(pytest.mark.alone)
        named = item.get_closest_marker("xdist_group")
        group = (named.args or [named.kwargs.get("name", "default")])[0] if named else _sharing(item, root)
        if group:
            groups[item.nodeid] = str(group)
            if not named:
                item.add_marker(pytest.mark.xdist_group(group))
    if config.getoption("loadgroup", False) and SHARED in config.workerinput:  # set on workers by xdist
        folder = Path(config.workerinput[SHARED])
        written = folder / f"groups-{config.workerinput['workerid']}.json"
        written.with_suffix(".tmp").write_text(json.dumps(groups))
        written.with_suffix(".tmp").replace(written)


def _rank(item: pytest.Item) -> int:
    return next((i for i, marker in enumerate(FIRST) if item.get_closest_marker(marker)), len(FIRST))


def _sharing(item: pytest.Item, root: str) -> str | None:
    """The group of a test that uses a fixture broader than a function defined under tests/ (but not in
    this file: each worker makes those for itself): a conftest's session or package fixture groups its
    folder, a module or class fixture the test's module."""
    info = getattr(item, "_fixtureinfo", None)
    groups: list[str] = []
    for name in getattr(item, "fixturenames", ()):
        fixturedefs = info.name2fixturedefs.get(name) if info else None
        if not fixturedefs:
            continue
        fixture = fixturedefs[-1]
        if fixture.scope == "function" or fixture.baseid in ("", root):
            continue
        if fixture.scope in ("session", "package"):
            groups.append(fixture.baseid)
        else:
            groups.append(item.nodeid.split("::", 1)[0])
    return min(groups, key=len) if groups else None


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[object]:
    """On a worker, around each test (setup to teardown): an `alone` test waits until the other workers'
    tests have ended, and theirs wait until it has."""
    folder = getattr(item.config, "workerinput", {}).get(SHARED)
    if folder is None or fcntl is None:
        return (yield)
    with _turn(Path(folder), alone=item.get_closest_marker("alone") is not None):
        return (yield)


@contextmanager
def _turn(folder: Path, *, alone: bool) -> Iterator[None]:
    """A shared hold on `running` (an exclusive one if `alone`), taken through `turnstile` so that an
    `alone` test waiting for the running ones to end is not passed by new ones."""
    with open(folder / "turnstile", "a") as turnstile, open(folder / "running", "a") as running:
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        try:
            fcntl.flock(running, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        finally:
            if not alone:
                fcntl.flock(turnstile, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(running, fcntl.LOCK_UN)
            if alone:
                fcntl.flock(turnstile, fcntl.LOCK_UN)
