"""Shared fixtures: moto-backed AWS with every resource provisioned from runplane.definitions."""

from __future__ import annotations

import functools
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import boto3
import botocore.loaders
import botocore.session
import pytest
from moto import mock_aws
from runplane import definitions as defs
from runplane.api.app import create_app, serve
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
def dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Name resolution under the test's control: add `name -> [addresses]`; other names resolve as usual."""
    names = {"example.com": [PUBLIC_ADDRESS], "hooks.example.com": [PUBLIC_ADDRESS]}
    resolve = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        if host not in names:
            return resolve(host, port, *args, **kwargs)
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

        aws.session.cache_clear()
        aws._client.cache_clear()
        created = provision(boto3.session.Session(), "test")
        for name, value in created.items():
            monkeypatch.setenv(name, value)
        services.reset()
        keys._cache = keys._PrincipalCache()
        yield created
        aws.session.cache_clear()
        aws._client.cache_clear()
    services.reset()


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


def make_runnable(account_id: str, function: str = "echo", **fields: Any) -> str:
    spec = RunnableFields(name=function, kind="python", config={"function": function}, **fields)
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
