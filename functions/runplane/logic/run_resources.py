"""The resources a run request names: references checked, inline resources and files created (with ids the
run derives, so a retried creation makes none twice and fetches nothing again), all before the run is
stored. A run's resources form one tree (`directory_path/name`), as its code finds them on disk."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from runplane.domain.errors import InvalidRequest, Issue
from runplane.domain.files import MAX_NAME, FilePart
from runplane.domain.models import ResourceCreate, ResourceReference, RunResource
from runplane.domain.resources import ResourceRecord
from runplane.logic import resources


@dataclass
class Resolved:
    """What the run keeps of its resources (`[{name, resource}]`, each as `seen_by_run`), and the resources
    made for it now (counted once the run is stored, deleted if it is not)."""

    seen: list[dict[str, Any]] = field(default_factory=list)
    made: list[ResourceRecord] = field(default_factory=list)


def resolve(account_id: str, run_id: str, entries: list[RunResource], parts: Sequence[FilePart]) -> Resolved:
    """400 naming every entry that refers to nothing (an unknown id, another account's, an expired one) or
    to an upload not finished, two entries of one name or one local path, and an inline resource or file
    whose bytes are invalid; nothing is created then. One BatchGetItem reads the references and what an
    earlier attempt at this run made."""
    named = [*((entry.name, f"body.resources.{i}.name") for i, entry in enumerate(entries))]
    named += [(part.field, f"body.{part.field}") for part in parts]
    _check_names(named)
    wanted = {
        i: str(entry.resource.id)
        if isinstance(entry.resource, ResourceReference)
        else _made_id(run_id, entry.name)
        for i, entry in enumerate(entries)
    }
    file_ids = [_made_id(run_id, part.field) for part in parts]
    found = resources.found_resources(account_id, [*wanted.values(), *file_ids]) if wanted or parts else {}
    _check_references(entries, wanted, found)
    budget = resources.FetchBudget()
    prepared = {
        i: resources.prepare(entry.resource, f"body.resources.{i}.resource", budget)
        for i, entry in enumerate(entries)
        if isinstance(entry.resource, ResourceCreate) and wanted[i] not in found
    }
    files = {n: resources.prepare_file(part) for n, part in enumerate(parts) if file_ids[n] not in found}
    _check_paths(entries, parts, wanted, file_ids, found, prepared, files)
    resolved = Resolved()
    for i, entry in enumerate(entries):
        if isinstance(entry.resource, ResourceReference):
            record = found[wanted[i]]
        else:
            record = _made(resolved, account_id, prepared.get(i), wanted[i], found)
        resource = record.seen_by_run()
        resource["metadata"] = {**resource["metadata"], **entry.metadata}
        resolved.seen.append({"name": entry.name, "resource": resource})
    for n, part in enumerate(parts):
        record = _made(resolved, account_id, files.get(n), file_ids[n], found)
        resolved.seen.append({"name": part.field, "resource": record.seen_by_run()})
    return resolved


def _made_id(run_id: str, name: str) -> str:
    return resources.run_resource_id(run_id, name)


def _made(
    resolved: Resolved,
    account_id: str,
    prepared: resources.Prepared | None,
    resource_id: str,
    found: dict[str, ResourceRecord],
) -> ResourceRecord:
    """The resource made for the run under `resource_id`: now from `prepared`, or by an earlier attempt at
    this run (found). Either way the run is not stored yet, so it is this attempt's to count once the run
    is, or to delete if the run is refused."""
    if prepared is None:
        record = found[resource_id]
    else:
        record, created = resources.store(account_id, prepared, resource_id)
        if not created:  # a concurrent attempt made it: that one counts it
            return record
    resolved.made.append(record)
    return record


def _check_names(named: list[tuple[str, str]]) -> None:
    seen: set[str] = set()
    for name, where in named:
        if not 1 <= len(name) <= MAX_NAME:
            raise InvalidRequest(
                f"A resource of the run needs a name of 1 to {MAX_NAME} characters",
                "invalid_request",
                [Issue(where, f"must be 1 to {MAX_NAME} characters")],
            )
        if name in seen:
            raise InvalidRequest(
                f"Two resources of the run are named {name!r}",
                "duplicate_resource",
                [Issue(where, "named twice")],
            )
        seen.add(name)


def _check_references(
    entries: list[RunResource], wanted: dict[int, str], found: dict[str, ResourceRecord]
) -> None:
    issues = []
    for i, entry in enumerate(entries):
        if not isinstance(entry.resource, ResourceReference):
            continue
        record = found.get(wanted[i])
        where = f"body.resources.{i}.resource.id"
        if record is None:
            issues.append(Issue(where, f"no resource {wanted[i]} in this account"))
        elif record.status != "ready":
            issues.append(Issue(where, record.problem or "its upload has not arrived"))
    if issues:
        raise InvalidRequest(
            "A resource of the run does not exist or is not ready", "resource_not_found", issues
        )


def _check_paths(
    entries: list[RunResource],
    parts: Sequence[FilePart],
    wanted: dict[int, str],
    file_ids: list[str],
    found: dict[str, ResourceRecord],
    prepared: dict[int, resources.Prepared],
    files: dict[int, resources.Prepared],
) -> None:
    """Every resource at its own local path, none where another's directory is."""
    paths = []  # (path, resource id, where)
    for i in range(len(entries)):
        fields = found[wanted[i]] if wanted[i] in found else prepared[i].fields
        paths.append((_path(fields.directory_path, fields.name), wanted[i], f"body.resources.{i}.resource"))
    for n, part in enumerate(parts):
        fields = found[file_ids[n]] if file_ids[n] in found else files[n].fields
        paths.append((_path(fields.directory_path, fields.name), file_ids[n], f"body.{part.field}"))
    taken = {path for path, _, _ in paths}
    seen: dict[str, str] = {}
    for path, resource_id, where in paths:
        # one resource under two names is at one path twice: the same bytes
        clash = seen.get(path, resource_id) != resource_id or any(o.startswith(f"{path}/") for o in taken)
        if clash:
            raise InvalidRequest(
                f"Two resources of the run would be at {path!r} (or one inside the other)",
                "resource_path_conflict",
                [Issue(where, f"{path} is another resource's path or directory")],
            )
        seen[path] = resource_id


def _path(directory: str, name: str) -> str:
    return f"{directory}/{name}" if directory else name
