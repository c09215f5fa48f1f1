"""Build the Lambda asset without Docker: manylinux wheels for the runtime's Python and architecture, the
`runplane` package without its local-only parts (the embedded stack and the CLI), any runnable packages
placed beside it in functions/, and nothing the functions never read.

The AWS SDK is the runtime's: boto3, botocore and what only they need (s3transfer, python-dateutil, six)
are left out, however a dependency pulls them in (aws-xray-sdk requires botocore), so the functions always
import the boto3 and botocore that AWS ships together in the runtime; a bundled botocore would shadow the
runtime's under the runtime's boto3. Why not a pinned pair of our own: docs/performance.md, "Lambda bundle".

    python -m infra.bundle [--target build/lambda]
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from dataclasses import dataclass
from importlib import metadata
from io import BytesIO
from pathlib import Path

try:
    from packaging.requirements import Requirement
    from packaging.version import Version
except ImportError:  # packaging comes with the dev tools; pip, which the build runs anyway, carries a copy
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "functions"))

from runplane import definitions as defs  # noqa: E402

# The runtime's SDK. A package only these need is left out with them; one that other packages need as
# well (jmespath, urllib3) is bundled, in a version the SDK's own requirements accept.
PROVIDED_BY_RUNTIME = frozenset({"boto3", "botocore", "s3transfer"})
LOCAL_ONLY = ("local", "cli.py", "cli_runs.py", "cli_output.py")  # the local stack and the CLI
# Read by no one at run time: test suites and benchmarks inside packages, typing stubs and markers, the C
# source of a compiled extension, console scripts (their shebang names the build machine's interpreter),
# and pip's bookkeeping in *.dist-info (RECORD is read only by `importlib.metadata.files()` and `pip
# uninstall`). METADATA and entry points stay: jsonschema and attrs read their version from them, pydantic
# and wrapt look up entry points.
UNUSED_DIRS = ("tests", "benchmarks")
UNUSED_FILES = (
    "*.pyi",
    "py.typed",
    "*.c",
    "*.dist-info/RECORD",
    "*.dist-info/INSTALLER",
    "*.dist-info/REQUESTED",
)


@dataclass(frozen=True)
class Platform:
    """What the wheels are chosen for: a manylinux platform tag and the interpreter's X.Y version."""

    tag: str
    python: str

    @property
    def machine(self) -> str:
        return self.tag.split("_", 1)[1]  # manylinux2014_aarch64 -> aarch64

    def pip_options(self) -> list[str]:
        return [
            "--platform", self.tag, "--implementation", "cp", "--python-version", self.python,
            "--only-binary=:all:",
        ]  # fmt: skip

    def markers(self, extra: str = "") -> dict[str, str]:
        """The environment markers of this platform (pip evaluates them for the machine it runs on)."""
        return {
            "python_version": self.python,
            "python_full_version": f"{self.python}.0",
            "implementation_name": "cpython",
            "platform_python_implementation": "CPython",
            "os_name": "posix",
            "sys_platform": "linux",
            "platform_system": "Linux",
            "platform_machine": self.machine,
            "extra": extra,
        }


LAMBDA = Platform("manylinux2014_aarch64", defs.LAMBDA_PYTHON)


def host_platform() -> Platform:
    """This Linux machine's architecture and Python: the same asset, importable here (the tests run it)."""
    return Platform(f"manylinux2014_{platform.machine()}", f"{sys.version_info[0]}.{sys.version_info[1]}")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def runtime_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(d) for d in project["dependencies"]]


@dataclass(frozen=True)
class Dist:
    name: str
    version: str
    requires: tuple[Requirement, ...]


