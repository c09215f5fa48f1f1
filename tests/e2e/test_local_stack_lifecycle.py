"""End to end: how `runplane local` starts and stops (Ctrl-C, a hangup, nohup; the requests in flight
answered first), how it keeps its state directory to itself, and what a runnable's author sees in its
terminal (runs' output, code reloaded)."""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from tests.cli import one_line_error
from tests.contract import assert_run_state
from tests.local_stack import (
    ROOT,
    Stack,
    read_banner,
    stack_command,
    stack_environment,
    start_stack,
    wait_for,
)

pytestmark = pytest.mark.e2e


def assert_gone(pids: list[int]) -> None:
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def stop_all(*processes: subprocess.Popen) -> None:
    """Stop what a test left running: Ctrl-C, then a kill."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
    for process in processes:
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_ctrl_c_stops_the_stack_cleanly(tmp_path: Path) -> None:
    other = start_stack(tmp_path)
    assert (other.state_dir / "local.json").exists()
    pids = other.info["worker_pids"]
    assert other.stop() == 0
    assert not (other.state_dir / "local.json").exists()
    assert_gone(pids)


def test_a_hangup_stops_the_stack_as_ctrl_c_does(tmp_path: Path) -> None:
    """SIGHUP (the terminal closed): every poller stops, the state file goes, no traceback."""
    other = start_stack(tmp_path)
    pids = other.info["worker_pids"]
    other.process.send_signal(signal.SIGHUP)
    output, _ = other.process.communicate(timeout=30)
    assert other.process.returncode == 0, output
    assert "Traceback" not in output
    assert not (other.state_dir / "local.json").exists()
    assert_gone(pids)


def test_a_second_stack_on_the_same_state_is_refused_and_the_first_keeps_its_state(tmp_path: Path) -> None:
    first = start_stack(tmp_path)
    state = (first.state_dir / "local.json").read_text()
    second = subprocess.run(
        stack_command(tmp_path), capture_output=True, text=True, timeout=60, env=stack_environment()
    )
    line = one_line_error(second, first.info["api_url"])
    assert line.startswith("error: a local stack already runs"), line
    assert (first.state_dir / "local.json").read_text() == state
    assert first.call("GET", "/health").status_code == 200
    assert first.stop() == 0
    assert not (first.state_dir / "local.json").exists()


@pytest.mark.parametrize(
    "left",
    [
        json.dumps({"pid": 2**22 + 12345, "api_url": "http://gone"}),  # by a killed stack
        json.dumps({"pid": os.getpid(), "api_url": "http://gone"}),  # whose pid is another process's now
        "[1, 2",  # cut short, and not a stack's
    ],
    ids=["gone", "pid-reused", "corrupt"],
)
def test_a_state_file_no_stack_holds_is_replaced(tmp_path: Path, left: str) -> None:
    (tmp_path / "local.json").write_text(left)
    other = start_stack(tmp_path, workers=1)
    assert other.info["pid"] == other.process.pid
    assert other.stop() == 0


def test_stopping_says_which_runs_had_not_ended(tmp_path: Path) -> None:
    other = start_stack(tmp_path)
    reply = other.start_run("sleep", {"inputs": {"seconds": 30}})
    assert reply.status_code == 202, reply.text
    other.process.send_signal(signal.SIGINT)
    output, _ = other.process.communicate(timeout=30)
    assert other.process.returncode == 0, output
    assert (
        f"[stack] 1 run had not ended and end with the stack (its state is in memory): {reply.json()['id']}"
        in output
    )


STABLE_KEY = "rpk_0123456789abcdef_" + "s" * 43


def test_a_chosen_dev_key_and_the_built_ins_ids_survive_a_restart(tmp_path: Path) -> None:
    seen = []
    for _ in range(2):
        other = start_stack(tmp_path, RUNPLANE_LOCAL_KEY=STABLE_KEY)
        info = other.info
        seen.append((info["api_key"], info["runnables"]))
        assert other.call("GET", f"/v1/runnable/{info['runnables']['echo']}").status_code == 200
        assert other.stop() == 0
    assert seen[0] == seen[1]
    assert seen[0][0] == STABLE_KEY


def test_a_malformed_dev_key_is_refused_in_one_line(tmp_path: Path) -> None:
    answer = subprocess.run(
        stack_command(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        env=stack_environment(RUNPLANE_LOCAL_KEY="x"),
    )
    one_line_error(answer, "error: a chosen key must look like rpk_")
    assert not (tmp_path / "local.json").exists()


def process_groups(pgids: set[int]) -> list[int]:
    """The live processes in these process groups (each poller leads its own)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _, pgrp = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (FileNotFoundError, ProcessLookupError):  # a process that just ended
            continue
        if int(pgrp) in pgids and state != "Z":
            members.append(int(stat.parent.name))
    return members


