"""Every operation the client calls, in one table: the transport sends nothing else, and the drift test
checks each against the served OpenAPI document (path, method, query parameters, headers, bodies)."""

from __future__ import annotations

from dataclasses import dataclass

from runplane_client import models as m


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # with {placeholders}
    query: tuple[str, ...] = ()
    headers: tuple[str, ...] = ()
    body: type[m.Request] | None = None
    answers: tuple[type[m.Answer], ...] = ()  # the models of its 2xx bodies (none: 204)
    # may be sent again after a failure that leaves it unknown whether it was applied (a 5xx, a timeout)
    repeatable: bool = False


def _read(path: str, answer: type[m.Answer], *query: str) -> Endpoint:
    return Endpoint("GET", path, query, answers=(answer,), repeatable=True)


def _delete(path: str) -> Endpoint:
    return Endpoint("DELETE", path, repeatable=True)


LIST = ("limit", "cursor")

# repeatable: a name is the account's once, and a retry answered 409 finds what the lost attempt made
CREATE_RUNNABLE = Endpoint(
    "POST", "/v1/runnables", body=m.RunnableSpec, answers=(m.Runnable,), repeatable=True
)
LIST_RUNNABLES = _read("/v1/runnables", m.RunnablePage, "name", *LIST)
GET_RUNNABLE = _read("/v1/runnable/{id}", m.Runnable)
REPLACE_RUNNABLE = Endpoint(
    "PUT", "/v1/runnable/{id}", body=m.RunnableSpec, answers=(m.Runnable,), repeatable=True
)
DELETE_RUNNABLE = _delete("/v1/runnable/{id}")

START_RUN = Endpoint(
    "POST",
    "/v1/runnable/{id}/runs",
    ("mode",),
    ("Idempotency-Key", "Prefer"),
    m.StartRunRequest,
    (m.RunReference, m.RunState),
    repeatable=True,  # always sent with an Idempotency-Key
)
GET_RUN = _read("/v1/run/{run_id}", m.RunState)
# repeatable: a cancelled run answers its state again
CANCEL_RUN = Endpoint("POST", "/v1/run/{run_id}/cancel", answers=(m.RunState,), repeatable=True)
LIST_RUNS = _read(
    "/v1/runs",
    m.RunPage,
    "status",
    "runnable_id",
    "parent_run_id",
    "created_after",
    "created_before",
    *LIST,
)
RUN_EVENTS = _read("/v1/run/{run_id}/events", m.EventPage, "after", "wait")
RUN_LOGS = _read("/v1/run/{run_id}/logs", m.LogPage, "cursor")

CREATE_RESOURCE = Endpoint("POST", "/v1/resources", body=m.ResourceCreate, answers=(m.Resource,))
LIST_RESOURCES = _read("/v1/resources", m.ResourcePage, "directory_path", "tag", *LIST)
GET_RESOURCE = _read("/v1/resources/{id}", m.Resource)
DELETE_RESOURCE = _delete("/v1/resources/{id}")

CALLBACK_SECRET = _read("/v1/callbacks/secret", m.CallbackSecret)
ROTATE_CALLBACK_SECRET = Endpoint("POST", "/v1/callbacks/secret/rotate", answers=(m.CallbackSecret,))
RUN_CALLBACKS = _read("/v1/run/{run_id}/callbacks", m.CallbackDeliveryPage)
REDELIVER_CALLBACK = Endpoint("POST", "/v1/run/{run_id}/callbacks/redeliver", answers=(m.CallbackDelivery,))

ALL: tuple[Endpoint, ...] = tuple(value for value in dict(globals()).values() if isinstance(value, Endpoint))
