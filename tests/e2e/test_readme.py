"""The README's examples work as pasted, in order, against a local stack: the walk through the API (its
shell block run by bash, every HTTP answer below 400) and the SQS message (sent to the intake queue as
written, with the runnable's id put in, it starts its run), and the walk in Python."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.local_stack import ROOT, Stack, start_stack
from tests.receiver import receiving

pytestmark = pytest.mark.e2e

README = (ROOT / "README.md").read_text()
# curl as the README calls it, each answer's HTTP status (000: none) and curl's exit status noted, the
# latter returned: the walk's commands pipe the bodies on
CURL_NOTING_STATUS = r"""
curl() {
  local out code=0
  out=$(command curl -w '\n%{http_code}' "$@") || code=$?
  printf '%s %s %s\n' "${out##*$'\n'}" "$code" "$*" >> "$STATUSES"
  printf '%s\n' "${out%$'\n'*}"
  return "$code"
}
"""


def block(after: str, language: str) -> str:
    """The first fenced block of `language` after the heading or sentence `after`."""
    found = re.search(rf"```{language}\n(.*?)```", README[README.index(after) :], re.S)
    assert found, f"no {language} block after {after!r}"
    return found.group(1)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack as `make run` starts it (loopback receivers allowed), its state where the README reads it."""
    here = tmp_path_factory.mktemp("readme")
    started = start_stack(here / ".runplane", RUNPLANE_ALLOW_LOOPBACK="1")
    started.keep_draining_output()
    yield started
    started.stop()


def test_the_walk_through_the_api_works_as_pasted(stack: Stack, tmp_path: Path) -> None:
    walk = block("## A walk through the API", "sh")
    pasted = "API=http://127.0.0.1:8787"
    assert pasted in walk
    script = CURL_NOTING_STATUS + walk.replace(pasted, f"API={stack.info['api_url']}")
    statuses = tmp_path / "statuses"
    done = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", script],
        cwd=stack.state_dir.parent,  # where .runplane/local.json is
        env={"PATH": "/usr/bin:/bin", "STATUSES": str(statuses)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    answered = statuses.read_text().splitlines()
    assert len(answered) == len(re.findall(r"(?m)(?:^|\$\()curl ", walk)), answered  # every one ran
    failed = [line for line in answered if line.split()[1] != "0" or not 0 < int(line.split()[0]) < 400]
    assert failed == [], failed


def test_the_sqs_message_starts_its_run_and_calls_back(stack: Stack) -> None:
    """As written, but for the runnable's id and the callback's receiver (here on loopback: the machine
    may not resolve example.com)."""
    message = json.loads(block("## Starting runs from SQS", "json"))
    with receiving() as receiver:
        message["runnable_id"] = stack.info["runnables"]["echo"]  # "your runnable's id"
        message["callback_url"] = receiver.url
        stack.sqs().send_message(QueueUrl=stack.info["intake_queue_url"], MessageBody=json.dumps(message))
        deadline = time.monotonic() + 30
        while not receiver.received:
            assert time.monotonic() < deadline, "no callback"
            time.sleep(0.2)
    reply = stack.call("GET", f"/v1/run/{message['run_id']}")
    assert reply.status_code == 200, reply.text
    assert reply.json()["status"] == "completed", reply.text
    assert reply.json()["result"]["outputs"] == message["inputs"]  # echo


def test_the_walk_in_python_works_as_pasted(stack: Stack) -> None:
    """Run where the walk runs (the client finds the stack by its local.json), after the curl walk or
    alone: it registers `nap` only when no runnable has that name."""
    walk = block("### The same in Python", "python")
    done = subprocess.run(
        [sys.executable, "-c", walk],
        cwd=stack.state_dir.parent,
        env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    printed = done.stdout.splitlines()
    assert printed[:5] == [
        "1 status waiting",
        "2 status running",
        "3 status completed",
        "completed",
        printed[4],
    ], printed
    assert printed[4].startswith("completed {'slept': 1"), printed
    listed = [line.split() for line in printed[5:]]
    assert len(listed) >= 2, printed  # the two runs above, at least
    assert all(status == "completed" for _, status in listed), printed
