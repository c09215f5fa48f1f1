"""Build the Lambda asset without Docker: manylinux arm64 wheels for the runtime's Python, the `runplane`
package without its local-only parts (the embedded stack and the CLI), and any runnable packages placed
beside it in functions/.

    python -m infra.bundle [--target build/lambda]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tomllib
import zipfile
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "functions"))

from runplane import definitions as defs  # noqa: E402

PLATFORM = "manylinux2014_aarch64"
# The Lambda runtime provides boto3 and botocore; bundling them would only add 20 MB.
PROVIDED_BY_RUNTIME = {"boto3", "botocore"}
LOCAL_ONLY = ("local", "cli.py")


def runtime_requirements() -> list[str]:
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return [
        d
        for d in dependencies
        if d.split(">")[0].split("=")[0].split("<")[0].strip() not in PROVIDED_BY_RUNTIME
    ]


def build(target: Path) -> dict[str, int]:
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    subprocess.run(
        [
            sys.executable, "-m", "pip", "install", "--quiet", "--no-compile",
            "--platform", PLATFORM, "--implementation", "cp", "--python-version", defs.LAMBDA_PYTHON,
            "--only-binary=:all:", "--target", str(target), *runtime_requirements(),
        ],
        check=True,
    )  # fmt: skip
    for package in sorted(p.parent for p in (ROOT / "functions").glob("*/__init__.py")):
        # runplane without its local-only parts, and any runnable packages placed beside it
        local_only = LOCAL_ONLY if package.name == "runplane" else ()
        shutil.copytree(
            package, target / package.name, ignore=shutil.ignore_patterns("__pycache__", *local_only)
        )
    for cache in target.rglob("__pycache__"):
        shutil.rmtree(cache)
    return sizes(target)


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
        f"{measured['zipped_bytes'] / 1e6:.1f} MB zipped (arm64, Python {defs.LAMBDA_PYTHON})"
    )


if __name__ == "__main__":
    main()
