"""The `runplane` command as a subprocess, with nothing of the developer's own AWS set-up (or on a local
stack), and the check of its one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.local_stack import ROOT, Stack

CLEAN = {
    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    "HOME": "/nonexistent",
    "AWS_CONFIG_FILE": "/dev/null",
    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    "AWS_EC2_METADATA_DISABLED": "true",
    # this checkout's runplane, whichever one the environment has installed
    "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'functions'}",
}


def runplane(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`runplane ARGS` with only `env` of its own, where there is no .runplane/."""
    return runplane_in(Path(__file__).parent, *args, **env)


def runplane_in(folder: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`runplane ARGS` in `folder` (the API commands look for a local stack's .runplane/ from there up),
    with only `env` of its own."""
    return subprocess.run(
        [sys.executable, "-m", "runplane.cli", *args],
        env={**CLEAN, **env},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=folder,
    )


def cli(stack: Stack, *args: str) -> str:
    """What `runplane ARGS --local` prints against `stack`, once it succeeded."""
    answer = runplane(*args, "--local", "--state-dir", str(stack.state_dir))
    assert answer.returncode == 0, answer.stderr
    return answer.stdout


def one_line_error(answer: subprocess.CompletedProcess[str], *words: str) -> str:
    """The line `error: …` the command failed with, alone on stderr and holding each of `words`."""
    assert answer.returncode != 0, answer.stdout
    assert "Traceback" not in answer.stderr, answer.stderr
    lines = answer.stderr.strip().splitlines()
    assert len(lines) == 1, answer.stderr
    assert lines[0].startswith("error: "), lines[0]
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]
