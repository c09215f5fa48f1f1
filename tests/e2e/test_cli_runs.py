"""End to end: `runplane runs …` and `runplane runnables …` as subprocesses, against a local stack, in text
and in --json, and each way they can fail in one line."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.cli import CLEAN, one_line_error, runplane_in
from tests.local_stack import Stack, free_port, start_stack, wait_for

pytestmark = pytest.mark.e2e

TEST_ENV = {
    "RUNPLANE_RUNNABLE_PACKAGES": "tests.fixtures.runnables",
    "RUNPLANE_LOCAL_SWEEP_SECONDS": "0.5",
    "RUNPLANE_LEASE_SECONDS": "2",  # a running run sees that it was cancelled at its next lease renewal
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # in a folder's .runplane/: the commands run in that folder find the stack as the client does
    started = start_stack(tmp_path_factory.mktemp("project") / ".runplane", **TEST_ENV)
    started.keep_draining_output()
    yield started
    started.stop()


def rp(stack: Stack, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`runplane ARGS` in the folder of the stack's .runplane/."""
    return runplane_in(stack.state_dir.parent, *args, **env)


def ok(stack: Stack, *args: str) -> str:
    answer = rp(stack, *args)
    assert answer.returncode == 0, answer.stderr
    assert not answer.stderr, answer.stderr
    return answer.stdout


def oks(stack: Stack, *commands: tuple[str, ...]) -> list[str]:
    """What each command prints, the commands run at once."""
    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(lambda args: ok(stack, *args), commands))


def summary(text: str) -> dict[str, str]:
    """A summary's `label  value` lines (the first line of each value)."""
    return dict(line.split(None, 1) for line in text.splitlines() if line and not line.startswith(" "))


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def table_row(text: str, first: str) -> list[str]:
    """The cells of the table's row whose first cell is `first` (cells are two spaces apart or more)."""
    [row] = [row.split("  ") for row in text.splitlines()[1:] if row.startswith(first + " ")]
    return [cell.strip() for cell in row if cell.strip()]


def connected(pid: int) -> bool:
    """The process has a socket open: its client is talking to the API."""
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):  # closed meanwhile
            if os.readlink(fd).startswith("socket:"):
                return True
    return False


def test_runnables_are_created_listed_read_and_deleted_by_name_and_by_id(
    stack: Stack, tmp_path: Path
) -> None:
    made = summary(
        ok(
            stack, "runnables", "create", "--name", "cli-echo", "--kind", "python",
            "--config", '{"function": "echo"}', "--tag", "cli", "--timeout", "30",
        )
    )  # fmt: skip
    assert (made["name"], made["kind"], made["tags"], made["timeout"]) == ("cli-echo", "python", "cli", "30s")
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"name": "from-file", "kind": "python", "config": {"function": "echo"}}))
    filed = json.loads(ok(stack, "runnables", "create", "--file", f"@{spec}", "--tag", "flag", "--json"))
    assert (filed["name"], filed["tags"]) == ("from-file", ["flag"])  # the flags over the file

    listed, listed_json, by_name, by_id = oks(
        stack,
        ("runnables", "list"),
        ("runnables", "list", "--json"),
        ("runnables", "get", "cli-echo"),
        ("runnables", "get", filed["id"], "--json"),
    )
    assert listed.splitlines()[0].split() == ["ID", "NAME", "KIND", "CREATED"]
    assert table_row(listed, made["runnable"])[1:3] == ["cli-echo", "python"]
    assert {"cli-echo", "from-file", "echo"} <= {runnable["name"] for runnable in json_lines(listed_json)}
    assert summary(by_name)["runnable"] == made["runnable"]
    assert json.loads(by_id)["name"] == "from-file"
    assert ok(stack, "runnables", "delete", "cli-echo") == f"deleted cli-echo ({made['runnable']})\n"
    assert json.loads(ok(stack, "runnables", "delete", filed["id"], "--json"))["deleted"] is True
    one_line_error(
        rp(stack, "runnables", "get", "cli-echo"), "No runnable named 'cli-echo'", "(runnable_not_found)"
    )
    one_line_error(rp(stack, "runnables", "get", filed["id"]), filed["id"], "(runnable_not_found)")


