"""Files sent with a run request, stored in S3 under the run as its resources."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import ValidationError

from runplane.domain.errors import InvalidRequest, Issue
from runplane.domain.files import FilePart
from runplane.domain.models import ResourceCreate, RunResource
from runplane.logic.services import services


def store_files(
    account_id: str, run_id: str, files: Sequence[FilePart], beside: list[RunResource]
) -> list[RunResource]:
    """Each file in S3 at `{account}/{run}/files/{n}` (one PutObject each; `n` counts from 0, so no field
    name reaches a key), as the run resource named by its field: what the runnable finds in
    `ctx.resources[field]`. All are checked before the first is stored, and stored before the run is, so a
    run never names a file that is not there (an object left by a run refused afterwards expires with the
    bucket's objects)."""
    names = {resource.name for resource in beside}
    drafts = []
    for file in files:
        if file.field in names:
            raise InvalidRequest(
                f"The file {file.field!r} has the name of another resource of the run",
                "invalid_request",
                [Issue(f"body.{file.field}", "a resource of that name exists")],
            )
        names.add(file.field)
        metadata = {"content_type": file.content_type, "size": len(file.data), "sha256": file.sha256}
        draft = ResourceCreate(name=file.filename, directory_path="files", metadata=metadata)
        try:
            RunResource(name=file.field, resource=draft)
        except ValidationError as error:
            raise InvalidRequest(
                f"The file field {file.field!r} cannot name a resource",
                "validation_error",
                [Issue(f"body.{file.field}", e["msg"]) for e in error.errors()],
            ) from None
        drafts.append(draft)
    stored = []
    for number, (file, draft) in enumerate(zip(files, drafts, strict=True)):
        uri = services().blobs.put_bytes(
            f"{account_id}/{run_id}/files/{number}", file.data, file.content_type
        )
        stored.append(RunResource(name=file.field, resource=draft.model_copy(update={"uri": uri})))
    return stored
