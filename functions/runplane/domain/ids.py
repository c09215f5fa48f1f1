"""Identifiers: time-ordered UUIDv7 for new objects, UUIDv5 for runs derived from another id."""

from __future__ import annotations

import hashlib
import os
import time
import uuid

# Producers can compute the run id of an intake message themselves: uuid5(INTAKE_NAMESPACE, message_id).
INTAKE_NAMESPACE = uuid.UUID("5b0a3c8e-2f4d-4e7a-9c61-8d2f0e4b7a15")
CHILD_NAMESPACE = uuid.UUID("5d1c6c3e-7a0b-4d6e-9b8f-2f6a1c0e4b7d")


def new_id(millis: int | None = None) -> str:
    """A UUIDv7 (RFC 9562): sorts by creation time as a string, so listings can be newest first. `millis`:
    the creation time in ms since the epoch, if not now."""
    millis = time.time_ns() // 1_000_000 if millis is None else millis
    value = (millis & ((1 << 48) - 1)) << 80 | int.from_bytes(os.urandom(10)) & ((1 << 80) - 1)
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
    return str(uuid.UUID(int=value))


def intake_run_id(message_id: str) -> str:
    return str(uuid.uuid5(INTAKE_NAMESPACE, message_id))


def batch_run_id(batch_id: str, index: int) -> str:
    """The run of item `index` of an idempotent batch: the same on every retry of the batch."""
    return str(uuid.uuid5(uuid.UUID(batch_id), str(index)))


def child_run_id(parent_run_id: str, sequence: int) -> str:
    """The `sequence`-th child of a run: a retried parent finds the children it already started."""
    return str(uuid.uuid5(CHILD_NAMESPACE, f"{parent_run_id}/{sequence}"))


def derived_id(parent_id: str, name: str) -> str:
    """A UUIDv7 derived from `parent_id` and `name`: the same on every retry, and sorted at the parent's
    creation time when the parent is a UUIDv7 (else at the start of time)."""
    parent = uuid.UUID(parent_id)
    millis = parent.int >> 80 if parent.version == 7 else 0
    digest = int.from_bytes(hashlib.sha256(f"{parent_id}/{name}".encode()).digest()[:10])
    value = millis << 80 | digest & ((1 << 80) - 1)
    value = (value & ~(0xF << 76)) | (0x7 << 76)
    value = (value & ~(0x3 << 62)) | (0x2 << 62)
    return str(uuid.UUID(int=value))
