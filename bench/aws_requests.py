"""AWS requests per run, by function, service and operation (botocore `before-call` events, moto in-process).

.venv/bin/python bench/aws_requests.py
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from contextvars import ContextVar

from inprocess import moto_backed
from runplane.adapters import aws

calls: Counter[tuple[str, str, str]] = Counter()
# a context variable, not a thread-local: the callbacks function's threads (asyncio.to_thread) inherit it
component: ContextVar[str] = ContextVar("component", default="setup")


EVENT_SOURCE_MAPPING = {"ReceiveMessage", "DeleteMessageBatch", "GetQueueAttributes"}


def count(model, **_: object) -> None:
    name = component.get()
    if name in ("worker", "callbacks") and model.name in EVENT_SOURCE_MAPPING:
        name = "esm"  # made by the Lambda event source mapping in AWS (the local poller here)
    calls[(name, model.service_model.service_name, model.name)] += 1


def as_component(name: str, action):
    token = component.set(name)
    try:
        return action()
    finally:
        component.reset(token)


def table(title: str) -> None:
    rows = sorted((k, v) for k, v in calls.items() if k[0] != "setup")
    print(f"\n{title}")
    print(f"  {'function':<10} {'service':<9} {'operation':<22} {'requests':>8}")
    for (function, service, operation), n in rows:
        print(f"  {function:<10} {service:<9} {operation:<22} {n:>8}")
    print(f"  {'total':<43} {sum(v for _, v in rows):>8}")
    calls.clear()


def main() -> None:
    with moto_backed(RUNPLANE_CALLBACK_SCHEDULE="0.2"):
        aws.session().events.register("before-call", count)
        from runplane.logic.keys import create_key

        from tests.conftest import Api, drain, make_runnable
        from tests.receiver import Answer, receiving

        key = create_key("bench")
        echo = make_runnable("bench", "echo")
        api = Api(key.token)
        api.post(f"/v1/runnable/{echo}/runs")  # warm the key cache, as a warm API function would have it
        drain("worker")
        calls.clear()

        run_id = as_component(
            "api", lambda: api.post(f"/v1/runnable/{echo}/runs", {"inputs": {"a": 1}}).json()["id"]
        )
        as_component("worker", lambda: drain("worker"))
        as_component("api", lambda: api.get(f"/v1/run/{run_id}"))
        table("async run: submit, execute, one GET of the result")

        stop = threading.Event()

        def work() -> None:
            component.set("worker")
            while not stop.is_set():
                drain("worker")
                time.sleep(0.01)

        worker = threading.Thread(target=work)
        worker.start()
        reply = as_component(
            "api", lambda: api.post(f"/v1/runnable/{echo}/runs?mode=sync", {"inputs": {"a": 1}})
        )
        stop.set()
        worker.join()
        assert reply.status == 200, reply.text
        table("sync run (echo): submit and wait; the wait polls GetItem with backoff (50 ms x1.5)")
        with receiving(Answer(200)) as receiver:
            run_id = as_component(
                "api",
                lambda: api.post(f"/v1/runnable/{echo}/runs", {"callback_url": receiver.url}).json()["id"],
            )
            as_component("worker", lambda: drain("worker"))
            as_component("callbacks", lambda: drain("callbacks"))
            assert len(receiver.received) == 1
        table("async run with a callback, delivered at the first attempt")

        with receiving(Answer(503), Answer(200)) as receiver:
            api.post(f"/v1/runnable/{echo}/runs", {"callback_url": receiver.url})
            drain("worker")
            calls.clear()
            as_component("callbacks", lambda: drain("callbacks"))
            time.sleep(1.1)  # hidden for the retry delay, rounded up to whole seconds
            as_component("callbacks", lambda: drain("callbacks"))
            assert len(receiver.received) == 2
        table("callback delivery only: a failed attempt, then success")
        print(
            "\nesm: requests of the Lambda event source mapping (here the local poller; it also re-reads the"
        )
        print("queue ARN per drain). In AWS they are made by the service, not the function.")


if __name__ == "__main__":
    main()
