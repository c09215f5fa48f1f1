"""The Lambda asset is built without Docker for arm64, with the runtime dependencies and nothing local-only."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.bundle import build

pytestmark = pytest.mark.infra


def test_the_asset_holds_the_handlers_and_arm64_wheels_but_not_local_mode(tmp_path: Path) -> None:
    measured = build(tmp_path / "lambda")
    asset = tmp_path / "lambda"
    assert (asset / "runplane" / "handlers" / "worker.py").is_file()
    assert not (asset / "runplane" / "local").exists()
    assert not (asset / "runplane" / "cli.py").exists()
    assert not list(asset.rglob("__pycache__"))
    [core] = list((asset / "pydantic_core").glob("_pydantic_core.*.so"))
    assert "aarch64" in core.name
    assert core.read_bytes()[18] == 0xB7  # ELF e_machine EM_AARCH64
    for package in ("aws_lambda_powertools", "pydantic", "jsonschema", "requests", "requests_hardened"):
        assert (asset / package).is_dir(), package
    assert not (asset / "boto3").exists()  # provided by the Lambda runtime
    assert measured["zipped_bytes"] < 50 * 1024 * 1024  # Lambda's limit for a direct zip upload
