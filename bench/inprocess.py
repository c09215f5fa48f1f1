"""The real handlers against moto in this process, for benchmarks that count or time the request path."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
    "POWERTOOLS_METRICS_DISABLED": "true",
    "POWERTOOLS_LOG_LEVEL": "ERROR",
    "RUNPLANE_ALLOW_LOOPBACK": "1",  # receivers run on loopback
}


@contextmanager
def moto_backed(**settings: str) -> Iterator[dict[str, str]]:
    """Every resource provisioned in an in-process moto; `settings` are extra RUNPLANE_* variables."""
    os.environ.update({**ENVIRONMENT, **settings})
    os.environ.pop("AWS_ENDPOINT_URL", None)
    import boto3
    from moto import mock_aws
    from runplane.local import moto_atomic
    from runplane.local.provision import provision
    from runplane.logic import services

    moto_atomic.install()
    with mock_aws():
        created = provision(boto3.session.Session(), "bench")
        os.environ.update(created)
        services.reset()
        yield created
