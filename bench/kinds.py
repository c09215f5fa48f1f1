"""What each runnable kind adds to a run: the worker's time and its AWS requests, for an instant runnable.

    .venv/bin/python bench/kinds.py [--runs 50]

The real api and worker handlers run against moto in this process. Each kind executes something that
answers at once (python `echo`, an http agent on loopback, a Lambda function and a Bedrock model stubbed
with botocore's Stubber), so the time measured is the kind's own overhead: the worker handling one dispatch
message (claim, execute, finish), less nothing. Requests are counted with botocore `before-call` events,
the stubbed Invoke / Converse added (the Stubber answers before that event).
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import time
from collections import Counter

from inprocess import moto_backed

USAGE = {"provider": "openai", "model": "gpt-4o", "prompt_tokens": 100, "completion_tokens": 20}
CONVERSE = {
    "output": {"message": {"role": "assistant", "content": [{"text": "ok"}]}},
    "stopReason": "end_turn",
    "usage": {"inputTokens": 100, "outputTokens": 20, "totalTokens": 120},
    "metrics": {"latencyMs": 1},
}
ARN = "arn:aws:lambda:us-east-1:123456789012:function:agent"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    with moto_backed(
        RUNPLANE_LAMBDA_FUNCTIONS=ARN, RUNPLANE_RATE_LIMIT_BURST="0", RUNPLANE_ACCOUNT_MAX_CONCURRENCY="0"
    ):
        from botocore.response import StreamingBody
        from botocore.stub import Stubber
        from runplane.adapters import aws, runtimes
        from runplane.logic.keys import create_key

        from tests.conftest import Api, drain
        from tests.receiver import Answer, receiving

        requests: Counter[str] = Counter()
        counting = {"on": False}

        def count(model, **_: object) -> None:
            if counting["on"] and model.name not in (
                "ReceiveMessage",
                "DeleteMessageBatch",
                "GetQueueAttributes",
            ):
                requests[f"{model.service_model.service_name} {model.name}"] += 1

        aws.session().events.register("before-call", count)
        api = Api(create_key("bench").token)
        lambda_stub = Stubber(runtimes.lambda_client())
        bedrock_stub = Stubber(runtimes.bedrock_client())
        lambda_stub.activate()
        bedrock_stub.activate()

        def lambda_reply() -> None:
            raw = json.dumps({"outputs": {"ok": True}, "usage": [USAGE]}).encode()
            lambda_stub.add_response(
                "invoke", {"StatusCode": 200, "Payload": StreamingBody(io.BytesIO(raw), len(raw))}
            )

        agent_answer = json.dumps({"outputs": {"ok": True}, "usage": [USAGE]}).encode()
        with receiving(Answer(body=agent_answer)) as agent:
            kinds = [
                ("python (echo)", "python", {"function": "echo"}, lambda: None, None),
                ("http (loopback agent)", "http", {"url": agent.url}, lambda: None, None),
                ("lambda (stubbed)", "lambda", {"function_arn": ARN}, lambda_reply, "lambda Invoke"),
                (
                    "bedrock (stubbed)",
                    "bedrock",
                    {"model_id": "amazon.nova-lite-v1:0", "prompt": "hi"},
                    lambda: bedrock_stub.add_response("converse", CONVERSE),
                    "bedrock-runtime Converse",
                ),
            ]
            print(f"{args.runs} runs per kind, one at a time; the worker's handling of one dispatch message")
            print(f"  {'kind':<24} {'p50 ms':>7} {'p95 ms':>7} {'requests':>9}  worker requests per run")
            for label, kind, config, prepare, stubbed in kinds:
                spec = {"name": label, "kind": kind, "config": config}
                runnable = api.post("/v1/runnables", spec).json()["id"]
                times: list[float] = []
                requests.clear()
                for n in range(args.runs + 1):
                    prepare()
                    api.post(f"/v1/runnable/{runnable}/runs", {"inputs": {"n": n}})
                    counting["on"] = n > 0  # the first run warms clients and the signing secret
                    began = time.perf_counter()
                    drain("worker")
                    if n:
                        times.append((time.perf_counter() - began) * 1000)
                        if stubbed:  # answered by the Stubber before botocore's own before-call event
                            requests[stubbed] += 1
                    counting["on"] = False
                per_run = sum(requests.values()) / args.runs
                detail = ", ".join(f"{op} {c / args.runs:g}" for op, c in sorted(requests.items()))
                p95 = statistics.quantiles(times, n=20)[-1]
                print(f"  {label:<24} {statistics.median(times):>7.1f} {p95:>7.1f} {per_run:>9.1f}  {detail}")
        supervisor_overhead()


def supervisor_overhead(runs: int = 200) -> None:
    """The executor alone, without AWS: a forked process (python) against a thread (remote kinds)."""
    from runplane.runnables.context import RunContext
    from runplane.runnables.supervise import Limits, Verdict, supervise

    print("\nthe supervisor alone, executing `return {}` (no AWS)")
    for label, isolated in (("forked process (python)", True), ("thread (http, lambda, bedrock)", False)):
        times = []
        for _ in range(runs):
            context = RunContext(
                run_id="r", account_id="a", runnable_id="x", attempt=1, deadline=time.time() + 60
            )
            began = time.perf_counter()
            supervise(
                lambda ctx: {},
                context,
                isolated=isolated,
                limits=Limits(seconds=60, reason="", heartbeat_seconds=60),
                on_heartbeat=lambda: Verdict.go_on,
                answer=lambda question, payload: {},
            )
            times.append((time.perf_counter() - began) * 1000)
        p95 = statistics.quantiles(times, n=20)[-1]
        print(f"  {label:<32} p50 {statistics.median(times):6.2f} ms   p95 {p95:6.2f} ms")


if __name__ == "__main__":
    main()
