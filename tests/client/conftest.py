"""The client's tests: a local stack per module, and a client of it that retries quickly."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from runplane_client import NotFound, RetryPolicy, Runnable, Runplane

from tests.local_stack import Stack, start_stack

STACK_ENV = {
    "RUNPLANE_RUNNABLE_PACKAGES": "tests.fixtures.runnables",
    "RUNPLANE_SYNC_WAIT_SECONDS": "2",  # a sync start that outlasts it makes the client wait on its own
    "RUNPLANE_LEASE_SECONDS": "3",
    "RUNPLANE_LOCAL_SWEEP_SECONDS": "0.5",
    "RUNPLANE_ALLOW_LOOPBACK": "1",  # callbacks to a receiver on this machine
    "RUNPLANE_CALLBACK_SCHEDULE": "0.5,0.5",
}
FAST_RETRIES = RetryPolicy(retries=3, base_delay=0.05, max_delay=0.2)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    started = start_stack(tmp_path_factory.mktemp("stack"), **STACK_ENV)
    started.keep_draining_output()
    yield started
    started.stop()


@pytest.fixture(scope="module")
def client(stack: Stack) -> Iterator[Runplane]:
    with Runplane(stack.info["api_url"], stack.info["api_key"], retries=FAST_RETRIES) as made:
        yield made


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def registered(client: Runplane, function: str) -> Runnable:
    """The runnable named `function` that runs the python function of that name (tests.fixtures)."""
    try:
        return client.runnables.get_by_name(function)
    except NotFound:
        return client.runnables.create(function, "python", {"function": function})
