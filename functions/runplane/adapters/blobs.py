"""S3: payloads and outcomes too large to keep inline in a DynamoDB item, and the bytes of resources.

Every object carries the expiry tag its lifecycle rule deletes it by (`definitions.EXPIRY_TAG`): `run`
objects go with their run, `resource` objects after the resource retention; pinned resources have none.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import IO, Any
from urllib.parse import quote

from runplane import definitions as defs
from runplane.adapters import aws


@dataclass(frozen=True)
class Head:
    """An object's first bytes, its size and its ETag (what a copy of exactly this object names)."""

    data: bytes
    size: int
    etag: str


def expiry_tagging(expiry: str | None) -> str:
    return f"{defs.EXPIRY_TAG}={quote(expiry)}" if expiry else ""


class Blobs:
    def __init__(self, bucket: str, client: Any = None):
        self.bucket = bucket
        self._client = client

    @property
    def client(self) -> Any:
        return self._client or aws.client("s3")

    def put(self, key: str, text: str) -> str:
        """A run's JSON document, expiring with the run."""
        self.client.put_object(
            Bucket=self.bucket,
            Key=key,
            Body=text.encode(),
            ContentType="application/json",
            Tagging=expiry_tagging("run"),
        )
        return key

    def put_bytes(self, key: str, data: bytes, content_type: str, *, expiry: str | None) -> None:
        """Stores `data` under `key`, tagged to expire by `expiry`'s rule (None: kept until deleted)."""
        extra = {"Tagging": expiry_tagging(expiry)} if expiry else {}
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type, **extra)

    def get(self, key: str) -> str:
        return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read().decode()

    def find(self, key: str) -> str | None:
        """The object's text, or None when there is none."""
        try:
            return self.get(key)
        except self.client.exceptions.NoSuchKey:
            return None

    def stream(self, key: str) -> IO[bytes]:
        """The object's body, to be read as it arrives; FileNotFoundError when there is none."""
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
        except self.client.exceptions.NoSuchKey:
            raise FileNotFoundError(key) from None

    def head(self, key: str, length: int) -> Head | None:
        """The object's first `length` bytes with its size (one ranged GET), or None when it is not there."""
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=key, Range=f"bytes=0-{length - 1}")
        except self.client.exceptions.NoSuchKey:
            return None
        except self.client.exceptions.ClientError as error:
            if error.response.get("Error", {}).get("Code") != "InvalidRange":
                raise
            # an empty object has no first byte to ask for
            return Head(b"", 0, self.client.head_object(Bucket=self.bucket, Key=key)["ETag"])
        data = answer["Body"].read()
        total = answer.get("ContentRange", "").rpartition("/")[2]
        size = int(total) if total.isdigit() else answer.get("ContentLength", len(data))
        return Head(data, size, answer["ETag"])

    def copy(self, source: Head, source_key: str, key: str, content_type: str, *, expiry: str | None) -> bool:
        """Copy the object `source` was read from to `key`, with its media type and expiry tag; False when
        the object changed since (another ETag)."""
        try:
            self.client.copy_object(
                Bucket=self.bucket,
                Key=key,
                CopySource={"Bucket": self.bucket, "Key": source_key},
                CopySourceIfMatch=source.etag,
                MetadataDirective="REPLACE",
                ContentType=content_type,
                TaggingDirective="REPLACE",
                Tagging=expiry_tagging(expiry),
            )
        except self.client.exceptions.ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("PreconditionFailed", "NoSuchKey", "412"):
                return False
            raise
        return True

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=key)
