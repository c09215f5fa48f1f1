"""Resources: files of an account, their bytes in S3 under `{account}/resources/{id}`, their record in the
resources table. Created from a data URI, a fetched URI, a file of a run request, or an upload the caller
makes to a presigned S3 POST (the resource is `pending` until its object is there and checked)."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit, urlunsplit

from runplane.adapters import outbound
from runplane.adapters.blobs import expiry_tagging
from runplane.adapters.presigner import resource_prefix
from runplane.domain import files
from runplane.domain.errors import InvalidRequest, Issue, NotFound
from runplane.domain.ids import derived_id, new_id
from runplane.domain.models import Page, ResourceCreate, ResourceFields, utcnow
from runplane.domain.resources import (
    CreatedUpload,
    Resource,
    ResourceQuery,
    ResourceRecord,
    ResourceSource,
    UploadForm,
    UploadRequest,
)
from runplane.logic.services import services

logger = logging.getLogger(__name__)


def resource_key(account_id: str, resource_id: str) -> str:
    return f"{resource_prefix(account_id)}{resource_id}"


def upload_key(record: ResourceRecord) -> str:
    """Where an upload's form puts the bytes: beside the resource's key, so a form still valid after the
    resource is ready cannot replace what was checked."""
    return f"{record.key}.upload"


def run_resource_id(run_id: str, name: str) -> str:
    """The id of the resource a run creates under `name`: the same on every retry of its creation."""
    return derived_id(run_id, name)


# --- creating ---


@dataclass(frozen=True)
class Prepared:
    """A resource's bytes, decoded or fetched and checked, not stored yet."""

    fields: ResourceFields
    data: bytes
    content_type: str
    source: ResourceSource
    uri: str | None
    field: str


class FetchBudget:
    """What the `uri`s of one request may take together: the deployment's fetch time and bytes, once (a
    request naming several cannot outlast API Gateway's 29 s or the function's memory)."""

    def __init__(self) -> None:
        settings = services().settings
        self.deadline = time.monotonic() + settings.resource_fetch_seconds
        self.bytes_left = settings.resource_fetch_bytes

    def seconds_left(self) -> float:
        return self.deadline - time.monotonic()


def create_resource(account_id: str, body: ResourceCreate) -> ResourceRecord:
    record, created = store(account_id, prepare(body, "body", FetchBudget()))
    if created:
        count(record)
    return record


def prepare(body: ResourceCreate, field: str, budget: FetchBudget) -> Prepared:
    """Decode `content` or fetch `uri` (within `budget`) and check the bytes against their media type (400
    naming `field`'s part that is wrong); nothing is stored."""
    if body.content is not None:
        content_type, data = _decoded(body.content, f"{field}.content")
        source: ResourceSource = "content"
    else:
        content_type, data = _fetched(body.uri or "", f"{field}.uri", budget)
        source = "uri"
    _check_type(content_type, data, f"{field}.{source}")
    return Prepared(body, data, content_type, source, _without_query(body.uri), field)


def prepare_file(part: files.FilePart) -> Prepared:
    """A file of a run request, to be a resource named by its filename in the directory `files`."""
    field = f"body.{part.field}"
    try:
        draft = ResourceFields(
            name=_basename(part.filename),
            directory_path="files",
            metadata={"field": part.field, "filename": part.filename},
        )
        content_type = files.check_media_type(part.content_type or files.OCTET_STREAM)
    except ValueError as error:  # pydantic's ValidationError is one
        raise InvalidRequest(
            f"The file field {part.field!r} cannot be a resource: {error}",
            "validation_error",
            [Issue(field, str(error))],
        ) from None
    _check_type(content_type, part.data, field)
    return Prepared(draft, part.data, content_type, "file", None, field)


