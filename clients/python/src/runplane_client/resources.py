"""`client.resources`: files of the account that runs use (`ctx.resources`)."""

from __future__ import annotations

import base64
from typing import Any

from runplane_client import endpoints as e
from runplane_client.models import Resource, ResourceCreate, ResourcePage
from runplane_client.pages import Pager
from runplane_client.transport import Transport


def data_uri(data: bytes, content_type: str = "application/octet-stream") -> str:
    """`data` as the `data:` URI a resource's `content` takes."""
    return f"data:{content_type};base64,{base64.b64encode(data).decode()}"


class Resources:
    def __init__(self, transport: Transport):
        self._transport = transport

    def create(
        self,
        name: str,
        data: bytes | None = None,
        *,
        content_type: str = "application/octet-stream",
        uri: str | None = None,
        directory_path: str = "",
        **fields: Any,
    ) -> Resource:
        """A resource of `data` (checked against `content_type`), or of what the service fetches from
        `uri`, in `directory_path` of the run's directory; `fields` are ResourceCreate's others (tags,
        metadata, pinned). Sent again
        only after an answer saying nothing was done (429, 503): a repeat would store a second copy."""
        source = {"uri": uri} if data is None else {"content": data_uri(data, content_type)}
        body = ResourceCreate(name=name, directory_path=directory_path, **source, **fields)
        return Resource.model_validate(self._transport.call(e.CREATE_RESOURCE, body=body))

    def get(self, resource_id: str) -> Resource:
        """The resource, with a presigned `download_url` while it is ready."""
        return Resource.model_validate(self._transport.call(e.GET_RESOURCE, path={"id": resource_id}))

    def list(
        self, *, directory_path: str | None = None, tag: str | None = None, limit: int = 50
    ) -> Pager[Resource]:
        query = {"directory_path": directory_path, "tag": tag, "limit": limit}
        return Pager(
            lambda cursor: ResourcePage.model_validate(
                self._transport.call(e.LIST_RESOURCES, query={**query, "cursor": cursor})
            )
        )

    def delete(self, resource_id: str) -> None:
        self._transport.call(e.DELETE_RESOURCE, path={"id": resource_id})
