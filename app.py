"""The CDK app: `npx cdk synth` / `npx cdk deploy` (or `python app.py` to synthesize). Runs offline:
no AWS calls and no Docker; the Lambda asset is the directory `make build` fills."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "functions"))  # runplane.definitions: the resources' single source

import aws_cdk as cdk  # noqa: E402
from aws_cdk import aws_lambda as lambda_  # noqa: E402
from cdk_nag import AwsSolutionsChecks  # noqa: E402

from infra.stack import RunplaneStack  # noqa: E402

ASSET = ROOT / "build" / "lambda"


def main() -> None:
    if not (ASSET / "runplane").is_dir():
        sys.exit(f"{ASSET} is missing: run `make build` first")
    app = cdk.App(outdir=os.environ.get("CDK_OUTDIR", str(ROOT / "cdk.out")))  # the CLI sets CDK_OUTDIR
    stage = app.node.try_get_context("stage") or "dev"
    RunplaneStack(app, f"runplane-{stage}", code=lambda_.Code.from_asset(str(ASSET)))
    cdk.Aspects.of(app).add(AwsSolutionsChecks(verbose=True))
    app.synth()


if __name__ == "__main__":
    main()