def store(account_id: str, prepared: Prepared, resource_id: str | None = None) -> tuple[ResourceRecord, bool]:
    """The bytes, then the record; with whether this call made it (and should `count` it). With a
    `resource_id` (one a run derives), doing it again returns the resource made the first time."""
    record = _record(
        account_id, prepared.fields, prepared.content_type, prepared.source, resource_id=resource_id
    )
    data = prepared.data
    record = record.model_copy(
        update={"size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "uri": prepared.uri}
    )
    services().blobs.put_bytes(record.key, data, record.content_type, expiry=_expiry(record))
    if services().resources.put(record):
        return record, True
    # made meanwhile, or this put's answer was lost and botocore sent it again
    stored = services().resources.get(account_id, record.id) or record
    return stored, stored.created_at == record.created_at


def discard(records: Sequence[ResourceRecord]) -> None:
    """Delete resources made for a run that was not created: the record first, so a failure leaves at most
    bytes nothing lists (tagged to expire). A record that cannot be deleted fails the request (5xx): its
    retry finds the resource, as made for the same run, and deletes it then."""
    for record in records:
        services().resources.delete(record.account_id, record.id)
        try:
            services().blobs.delete(record.key)
        except Exception:  # it is tagged to expire
            logger.warning("a refused run's resource's bytes not deleted", extra={"resource_id": record.id})


def start_upload(account_id: str, body: UploadRequest) -> CreatedUpload:
    """A pending resource and the S3 POST policy its bytes go to (at most the deployment's limit, or
    exactly the declared `size`). The resource is ready once the object is there (`finish_upload`)."""
    settings = services().settings
    if body.size is not None and body.size > settings.max_resource_bytes:
        raise InvalidRequest(
            f"A resource may be at most {settings.max_resource_bytes} bytes",
            "resource_too_large",
            [Issue("body.size", f"more than {settings.max_resource_bytes}")],
        )
    most = body.size if body.size is not None else settings.max_resource_bytes
    record = _record(account_id, body, body.content_type, "upload").model_copy(
        update={"status": "pending", "min_bytes": body.size or 0, "max_bytes": most}
    )
    seconds = settings.resource_upload_seconds
    form = services().presigner.post_form(
        account_id,
        upload_key(record),
        content_type=record.content_type,
        sizes=(record.min_bytes or 0, most),
        tagging=expiry_tagging("resource"),  # never kept: copied to the resource's key, or it expires
        seconds=seconds,
    )
    services().resources.put(record)
    return CreatedUpload(
        resource=record.served(),
        upload=UploadForm(
            url=form["url"],
            fields=form["fields"],
            expires_at=utcnow() + timedelta(seconds=seconds),
            max_bytes=most,
        ),
    )


def finish_upload(record: ResourceRecord) -> ResourceRecord:
    """`record` made ready if its upload arrived (one ranged GET), checked against its limit and media
    type, and copied (exactly the object checked) to the resource's key; an object that breaks them is
    deleted and the resource stays pending, saying why."""
    if record.status != "pending":
        return record
    blobs, staged = services().blobs, upload_key(record)
    head = blobs.head(staged, files.SNIFF_BYTES)
    if head is None:
        return record
    problem = None
    if not (record.min_bytes or 0) <= head.size <= (record.max_bytes or head.size):
        expected = (
            f"exactly {record.max_bytes}"
            if record.min_bytes == record.max_bytes
            else f"at most {record.max_bytes}"
        )
        problem = f"the upload was {head.size} bytes; {expected} are allowed"
    elif type_problem := files.type_problem(
        record.content_type, head.data, whole=head.size <= len(head.data)
    ):
        problem = f"the upload is not what its media type says: {type_problem}"
    if problem:
        blobs.delete(staged)
        updated = record.model_copy(update={"problem": problem})
    elif not blobs.copy(head, staged, record.key, record.content_type, expiry=_expiry(record)):
        return record  # uploaded again meanwhile: the next read checks the new object
    else:
        updated = record.model_copy(update={"status": "ready", "size": head.size, "problem": None})
    if not services().resources.replace(updated, status="pending"):  # finished meanwhile by another read
        return services().resources.get(record.account_id, record.id) or updated
    if updated.status == "ready":
        count(updated)
        try:
            blobs.delete(staged)
        except Exception:  # it is tagged to expire
            logger.warning("an upload's object not deleted once copied", extra={"resource_id": record.id})
    return updated


# --- reading, listing, deleting ---


def get_resource(account_id: str, resource_id: str) -> Resource:
    """The resource with a presigned GET of its bytes (when ready)."""
    record = finish_upload(_live(account_id, resource_id))
    if record.status != "ready":
        return record.served()
    seconds = services().settings.resource_url_seconds
    return record.served(
        download_url=download_url(record, seconds),
        download_url_expires_at=utcnow() + timedelta(seconds=seconds),
    )


def download_url(record: ResourceRecord | dict, seconds: int) -> str:
    """A presigned GET of the bytes of `record` (a record, or what a run keeps of one)."""
    seen = record if isinstance(record, dict) else record.seen_by_run()
    account_id = seen["key"].split("/", 1)[0]
    return services().presigner.get_url(account_id, seen["key"], seconds, filename=seen["name"])


def list_resources(account_id: str, query: ResourceQuery, limit: int, cursor: str | None) -> Page[Resource]:
    if query.directory_path is not None:  # compared as resources keep it
        try:
            query = query.model_copy(update={"directory_path": files.check_directory(query.directory_path)})
        except ValueError as error:
            raise InvalidRequest(
                f"directory_path {error}", "invalid_request", [Issue("query.directory_path", str(error))]
            ) from None
    records, next_cursor = services().resources.list(
        account_id, query, limit=limit, cursor=cursor, now=utcnow().timestamp()
    )
    return Page(items=[r.served() for r in records], next_cursor=next_cursor)


def delete_resource(account_id: str, resource_id: str) -> None:
    """The bytes first, then the record: a failure in between leaves a resource to delete again, never
    bytes nothing points at. Runs already accepted that use it fail to read it."""
    record = _live(account_id, resource_id)
    services().blobs.delete(record.key)
    services().resources.delete(account_id, resource_id)


def _live(account_id: str, resource_id: str) -> ResourceRecord:
    record = services().resources.get(account_id, resource_id)
    if record is None or _expired(record):
        raise NotFound("Resource", resource_id)
    return record


# --- for runs ---


def found_resources(account_id: str, ids: list[str]) -> dict[str, ResourceRecord]:
    """The account's live resources among `ids` (pending uploads finished where they arrived)."""
    found = services().resources.get_many(account_id, ids)
    return {i: finish_upload(r) for i, r in found.items() if not _expired(r)}


# --- helpers ---


def _record(
    account_id: str,
    fields: ResourceFields,
    content_type: str,
    source: ResourceSource,
    *,
    resource_id: str | None = None,
) -> ResourceRecord:
    now = utcnow()
    resource_id = resource_id or new_id()
    retention = timedelta(days=services().settings.resource_retention_days)
    return ResourceRecord(
        account_id=account_id,
        id=resource_id,
        name=fields.name,
        directory_path=fields.directory_path,
        tags=fields.tags,
        metadata=fields.metadata,
        content_type=content_type,
        created_at=now,
        expires_at=None if fields.pinned else now + retention,
        pinned=fields.pinned,
        source=source,
        key=resource_key(account_id, resource_id),
    )


def _expiry(record: ResourceRecord) -> str | None:
    return None if record.pinned else "resource"


def _expired(record: ResourceRecord, now: datetime | None = None) -> bool:
    return record.expires_at is not None and record.expires_at <= (now or utcnow())


def count(record: ResourceRecord) -> None:
    """Count the resource in its day's usage: after it is stored, so a failure here loses a count (logged),
    never a resource."""
    try:
        services().accounts.count_resource(
            record.account_id, record.created_at.date(), record.size or 0, record.id
        )
    except Exception:
        logger.exception("resource stored but not counted in usage", extra={"resource_id": record.id})


def _check_type(content_type: str, data: bytes, field: str) -> None:
    if problem := files.type_problem(content_type, data, whole=True):
        raise InvalidRequest(
            f"The resource's content is not what its media type says: {problem}",
            "content_type_mismatch",
            [Issue(field, problem)],
        )


def _basename(filename: str) -> str:
    """A file part's name without the folders a browser or an SDK may send with it."""
    return filename.replace("\\", "/").rsplit("/", 1)[-1]


def _without_query(uri: str | None) -> str | None:
    """The URI as kept with the resource: its query and fragment may hold credentials (a signed URL)."""
    if uri is None:
        return None
    parts = urlsplit(uri)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def _decoded(content: str, field: str) -> tuple[str, bytes]:
    try:
        return files.parse_data_uri(content, services().settings.max_resource_bytes)
    except ValueError as error:
        raise InvalidRequest(
            f"content is not a valid data URI: {error}", "invalid_content", [Issue(field, str(error))]
        ) from None


def _fetched(uri: str, field: str, budget: FetchBudget) -> tuple[str, bytes]:
    seconds = budget.seconds_left()
    if seconds <= 0.5 or budget.bytes_left <= 0:
        problem = "the request's other uris took all the time and bytes one request may fetch"
        raise InvalidRequest(f"uri could not be fetched: {problem}", "fetch_failed", [Issue(field, problem)])
    answer = outbound.fetch(
        uri,
        allow_loopback=services().settings.allow_loopback,
        connect_timeout=min(5.0, seconds),
        total_timeout=seconds,
        max_bytes=budget.bytes_left,
    )
    budget.bytes_left -= len(answer.body)
    if answer.error is not None:
        code = "resource_too_large" if answer.too_large else "fetch_failed"
        raise InvalidRequest(f"uri could not be fetched: {answer.error}", code, [Issue(field, answer.error)])
    try:
        content_type = files.check_media_type(answer.content_type or files.OCTET_STREAM)
    except ValueError:
        content_type = files.OCTET_STREAM
    return content_type, answer.body
