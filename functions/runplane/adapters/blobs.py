"""S3: payloads and outcomes too large to keep inline in a DynamoDB item, and the files sent with runs."""

from __future__ import annotations

from typing import Any

from runplane.adapters import aws


class Blobs:
    def __init__(self, bucket: str, client: Any = None):
        self._bucket = bucket
        self._client = client

    @property
    def client(self) -> Any:
        return self._client or aws.client("s3")

    def put(self, key: str, text: str) -> str:
        self.client.put_object(
            Bucket=self._bucket, Key=key, Body=text.encode(), ContentType="application/json"
        )
        return key

    def put_bytes(self, key: str, data: bytes, content_type: str) -> str:
        """Stores `data` under `key`; its `s3://` URI."""
        self.client.put_object(Bucket=self._bucket, Key=key, Body=data, ContentType=content_type)
        return f"s3://{self._bucket}/{key}"

    def get(self, key: str) -> str:
        return self.client.get_object(Bucket=self._bucket, Key=key)["Body"].read().decode()

    def find(self, key: str) -> str | None:
        """The object's text, or None when there is none."""
        try:
            return self.get(key)
        except self.client.exceptions.NoSuchKey:
            return None
