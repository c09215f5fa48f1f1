"""Resources (re-factor dialect): files of the account that runs use, `/v1/resources`."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Body, Query

from runplane.api.common import Dialect, account, refusal
from runplane.api.errors import error_response, json_response
from runplane.api.openapi import errors, no_content, ok
from runplane.api.v1 import Cursor, Limit
from runplane.domain.models import ErrorBody, Page, ResourceCreate
from runplane.domain.resources import CreatedUpload, Resource, ResourceQuery, UploadRequest
from runplane.logic import resources

router = Router()
TAGS = [Dialect.refactor.value]
NO_RESOURCE = (404, "No resource with this id in the caller's account (or it expired)")
BAD_RESOURCE = (
    400,
    "Invalid resource: a name or directory_path that leaves the run's directory, content that is not a "
    "base64 data URI, bytes that are not of the declared media type, a uri that cannot be fetched, or more "
    "bytes than allowed (`issues` names the field)",
)


@router.post(
    "/v1/resources",
    tags=TAGS,
    status_code=201,
    summary="Create a resource",
    description="A file runs can use: `content` (a base64 `data:` URI) is decoded, or `uri` is fetched "
    "once (https, no redirects, bounded in size and time), and the bytes are stored. Runs name it by id "
    "in `resources`. It expires after the deployment's retention unless `pinned`. For files larger than "
    "a request may carry, use `POST /v1/resources/uploads`.",
    responses={201: ok(Resource, "Created"), **errors(ErrorBody, BAD_RESOURCE, 403)},
)
def create_resource(body: Annotated[ResourceCreate, Body()]):
    record = resources.create_resource(account("runs:write"), body)
    return json_response(201, record.served().model_dump_json())


@router.post(
    "/v1/resources/uploads",
    tags=TAGS,
    status_code=201,
    summary="Start an upload",
    description="A pending resource and an S3 POST policy for its bytes: send `upload.fields`, then the "
    "file as the form field `file` (last), as multipart/form-data to `upload.url` before "
    "`upload.expires_at`. S3 takes at most `upload.max_bytes` (exactly `size` when given). The resource "
    "is ready once the object is there: `GET /v1/resources/{id}` says so, and a run may use it then.",
    responses={201: ok(CreatedUpload, "Upload started"), **errors(ErrorBody, BAD_RESOURCE, 403)},
)
def start_upload(body: Annotated[UploadRequest, Body()]):
    created = resources.start_upload(account("runs:write"), body)
    return json_response(201, created.model_dump_json())


@router.route("/v1/resources/uploads", method=["GET", "PUT", "PATCH", "DELETE"], include_in_schema=False)
@refusal
def not_an_upload_method():
    """`uploads` is not a resource id: only POST is served there."""
    response = error_response(405, "Only POST starts an upload; use POST, OPTIONS", "method_not_allowed")
    response.headers["Allow"] = "POST, OPTIONS"
    return response


@router.get(
    "/v1/resources",
    tags=TAGS,
    summary="List resources",
    description="The account's resources, newest first, filtered by `directory_path` (exact) and `tag`. "
    "A page may hold fewer than `limit` and still have a `next_cursor`.",
    responses={200: ok(Page[Resource], "A page of resources"), **errors(ErrorBody, 400, 403)},
)
def list_resources(
    directory_path: Annotated[str | None, Query(max_length=1024)] = None,
    tag: Annotated[str | None, Query(max_length=128)] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[Resource]:
    query = ResourceQuery(directory_path=directory_path, tag=tag)
    return resources.list_resources(account("runs:read"), query, limit, cursor)


@router.get(
    "/v1/resources/<id>",
    tags=TAGS,
    summary="Get a resource",
    description="The resource, with a presigned `download_url` of its bytes while it is ready. A pending "
    "upload becomes ready here once its object arrived (or says in `problem` why it was refused).",
    responses={200: ok(Resource, "The resource"), **errors(ErrorBody, 403, NO_RESOURCE)},
)
def get_resource(id: UUID) -> Resource:
    return resources.get_resource(account("runs:read"), str(id))


@router.delete(
    "/v1/resources/<id>",
    tags=TAGS,
    status_code=204,
    summary="Delete a resource",
    description="Its bytes and record. Runs already accepted that use it can no longer read it.",
    responses={204: no_content("Deleted"), **errors(ErrorBody, 403, NO_RESOURCE)},
)
def delete_resource(id: UUID):
    resources.delete_resource(account("runs:write"), str(id))
    return Response(status_code=204)
