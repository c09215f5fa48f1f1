"""A scripted asynchronous agent for the fault matrix: it works each run the harness's agent receiver was
sent, posting its reports through the harness's API requests (the report endpoint's requests are then the
`api` component's points), as `runplane.agent.AgentRun` does: one report at a time; a report that was not
answered (the request died), or answered 429, 5xx or `409 run_busy`, is sent again with the same body,
after a backoff on the virtual clock; any other refusal ends the agent's work on that run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from tests.faults.harness import Answer, Stack

RETRIED = {429, 500, 502, 503, 504}
RETRIES = 4  # as AgentRun: five tries in all
ENDED = {"completed", "failed", "cancelled", "timeout"}


@dataclass
class Sent:
    """One try of a report: the run's attempt, the report's position in its script, the answer, and
    whether the scenario's fault fired while the endpoint handled it."""

    attempt: int
    report: int
    answer: Answer
    faulted: bool


@dataclass
class Job:
    """One envelope the agent was sent, and the reports it has still to send for it."""

    envelope: dict[str, Any]
    reports: list[dict[str, Any]]
    sent: int = 0  # reports answered 200
    tries: int = 0  # of the report being sent
    done: bool = False
    accepted: list[int] = field(default_factory=list)  # positions of the reports answered 200


class ScriptedAgent:
    """Acts as a Stack actor: each call sends one try of one report (of the oldest run not done)."""

    def __init__(self, stack: Stack, script: Callable[[dict[str, Any]], list[dict[str, Any]]]):
        self.stack, self.script = stack, script
        self.jobs: list[Job] = []
        self.sent: list[Sent] = []
        self.problems: list[str] = []

    def __call__(self) -> bool:
        for envelope in self.stack.envelopes()[len(self.jobs) :]:
            self.jobs.append(Job(envelope, self.script(envelope)))
        job = next((job for job in self.jobs if not job.done), None)
        if job is None:
            return False
        self._send(job)
        return True

    def _fired(self) -> int:
        return sum(fault.times for fault in self.stack.injector.faults)

    def _send(self, job: Job) -> None:
        envelope, position = job.envelope, job.sent
        before = self._fired()
        answer = self.stack.request(
            "POST",
            urlsplit(envelope["report_url"]).path,
            job.reports[position],
            {"Authorization": f"Bearer {envelope['run_token']}"},
        )
        faulted = self._fired() != before
        self.sent.append(Sent(envelope["attempt"], position, answer, faulted))
        status, body = answer.status, answer.body if isinstance(answer.body, dict) else {}
        what = f"report {position + 1} of attempt {envelope['attempt']}"
        if status is not None and status >= 500 and not faulted:
            self.problems.append(f"{what} was answered {status} though no fault hit it: {answer.body}")
        if status == 200:
            job.accepted.append(position)
            job.sent, job.tries = position + 1, 0
            job.done = job.sent == len(job.reports) or body.get("status") in ENDED
            if body.get("status") in ENDED and job.sent < len(job.reports):
                self.problems.append(f"{what} was answered {body.get('status')} before the agent ended it")
            return
        if status is None or status in RETRIED or body.get("code") == "run_busy":
            job.tries += 1
            if job.tries > RETRIES:
                self.problems.append(f"{what} was given up after {job.tries} tries: {status} {answer.body}")
                job.done = True
            else:
                self.stack.clock.shift(min(0.5 * 2 ** (job.tries - 1), 8.0))
            return
        job.done = True
        if status == 401 and self._superseded(envelope):
            return  # the run was sent again: this attempt's token opens nothing now
        self.problems.append(f"{what} was refused {status}: {answer.body}")

    def _superseded(self, envelope: dict[str, Any]) -> bool:
        return any(
            job.envelope["run_id"] == envelope["run_id"] and job.envelope["attempt"] > envelope["attempt"]
            for job in self.jobs
        )

    def reported(self, position: int) -> list[Job]:
        """The jobs whose report at `position` was answered 200."""
        return [job for job in self.jobs if position in job.accepted]


def agent_of(stack: Stack) -> ScriptedAgent:
    (agent,) = (actor for actor in stack.actors if isinstance(actor, ScriptedAgent))
    return agent