def test_ctrl_c_with_runs_in_flight_stops_every_poller_and_its_runs_on_the_signal(tmp_path: Path) -> None:
    """Workers in the middle of runs end on the stop signal, rather than once the runs are over, and so
    do the processes running the runs: none is left for the stop's deadline to kill (the stack would
    say so), or left behind."""
    if not Path("/proc/self/stat").exists():
        pytest.skip("reads process groups from /proc")
    other = start_stack(tmp_path)
    workers = set(other.info["worker_pids"])
    try:
        runs = [other.start_run("sleep", {"inputs": {"seconds": 60}}).json()["id"] for _ in range(2)]
        wait_for(lambda: all(other.call("GET", f"/v1/run/{r}").json()["status"] == "running" for r in runs))
    finally:
        code = other.stop()
    left = process_groups(workers)
    for pid in left:  # not to outlive the test
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert (code, left) == (0, [])
    output = other.process.stdout.read()  # type: ignore[union-attr]
    assert "killed" not in output, output


def test_a_hangup_after_the_terminal_closed_still_stops_the_stack_cleanly(tmp_path: Path) -> None:
    """The terminal is gone when its SIGHUP comes: what the stack prints then fails (EIO), and it stops
    all the same: every poller, the state file, exit 0."""
    master, slave = pty.openpty()
    process = subprocess.Popen(
        stack_command(tmp_path, workers=1),
        cwd=ROOT,
        env=stack_environment(),
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
    )
    os.close(slave)
    try:
        assert "Press Ctrl-C" in read_banner(lambda: os.read(master, 65536).decode(errors="replace"))
        pids = json.loads((tmp_path / "local.json").read_text())["worker_pids"]
    finally:
        os.close(master)  # the terminal window closes
    process.send_signal(signal.SIGHUP)
    try:
        assert process.wait(30) == 0
    finally:
        stop_all(process)
    assert not (tmp_path / "local.json").exists()
    assert_gone(pids)


