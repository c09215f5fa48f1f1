"""Wiring: the adapters every logic function works with, built once per process from settings."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from runplane.adapters.accounts import AccountStore
from runplane.adapters.blobs import Blobs
from runplane.adapters.concurrency import ConcurrencyStore
from runplane.adapters.deliveries import DeliveryStore
from runplane.adapters.keys import KeyStore
from runplane.adapters.presigner import Presigner
from runplane.adapters.queues import Queues
from runplane.adapters.resources import ResourceStore
from runplane.adapters.run_events import RunEventStore
from runplane.adapters.runnables import RunnableStore
from runplane.adapters.runs import RunStore
from runplane.settings import Settings, get_settings


@dataclass(frozen=True)
class Services:
    settings: Settings
    runs: RunStore
    runnables: RunnableStore
    keys: KeyStore
    queues: Queues
    blobs: Blobs
    deliveries: DeliveryStore
    accounts: AccountStore
    concurrency: ConcurrencyStore
    events: RunEventStore
    resources: ResourceStore
    presigner: Presigner


@cache
def services() -> Services:
    settings = get_settings()
    return Services(
        settings=settings,
        runs=RunStore(settings.runs_table),
        runnables=RunnableStore(settings.runnables_table),
        keys=KeyStore(settings.keys_table),
        queues=Queues(
            settings.dispatch_queue_url,
            settings.intake_dlq_url,
            settings.callbacks_queue_url,
            settings.callbacks_dlq_url,
        ),
        blobs=Blobs(settings.payload_bucket),
        deliveries=DeliveryStore(settings.callbacks_table),
        accounts=AccountStore(settings.accounts_table),
        concurrency=ConcurrencyStore(settings.concurrency_table),
        events=RunEventStore(settings.events_table),
        resources=ResourceStore(settings.resources_table),
        presigner=Presigner(settings.payload_bucket, settings.presign_role_arn),
    )


def reset() -> None:
    """Forget settings and adapters (tests and local mode change the environment)."""
    get_settings.cache_clear()
    services.cache_clear()