def resolve(requirements: list[Requirement], target: Platform) -> dict[str, Dist]:
    """What pip would install for the platform, without installing anything: name -> distribution."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        subprocess.run(
            [
                sys.executable, "-m", "pip", "install", "--quiet", "--dry-run", "--ignore-installed",
                "--report", str(report), *target.pip_options(), *map(str, requirements),
            ],
            check=True,
        )  # fmt: skip
        installs = json.loads(report.read_text())["install"]
    return {
        canonical(m["name"]): Dist(
            canonical(m["name"]), m["version"], tuple(Requirement(r) for r in m.get("requires_dist") or ())
        )
        for m in (i["metadata"] for i in installs)
    }


def select(resolved: dict[str, Dist], requirements: list[Requirement], target: Platform) -> list[Dist]:
    """The distributions the requirements need on the platform, except the runtime's SDK and whatever
    only the SDK needs: the requirements' dependency graph walked without entering a provided package."""

    def applies(requirement: Requirement, extras: frozenset[str]) -> bool:
        marker = requirement.marker
        return marker is None or any(marker.evaluate(target.markers(e)) for e in ("", *extras))

    wanted = [(canonical(r.name), frozenset(r.extras)) for r in requirements if applies(r, frozenset())]
    seen: set[tuple[str, frozenset[str]]] = set()
    chosen: dict[str, Dist] = {}
    while wanted:
        name, extras = wanted.pop()
        if name in PROVIDED_BY_RUNTIME or (name, extras) in seen:
            continue
        seen.add((name, extras))
        if name not in resolved:
            raise RuntimeError(f"{name} is required on {target.tag} but pip did not resolve it")
        chosen[name] = resolved[name]
        wanted += [
            (canonical(r.name), frozenset(r.extras)) for r in chosen[name].requires if applies(r, extras)
        ]
    return sorted(chosen.values(), key=lambda d: d.name)


def build(target: Path, for_platform: Platform = LAMBDA) -> dict[str, int]:
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    requirements = runtime_requirements()
    bundled = select(resolve(requirements, for_platform), requirements, for_platform)
    subprocess.run(
        [
            sys.executable, "-m", "pip", "install", "--quiet", "--no-compile", "--no-deps",
            *for_platform.pip_options(), "--target", str(target), *(f"{d.name}=={d.version}" for d in bundled),
        ],
        check=True,
    )  # fmt: skip
    prune(target)
    for package in sorted(p.parent for p in (ROOT / "functions").glob("*/__init__.py")):
        # runplane without its local-only parts, and any runnable packages placed beside it
        local_only = LOCAL_ONLY if package.name == "runplane" else ()
        shutil.copytree(
            package, target / package.name, ignore=shutil.ignore_patterns("__pycache__", *local_only)
        )
    check_sdk(target)
    return sizes(target)


def prune(target: Path) -> None:
    """Remove from the installed wheels what nothing reads at run time (see UNUSED_DIRS, UNUSED_FILES)."""
    shutil.rmtree(target / "bin", ignore_errors=True)
    for path in sorted(target.rglob("*"), reverse=True):  # a directory's contents before the directory
        if path.is_dir() and (path.name in UNUSED_DIRS or path.name.endswith("-stubs")):
            shutil.rmtree(path)
        elif path.is_file() and any(path.match(pattern) for pattern in UNUSED_FILES):
            path.unlink()


def check_sdk(target: Path) -> None:
    """Refuse an asset that holds a botocore its boto3 does not accept, or a botocore without a boto3: the
    functions would import that botocore under whichever boto3 comes first on sys.path."""
    found = {canonical(d.metadata["Name"]): d for d in metadata.distributions(path=[str(target)])}
    if "botocore" not in found:
        return
    botocore = Version(found["botocore"].version)
    boto3 = found.get("boto3")
    accepted = [
        r.specifier
        for r in map(Requirement, (boto3.requires or []) if boto3 else [])
        if canonical(r.name) == "botocore" and r.marker is None
    ]
    if not accepted or botocore not in accepted[0]:
        wants = (
            f"boto3 {boto3.version} requires botocore{accepted[0] if accepted else ''}"
            if boto3
            else "no boto3"
        )
        raise RuntimeError(f"{target} holds botocore {botocore} but {wants}")


def sizes(target: Path) -> dict[str, int]:
    files = [p for p in target.rglob("*") if p.is_file()]
    archive = BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
        for path in files:
            zipped.write(path, path.relative_to(target))
    return {
        "files": len(files),
        "unzipped_bytes": sum(p.stat().st_size for p in files),
        "zipped_bytes": archive.tell(),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", type=Path, default=ROOT / "build" / "lambda")
    args = parser.parse_args()
    measured = build(args.target)
    print(
        f"{args.target}: {measured['files']} files, {measured['unzipped_bytes'] / 1e6:.1f} MB unzipped, "
        f"{measured['zipped_bytes'] / 1e6:.1f} MB zipped ({LAMBDA.machine}, Python {LAMBDA.python}; "
        "boto3 and botocore: the runtime's)"
    )


if __name__ == "__main__":
    main()
