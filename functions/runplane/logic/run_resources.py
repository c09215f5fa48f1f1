"""The resources a run request names: references checked, inline resources and files created (with ids the
run derives, so a retried creation makes none twice), all before the run is stored."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from runplane.domain.errors import InvalidRequest, Issue
from runplane.domain.files import MAX_NAME, FilePart
from runplane.domain.models import ResourceCreate, ResourceReference, RunResource
from runplane.logic import resources


def resolve(
    account_id: str, run_id: str, entries: list[RunResource], parts: Sequence[FilePart]
) -> list[dict[str, Any]]:
    """What the run keeps of its resources: `[{name, resource}]`, each resource as `seen_by_run`. 400 naming
    every entry that refers to nothing (an unknown id, another account's, an expired one) or to an upload
    not finished, and for an inline resource or file whose bytes are invalid; nothing is created then."""
    _check_names(entries, parts)
    references = {
        i: str(entry.resource.id)
        for i, entry in enumerate(entries)
        if isinstance(entry.resource, ResourceReference)
    }
    found = resources.found_resources(account_id, list(references.values())) if references else {}
    issues = []
    for i, resource_id in references.items():
        record = found.get(resource_id)
        if record is None:
            issues.append(
                Issue(f"body.resources.{i}.resource.id", f"no resource {resource_id} in this account")
            )
        elif record.status != "ready":
            issues.append(
                Issue(f"body.resources.{i}.resource.id", record.problem or "its upload has not arrived")
            )
    if issues:
        raise InvalidRequest(
            "A resource of the run does not exist or is not ready", "resource_not_found", issues
        )
    inline = {
        i: resources.prepare(entry.resource, f"body.resources.{i}.resource")
        for i, entry in enumerate(entries)
        if isinstance(entry.resource, ResourceCreate)
    }
    uploaded = resources.prepare_files(parts)
    seen = []
    for i, entry in enumerate(entries):
        if i in inline:
            record = resources.store(account_id, inline[i], resources.run_resource_id(run_id, entry.name))
        else:
            record = found[references[i]]
        resource = record.seen_by_run()
        resource["metadata"] = {**resource["metadata"], **entry.metadata}
        seen.append({"name": entry.name, "resource": resource})
    for part, prepared in zip(parts, uploaded, strict=True):
        record = resources.store(account_id, prepared, resources.run_resource_id(run_id, part.field))
        seen.append({"name": part.field, "resource": record.seen_by_run()})
    return seen


def _check_names(entries: list[RunResource], parts: Sequence[FilePart]) -> None:
    names: set[str] = set()
    for field, name in [
        *((f"body.resources.{i}.name", entry.name) for i, entry in enumerate(entries)),
        *((f"body.{part.field}", part.field) for part in parts),
    ]:
        if not 1 <= len(name) <= MAX_NAME:
            raise InvalidRequest(
                f"A resource of the run needs a name of 1 to {MAX_NAME} characters",
                "invalid_request",
                [Issue(field, f"must be 1 to {MAX_NAME} characters")],
            )
        if name in names:
            raise InvalidRequest(
                f"Two resources of the run are named {name!r}",
                "duplicate_resource",
                [Issue(field, "named twice")],
            )
        names.add(name)