def test_run_waits_and_exits_by_how_the_run_ended(stack: Stack, tmp_path: Path) -> None:
    done = rp(
        stack, "runs", "run", "echo", "--input", "n=1", "--input", "s=text", "--inputs", '{"a": [1], "n": 0}'
    )
    assert done.returncode == 0, done.stderr
    shown = summary(done.stdout)
    assert shown["status"] == "completed"
    assert json.loads(shown["outputs"]) == {"a": [1], "n": 1, "s": "text"}  # --input over --inputs
    inputs = tmp_path / "inputs.json"
    inputs.write_text('{"from": "file"}')
    echo = stack.runnable("echo")
    state = json.loads(ok(stack, "runs", "run", echo, "--inputs", f"@{inputs}", "--json"))
    assert (state["status"], state["runnable_id"], state["result"]["outputs"]) == (
        "completed",
        echo,
        {"from": "file"},
    )

    failed = rp(stack, "runs", "run", "fail", "--input", "message=nope", "--input", "code=on_purpose")
    assert failed.returncode == 1, failed.stderr
    assert summary(failed.stdout)["status"] == "failed"
    assert summary(failed.stdout)["error"] == "nope (on_purpose)"
    timed_out = rp(stack, "runs", "run", "sleep", "--input", "seconds=10", "--timeout", "1", "--json")
    assert timed_out.returncode == 1, timed_out.stderr
    assert json.loads(timed_out.stdout)["status"] == "timeout"

    late = rp(stack, "runs", "run", "sleep", "--input", "seconds=10", "--wait-timeout", "0.5")
    one_line_error(late, "had not ended after 0.5 s", "(wait_timeout)")
    assert summary(late.stdout)["status"] in ("waiting", "running")
    cancelled = rp(stack, "runs", "cancel", summary(late.stdout)["run"])
    assert cancelled.returncode == 0, cancelled.stderr
    ended = rp(stack, "runs", "wait", summary(late.stdout)["run"])
    assert (ended.returncode, summary(ended.stdout)["status"]) == (1, "cancelled")


def test_start_get_wait_and_list_in_text_and_json(stack: Stack) -> None:
    key = str(uuid.uuid4())
    start = ("runs", "start", "echo", "--input", "q=1", "--idempotency-key", key)
    run_id = ok(stack, *start).strip()
    assert json.loads(ok(stack, *start, "--json"))["id"] == run_id  # the same key: the same run
    other = stack.start_run("echo").json()["id"]  # two runs at least, for --limit
    waited = json.loads(ok(stack, "runs", "wait", run_id, "--json"))
    assert (waited["id"], waited["status"], waited["result"]["outputs"]) == (run_id, "completed", {"q": 1})
    echo = stack.runnable("echo")
    got, got_json, listed, of_echo, of_echo_id, one, every = oks(
        stack,
        ("runs", "get", run_id),
        ("runs", "get", run_id, "--json"),
        ("runs", "list"),
        ("runs", "list", "--runnable", "echo", "--status", "completed", "--json"),
        ("runs", "list", "--runnable", echo, "--status", "completed", "--json"),
        ("runs", "list", "--limit", "1", "--json"),
        ("runs", "list", "--limit", "0", "--json"),
    )
    assert (summary(got)["run"], summary(got)["status"], summary(got)["runnable"]) == (
        run_id,
        "completed",
        echo,
    )
    assert json.loads(got_json)["result"]["outputs"] == {"q": 1}
    assert listed.splitlines()[0].split() == ["ID", "RUNNABLE", "STATUS", "CREATED", "DURATION"]
    assert table_row(listed, run_id)[1:3] == ["echo", "completed"]
    for runs in (json_lines(of_echo), json_lines(of_echo_id)):
        assert run_id in {run["id"] for run in runs}
        assert {(run["runnable_id"], run["status"]) for run in runs} == {(echo, "completed")}
    assert len(json_lines(one)) == 1
    assert {run_id, other} <= {run["id"] for run in json_lines(every)}


def test_follow_prints_the_events_and_log_lines_and_ends_with_the_status(stack: Stack) -> None:
    stack.runnable("progress")  # registered for the fixture function of that name
    run_id = ok(stack, "runs", "start", "progress", "--inputs", '{"steps": 2, "pause": 0.2}').strip()
    followed = rp(stack, "runs", "follow", run_id)
    assert followed.returncode == 0, followed.stderr
    text = followed.stdout
    for seen in ("status running (claimed)", 'state  {"step": 1, "phase": "working"}', "stdout printed 1",
                 'log    step done {"step": 0}', "stderr to stderr", "status completed (ended)"):  # fmt: skip
        assert seen in text, text
    assert text.index("printed 0") < text.index("printed 1") < text.index("status completed (ended)")
    assert (summary(text)["run"], summary(text)["status"]) == (run_id, "completed")  # the summary last
    assert json.loads(summary(text)["outputs"]) == {"done": True}

    followed_json, logs, logs_json = oks(
        stack,
        ("runs", "follow", run_id, "--json"),
        ("runs", "logs", run_id),
        ("runs", "logs", run_id, "--json"),
    )
    events = json_lines(followed_json)
    assert [event["seq"] for event in events] == sorted(event["seq"] for event in events)
    assert (events[-1]["type"], events[-1]["status"]) == ("status", "completed")
    logged = [line["message"] for event in events if event["type"] == "logs" for line in event["lines"]]
    assert [line.split(None, 2)[2] for line in logs.splitlines()] == [
        'step done {"step": 0}', "printed 0", 'step done {"step": 1}', "printed 1", "to stderr",
    ]  # fmt: skip
    assert [line["message"] for line in json_lines(logs_json)] == logged == [
        "step done", "printed 0", "step done", "printed 1", "to stderr",
    ]  # fmt: skip

    failing = ok(stack, "runs", "start", "progress", "--inputs", '{"steps": 1, "fail": true}').strip()
    followed = rp(stack, "runs", "follow", failing)
    assert followed.returncode == 1, followed.stderr
    assert "status failed (ended): ValueError: boom after progress (runnable_exception)" in followed.stdout
    assert summary(followed.stdout)["status"] == "failed"


