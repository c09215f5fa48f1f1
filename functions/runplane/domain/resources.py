"""Resources as stored and served: files of an account that runs use, their bytes in S3. No I/O."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field

from runplane.domain import files
from runplane.domain.models import ResourceFields, Shape, json_number

ResourceStatus = Literal["pending", "ready"]
# How the bytes came: a data URI, a fetched URI, an upload to a presigned POST, a file of a run request.
ResourceSource = Literal["content", "uri", "upload", "file"]
MediaType = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}\s*(;.*)?$"
    ),
    AfterValidator(files.check_media_type),
]


class Resource(Shape):
    """A resource as served. `pending`: created by `POST /v1/resources/uploads`, its bytes not there yet."""

    id: str
    name: str
    directory_path: str
    tags: list[str]
    metadata: dict[str, Any]
    size: int | None = Field(None, description="Bytes; absent while pending")
    content_type: str
    sha256: str | None = Field(
        None, description="Hex SHA-256 of the bytes (absent for uploads: S3 receives them, not Runplane)"
    )
    created_at: datetime
    expires_at: datetime | None = Field(None, description="When it is deleted; absent when pinned")
    pinned: bool
    status: ResourceStatus
    source: ResourceSource
    uri: str | None = Field(None, description="The URI the bytes were fetched from (without its query)")
    problem: str | None = Field(None, description="Why a pending upload's object was refused (and deleted)")
    download_url: str | None = Field(None, description="Presigned GET of the bytes (single reads only)")
    download_url_expires_at: datetime | None = None


class ResourceRecord(BaseModel):
    """A resource as the resources table keeps it: what is served, and where its bytes are."""

    account_id: str
    id: str
    name: str
    directory_path: str
    tags: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)
    size: int | None = None
    content_type: str
    sha256: str | None = None
    created_at: datetime
    expires_at: datetime | None = None
    pinned: bool = False
    status: ResourceStatus = "ready"
    source: ResourceSource
    uri: str | None = None
    problem: str | None = None
    key: str  # the object's key in the payload bucket
    min_bytes: int | None = None  # a pending upload's limits (both its declared size, when it has one)
    max_bytes: int | None = None

    def served(self, **download: Any) -> Resource:
        return Resource(
            **self.model_dump(exclude={"account_id", "key", "min_bytes", "max_bytes"}), **download
        )

    def seen_by_run(self) -> dict[str, Any]:
        """What a run keeps of the resource when it is accepted (its payload): enough to read the bytes
        without reading the resource again."""
        return self.model_dump(
            mode="json",
            include={
                "id",
                "name",
                "directory_path",
                "content_type",
                "size",
                "sha256",
                "metadata",
                "tags",
                "key",
            },
        )


class UploadRequest(ResourceFields):
    """A resource whose bytes the caller sends to S3 itself: `POST /v1/resources/uploads`."""

    content_type: MediaType = Field(files.OCTET_STREAM, description="The media type of the bytes")
    size: json_number(int, ge=0) | None = Field(
        None, description="The exact size in bytes, if known: S3 then accepts only that many"
    )


class UploadForm(BaseModel):
    """An S3 POST policy: send `fields` and then the file (form field `file`, last) as multipart/form-data to
    `url` before `expires_at`; at most `max_bytes`."""

    url: str
    method: Literal["POST"] = "POST"
    fields: dict[str, str]
    expires_at: datetime
    max_bytes: int


class CreatedUpload(BaseModel):
    resource: Resource
    upload: UploadForm


class ResourceQuery(BaseModel):
    directory_path: str | None = None
    tag: str | None = None