def test_a_stack_started_with_nohup_survives_a_hangup(tmp_path: Path) -> None:
    process = subprocess.Popen(
        ["nohup", *stack_command(tmp_path, workers=1)],
        cwd=ROOT,
        env=stack_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert "Press Ctrl-C" in read_banner(process.stdout.readline)  # type: ignore[union-attr]
        process.send_signal(signal.SIGHUP)
        with pytest.raises(subprocess.TimeoutExpired):  # it runs on
            process.wait(3)
        url = json.loads((tmp_path / "local.json").read_text())["api_url"]
        assert requests.get(f"{url}/health", timeout=10).status_code == 200
    finally:
        stop_all(process)
    assert process.returncode == 0


def test_two_stacks_started_at_once_on_one_state_dir_do_not_both_run(tmp_path: Path) -> None:
    """The state directory's lock is taken before anything starts: the second of two stacks started
    together (on other ports) says so in one line, though the first has not written its local.json."""
    processes = [
        subprocess.Popen(
            stack_command(tmp_path, workers=1),
            cwd=ROOT,
            env=stack_environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        printed = [read_banner(process.stdout.readline) for process in processes]  # type: ignore[union-attr]
        running = [p for p, out in zip(processes, printed, strict=True) if "Press Ctrl-C" in out]
        assert len(running) == 1, printed
        (refused,) = (out for out in printed if "Press Ctrl-C" not in out)
        (line,) = refused.strip().splitlines()
        assert line.startswith("error: a local stack already runs"), line
        assert json.loads((tmp_path / "local.json").read_text())["pid"] == running[0].pid
    finally:
        stop_all(*processes)


def test_a_state_dir_that_cannot_be_written_is_refused_in_one_line(tmp_path: Path) -> None:
    """--state-dir naming a file (or a directory this user cannot write); not a port in use."""
    state = tmp_path / "a-file"
    state.write_text("")
    answer = subprocess.run(
        stack_command(state, workers=1),
        cwd=ROOT,
        env=stack_environment(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "cannot listen" not in one_line_error(answer, str(state))


# --- requests in flight at the stop ---


def statuses(stack: Stack) -> list[str]:
    return [run["status"] for run in stack.call("GET", "/v1/runs").json()["items"]]


def test_a_sync_run_in_flight_at_ctrl_c_is_answered_and_new_requests_are_refused(tmp_path: Path) -> None:
    """The gateway answers the request in flight, its run going on meanwhile, then the stack exits 0; a
    request made meanwhile is refused in the native error shape."""
    other = start_stack(tmp_path, workers=1)
    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(other.start_run, "sleep", {"inputs": {"seconds": 3}}, mode="sync")
        time.sleep(1)
        other.process.send_signal(signal.SIGINT)
        other.read_until("[stack] answering 1 request first, up to 30s")
        refused = other.call("GET", "/v1/runs")
        reply = answer.result(30)
    assert reply.status_code == 200, reply.text
    assert assert_run_state(reply.json())["status"] == "completed"
    assert refused.status_code == 503
    assert refused.json() == {"error": "The local stack is stopping", "code": "stack_stopping", "issues": []}
    assert other.process.wait(30) == 0
    output = other.process.stdout.read()  # type: ignore[union-attr]
    assert "had not ended" not in output, output
    assert "Traceback" not in output, output


def test_a_second_ctrl_c_stops_without_waiting_for_the_requests_in_flight(tmp_path: Path) -> None:
    other = start_stack(tmp_path, workers=1)
    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(other.start_run, "sleep", {"inputs": {"seconds": 20}}, mode="sync")
        wait_for(lambda: statuses(other) == ["running"])
        other.process.send_signal(signal.SIGINT)
        other.read_until("[stack] answering 1 request first")
        other.process.send_signal(signal.SIGINT)
        assert other.process.wait(10) == 0
        with pytest.raises(requests.ConnectionError):
            answer.result(10)
    assert "[stack] 1 request cut short, unanswered" in other.process.stdout.read()  # type: ignore[union-attr]


def test_clients_that_leave_mid_request_leave_nothing_in_the_terminal(tmp_path: Path) -> None:
    """One leaves halfway through its body; one while its sync run goes on, which its answer finds gone."""
    other = start_stack(tmp_path, workers=1)
    url, key, sleep = other.info["api_url"], other.info["api_key"], other.info["runnables"]["sleep"]
    body = json.dumps({"inputs": {"seconds": 1}})
    for request in (
        'POST /v1/runnables HTTP/1.1\r\nContent-Length: 100\r\n\r\n{"na',
        f"POST /v1/runnable/{sleep}/runs?mode=sync HTTP/1.1\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}",
    ):
        with socket.create_connection((urlsplit(url).hostname, urlsplit(url).port)) as client:
            client.sendall(request.encode())
            time.sleep(0.3)  # the gateway is reading the request, or serving it
    wait_for(lambda: statuses(other) == ["completed"])
    assert other.stop() == 0  # once the sync wait has answered
    printed = other.process.stdout.read().strip().splitlines()  # type: ignore[union-attr]
    assert printed[0] == "stopping…", printed
    # at most a line saying which requests are answered first (the half-sent one may still count)
    assert all(re.fullmatch(r"\[stack\] answering \d requests? first, .*", line) for line in printed[1:]), (
        printed
    )


def test_a_request_answered_after_another_began_reads_its_own_request(tmp_path: Path) -> None:
    """A Cotool sync run still going when its wait ends answers 202 with a Location on its own request's
    Host, though another request came in meanwhile."""
    other = start_stack(tmp_path, workers=1, RUNPLANE_SYNC_WAIT_SECONDS="1.5")
    sleep = other.info["runnables"]["sleep"]
    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(other.call, "POST", f"/api/agents/{sleep}/run-sync", {"inputs": {"seconds": 3}})
        time.sleep(0.5)
        assert other.call("GET", "/v1/runs", headers={"Host": "elsewhere.example"}).status_code == 200
        reply = answer.result(30)
    assert reply.status_code == 202, reply.text
    assert reply.headers["Location"].startswith(other.info["api_url"] + "/api/agents/"), reply.headers
    assert other.stop() == 0


# --- a runnable's author ---

AUTHORED = """from runplane.runnables import runnable


@runnable("greet")
def greet(inputs, ctx):
    print("hello from greet")
    ctx.log("greeted", whom="you")
    return {"version": 1}


@runnable("boom")
def boom(inputs, ctx):
    raise ValueError("kaboom")
"""


def start_authoring(tmp_path: Path) -> tuple[Stack, Path]:
    """A stack running the runnable package `authored`, written to a directory on its PYTHONPATH."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "authored.py").write_text(AUTHORED)
    path = os.pathsep.join([stack_environment()["PYTHONPATH"], str(code)])
    other = start_stack(tmp_path / "state", workers=1, RUNPLANE_RUNNABLE_PACKAGES="authored", PYTHONPATH=path)
    return other, code / "authored.py"


def run_sync(stack: Stack, function: str) -> dict:
    reply = stack.start_run(function, mode="sync")
    assert reply.status_code == 200, reply.text
    return assert_run_state(reply.json())


def test_a_runs_output_and_traceback_are_echoed_to_the_terminal_and_kept_in_its_log(tmp_path: Path) -> None:
    other, _ = start_authoring(tmp_path)
    greeted, failed = run_sync(other, "greet"), run_sync(other, "boom")
    logs = other.call("GET", f"/v1/run/{greeted['id']}/logs").json()["lines"]
    assert sorted(line["message"] for line in logs) == ["greeted", "hello from greet"]
    assert other.stop() == 0
    printed = other.process.stdout.read().splitlines()  # type: ignore[union-attr]
    greet, boom = f"[greet {greeted['id'][-8:]}] ", f"[boom {failed['id'][-8:]}] "
    assert {greet + "hello from greet", greet + "greeted"} <= set(printed), printed
    traceback = [line for line in printed if line.startswith(boom)]
    assert traceback[0] == boom + "Traceback (most recent call last):", printed
    assert traceback[-1] == boom + "ValueError: kaboom", printed


def test_an_edited_runnable_runs_its_new_code_on_the_next_run(tmp_path: Path) -> None:
    """Without a restart; code that does not import says why in the terminal, and its runs fail, until it
    is fixed."""
    other, source = start_authoring(tmp_path)
    assert run_sync(other, "greet")["result"]["outputs"] == {"version": 1}
    source.write_text(AUTHORED.replace('"version": 1', '"version": 2'))
    assert run_sync(other, "greet")["result"]["outputs"] == {"version": 2}
    source.write_text(AUTHORED.replace("def greet(inputs, ctx):", "def greet(inputs, ctx)"))
    broken = run_sync(other, "greet")
    assert (broken["status"], broken["result"]["error"]["code"]) == ("failed", "runnable_unavailable")
    source.write_text(AUTHORED.replace('"version": 1', '"version": 3'))
    assert run_sync(other, "greet")["result"]["outputs"] == {"version": 3}
    assert other.stop() == 0
    printed = other.process.stdout.read()  # type: ignore[union-attr]
    assert "[worker] cannot reload authored:\n" in printed
    assert "SyntaxError: expected ':'" in printed