@pytest.mark.parametrize("command", ["follow", "wait"])
def test_ctrl_c_while_following_or_waiting_exits_130_quietly(stack: Stack, command: str) -> None:
    run_id = ok(stack, "runs", "start", "sleep", "--input", "seconds=30").strip()
    process = subprocess.Popen(
        [sys.executable, "-m", "runplane.cli", "runs", command, run_id, "--state-dir", str(stack.state_dir)],
        env=CLEAN, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for(lambda: connected(process.pid))  # started, and reading
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
        stack.call("POST", f"/v1/run/{run_id}/cancel")
    assert (process.returncode, stderr) == (130, "")


def test_the_api_is_found_from_flags_the_environment_or_a_state_dir(stack: Stack, tmp_path: Path) -> None:
    info = stack.info
    flags = runplane_in(
        tmp_path, "runnables", "get", "echo", "--api-url", info["api_url"], "--api-key", info["api_key"]
    )
    environment = runplane_in(
        tmp_path,
        "runnables",
        "get",
        "echo",
        RUNPLANE_API_URL=info["api_url"],
        RUNPLANE_API_KEY=info["api_key"],
    )
    state_dir = runplane_in(tmp_path, "runnables", "get", "echo", "--state-dir", str(stack.state_dir))
    for answer in (flags, environment, state_dir):
        assert answer.returncode == 0, answer.stderr
        assert summary(answer.stdout)["runnable"] == stack.runnable("echo")


def test_each_misconfiguration_and_refusal_is_one_line(stack: Stack, tmp_path: Path) -> None:
    url = stack.info["api_url"]
    refused = f"http://127.0.0.1:{free_port()}"
    reader = stack.call("POST", "/v1/keys", {"scopes": ["runs:read"]}).json()["api_key"]
    here = stack.state_dir.parent
    nowhere = tmp_path  # no .runplane/ here or above
    cases: list[tuple[Path, tuple[str, ...], dict[str, str], tuple[str, ...]]] = [
        (nowhere, ("runs", "list"), {}, ("no API configured: pass --api-url and --api-key, set",)),
        (nowhere, ("runs", "list", "--state-dir", str(nowhere)), {}, ("no API configured",)),
        (nowhere, ("runs", "list"), {"RUNPLANE_API_URL": url}, (f"no API key for {url}: pass --api-key",)),
        (
            nowhere,
            ("runs", "list", "--api-url", refused, "--api-key", "rpk_x"),
            {},
            (f"cannot reach the API at {refused}: is the local stack running? (make run)",),
        ),
        (
            here,
            ("runs", "list", "--api-key", "rpk_wrong"),
            {},
            ("Missing or invalid API key (unauthorized)",),
        ),
        (here, ("runnables", "list", "--api-key", reader), {}, ("permissions runnables:read (forbidden)",)),
        (here, ("runs", "start", "no-such-runnable"), {}, ("'no-such-runnable' (runnable_not_found)",)),
        (here, ("runs", "get", str(uuid.uuid4())), {}, ("not found (run_not_found)",)),
        (
            here,
            ("runnables", "create", "--name", "echo", "--kind", "python", "--config", '{"function": "echo"}'),
            {},
            ("named 'echo'", "(runnable_name_taken)"),
        ),
        (here, ("runs", "list", "--status", "bogus"), {}, ("query.status", "(validation_error)")),
        (here, ("runnables", "create", "--kind", "python"), {}, ("--name, --config missing",)),
    ]
    with ThreadPoolExecutor(4) as pool:  # the refused connection is tried four times, for seconds
        answers = list(pool.map(lambda case: runplane_in(case[0], *case[1], **case[2]), cases))
    for (_, args, _, words), answer in zip(cases, answers, strict=True):
        assert answer.stdout == "", args
        one_line_error(answer, *words)

    not_json = rp(stack, "runs", "start", "echo", "--inputs", "{nope")
    assert (not_json.returncode, "Traceback" in not_json.stderr) == (2, False)
    assert "argument --inputs: not JSON" in not_json.stderr


def test_without_runplane_client_the_commands_say_how_to_install_it(tmp_path: Path) -> None:
    """The other commands, and the parser with these, do without it (as the Lambda bundle does)."""
    absent = "import sys; sys.modules['runplane_client'] = None; from runplane.cli import main; main()"

    def without_client(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", absent, *args], env=CLEAN, capture_output=True, text=True, cwd=tmp_path
        )

    one_line_error(
        without_client("runs", "list"), "runplane_client is not installed: pip install -e clients/python"
    )
    keys = without_client("keys", "--help")
    assert keys.returncode == 0, keys.stderr
