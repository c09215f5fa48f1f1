"""A typed, synchronous client of Runplane's native API (docs/client.md)."""

from runplane_client.client import Runplane
from runplane_client.config import ConfigurationError
from runplane_client.errors import (
    ApiConnectionError,
    Conflict,
    Forbidden,
    InsufficientCredits,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    RunplaneError,
    ServerError,
    ServiceUnavailable,
    Unauthorized,
    UnsupportedMediaType,
    WaitTimeout,
)
from runplane_client.models import (
    LogLine,
    Resource,
    RunEvent,
    Runnable,
    RunReference,
    RunState,
    RunStatus,
)
from runplane_client.transport import RetryPolicy
from runplane_client.version import __version__

__all__ = [
    "ApiConnectionError",
    "ConfigurationError",
    "Conflict",
    "Forbidden",
    "InsufficientCredits",
    "InvalidRequest",
    "LogLine",
    "MethodNotAllowed",
    "NotFound",
    "PayloadTooLarge",
    "RateLimited",
    "Resource",
    "RetryPolicy",
    "RunEvent",
    "RunReference",
    "RunState",
    "RunStatus",
    "Runnable",
    "Runplane",
    "RunplaneError",
    "ServerError",
    "ServiceUnavailable",
    "Unauthorized",
    "UnsupportedMediaType",
    "WaitTimeout",
    "__version__",
]
