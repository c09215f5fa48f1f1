"""Synthesize the stack once per context, offline, with the source tree as the Lambda asset."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")
os.environ.setdefault("JSII_SILENCE_WARNING_UNTESTED_NODE_VERSION", "1")


def synth(tmp: Path, **context: Any) -> tuple[Any, dict[str, Any]]:
    """(the stack, its template) with cdk.json's context updated by `context`, cdk-nag applied."""
    import aws_cdk as cdk
    from aws_cdk import aws_lambda as lambda_
    from cdk_nag import AwsSolutionsChecks

    from infra.stack import RunplaneStack

    settings = {
        **json.loads((ROOT / "cdk.json").read_text())["context"],
        "aws:cdk:enable-path-metadata": True,
        **context,
    }
    app = cdk.App(context=settings, outdir=str(tmp))
    stack = RunplaneStack(app, "runplane-test", code=lambda_.Code.from_asset(str(ROOT / "functions")))
    cdk.Aspects.of(app).add(AwsSolutionsChecks())
    template = app.synth().get_stack_by_name("runplane-test").template
    return stack, template


API_TYPES = ("http", "rest")  # context `api`; http by default


@pytest.fixture(scope="session")
def synthesize(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[Any, dict[str, Any]]]:
    """(the stack, its template) behind an API of the given type, synthesized once per session."""

    @functools.cache
    def of(api: str) -> tuple[Any, dict[str, Any]]:
        return synth(tmp_path_factory.mktemp(f"cdk.out-{api}"), api=api)

    return of


@pytest.fixture(scope="session")
def synthesized(synthesize: Callable[[str], tuple[Any, dict[str, Any]]]) -> tuple[Any, dict[str, Any]]:
    """The default deployment."""
    return synthesize(API_TYPES[0])


@pytest.fixture(scope="session")
def template(synthesized: tuple[Any, dict[str, Any]]) -> dict[str, Any]:
    return synthesized[1]


def resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}
