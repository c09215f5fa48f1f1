"""Outbound HTTP to caller-chosen URLs (callbacks, http runnables, resources' files): SSRF-safe, bounded
in time and size.

`check_destination` is the policy: https only, no credentials in the URL, and every address the host
resolves to must be publicly routable. `post` and `fetch` (a GET) check again on every attempt, then send
through requests-hardened, which resolves once more, refuses a non-public answer itself, pins the
connection to the address it checked (a second DNS answer cannot win) and never follows redirects. A 2xx
answer to a POST of type application/x-ndjson can be read a line at a time as it arrives, under the same
limits.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar
from urllib.parse import urlsplit

MAX_RESPONSE_BYTES = 64 * 1024
USER_AGENT = "Runplane-Webhooks/1.0"
FETCH_USER_AGENT = "Runplane/1.0"
NDJSON = "application/x-ndjson"
READ_BYTES = 65536  # at most, per read of the response

# Takes one line of a streamed answer (without its newline) as soon as it is complete; True: stop reading.
LineReader = Callable[[bytes], bool]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

T = TypeVar("T")

# Ranges named in refusals; anything else that is not globally routable is refused too.
_NAMED_NETWORKS = (
    ("NAT64", ipaddress.ip_network("64:ff9b::/96")),
    ("NAT64", ipaddress.ip_network("64:ff9b:1::/48")),
    ("6to4", ipaddress.ip_network("2002::/16")),
    ("6to4 relay", ipaddress.ip_network("192.88.99.0/24")),
    ("Teredo", ipaddress.ip_network("2001::/32")),
    ("carrier-grade NAT", ipaddress.ip_network("100.64.0.0/10")),
)


class ForbiddenDestination(ValueError):
    """The URL may not be called; the message says why."""


class UnresolvableHost(ForbiddenDestination):
    """The URL's host does not resolve (now): it cannot be checked, so it is not called either."""


def address_problem(ip: IPAddress, *, allow_loopback: bool) -> str | None:
    """Why Runplane will not connect to `ip`, or None when it may."""
    if ip.is_loopback:
        return None if allow_loopback else "loopback"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return "IPv4-mapped IPv6"
    for name, network in _NAMED_NETWORKS:
        if ip in network:
            return name
    checks = (
        ("unspecified", ip.is_unspecified),
        ("link-local, which includes the instance metadata service", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
        ("not globally routable", not ip.is_global),
    )
    return next((name for name, matched in checks if matched), None)


def check_destination(url: str, *, allow_loopback: bool) -> None:
    """Raise ForbiddenDestination unless `url` may receive a callback now."""
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:
        raise ForbiddenDestination("credentials in the URL are not allowed")
    if parts.scheme not in ("https", "http"):
        raise ForbiddenDestination("must be an https URL")
    host = parts.hostname
    if not host:
        raise ForbiddenDestination("the URL has no host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as error:
        raise ForbiddenDestination(f"invalid port: {error}") from None
    addresses = resolve(host, port)
    for ip in addresses:
        problem = address_problem(ip, allow_loopback=allow_loopback)
        if problem:
            raise ForbiddenDestination(f"{host} resolves to {ip}, a {problem} address")
    if parts.scheme == "http" and not all(ip.is_loopback for ip in addresses):
        raise ForbiddenDestination("must be an https URL (http is allowed only to loopback in local mode)")


def resolve(host: str, port: int) -> list[IPAddress]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise UnresolvableHost(f"{host} does not resolve") from None
    except UnicodeError:
        raise ForbiddenDestination(f"{host} is not a valid host name") from None
    addresses = {ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos}
    if not addresses:
        raise UnresolvableHost(f"{host} does not resolve")
    return sorted(addresses, key=str)


@dataclass(frozen=True)
class Reply:
    """What one POST came to: a status (with the headers that steer retries) or an error."""

    status_code: int | None
    latency_ms: int
    error: str | None = None
    retry_after: str | None = None
    abort: bool = False  # the receiver answered `webhook-delivery: abort`
    body: bytes = b""  # at most `max_response_bytes` of it (streamed: empty, its lines were read)
    too_large: bool = False  # the body went on beyond that
    streamed: bool = False  # the body's lines went to `on_line`


@dataclass(frozen=True)
class Fetched:
    """What one GET came to: the body (all of it, at most `max_bytes`) and its media type, or why not."""

    status_code: int | None
    # The response's Content-Type as sent (its parameters, a charset, with it); None when absent.
    content_type: str | None
    body: bytes = b""
    # Why there is no body, a sentence: forbidden destination: ..., timed out after N s, connection
    # failed: X, answered HTTP 404, larger than N bytes, redirects are not followed (answered 301 to L).
    error: str | None = None
    too_large: bool = False  # the body is longer than `max_bytes` (and was not read beyond that)


def post(
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    allow_loopback: bool,
    connect_timeout: float,
    total_timeout: float,
    max_response_bytes: int = MAX_RESPONSE_BYTES,
    on_line: LineReader | None = None,
) -> Reply:
    """POST once, within `total_timeout` from the first byte sent to the last read (DNS aside).

    With `on_line`, a 2xx answer of type application/x-ndjson is read as it arrives: each line goes to
    `on_line` (the last one may lack its newline) until it returns True or the body ends, the time and
    size limits counting the whole stream. Never raises for the receiver's behaviour or the caller's
    input: it is all in the Reply.
    """
    started = time.monotonic()

    def read(response: Any, expired: threading.Event) -> Reply:
        streamed = on_line is not None and 200 <= response.status_code < 300 and _is_ndjson(response)
        received, too_large = _read_bounded(
            response, max_response_bytes, on_line if streamed else None, expired
        )
        return Reply(
            response.status_code,
            0,
            retry_after=response.headers.get("Retry-After"),
            abort=response.headers.get("webhook-delivery", "").strip().lower() == "abort",
            body=received,
            too_large=too_large,
            streamed=streamed,
        )

    reply, error = _send(
        "POST",
        url,
        read,
        data=body,
        headers=headers,
        user_agent=USER_AGENT,
        allow_loopback=allow_loopback,
        connect_timeout=connect_timeout,
        total_timeout=total_timeout,
    )
    latency_ms = round((time.monotonic() - started) * 1000)
    return Reply(None, latency_ms, error) if reply is None else replace(reply, latency_ms=latency_ms)


def fetch(
    url: str, *, allow_loopback: bool, connect_timeout: float, total_timeout: float, max_bytes: int
) -> Fetched:
    """GET `url` once under `post`'s destination policy and time limit (DNS aside): a 2xx body of at
    most `max_bytes`, or an error. A redirect is not followed but reported (with its Location); any other
    non-2xx answer is an error too, and so is a body longer than `max_bytes`, which is not read beyond
    that (nor at all when its Content-Length says so). Never raises for the server's behaviour or the
    caller's input: it is all in the Fetched.
    """

    def read(response: Any, expired: threading.Event) -> Fetched:
        status, content_type = response.status_code, response.headers.get("Content-Type") or None
        location = response.headers.get("Location")
        if 300 <= status < 400 and location:
            where = location.split("?", 1)[0].split("#", 1)[0]  # a query may hold credentials
            return Fetched(
                status, content_type, error=f"redirects are not followed (answered {status} to {where})"
            )
        if not 200 <= status < 300:
            return Fetched(status, content_type, error=f"answered HTTP {status}")
        too_large = Fetched(status, content_type, error=f"larger than {max_bytes} bytes", too_large=True)
        if _declared_length(response) > max_bytes:
            return too_large
        received, over = _read_bounded(response, max_bytes, None, expired)
        return too_large if over else Fetched(status, content_type, received)

    # identity: the bytes stored are the resource's own, and its Content-Length can be checked up front
    fetched, error = _send(
        "GET",
        url,
        read,
        headers={"Accept-Encoding": "identity"},
        user_agent=FETCH_USER_AGENT,
        allow_loopback=allow_loopback,
        connect_timeout=connect_timeout,
        total_timeout=total_timeout,
    )
    return Fetched(None, None, error=error) if fetched is None else fetched


def _send(
    method: str,
    url: str,
    read: Callable[[Any, threading.Event], T],
    *,
    data: bytes | None = None,
    headers: dict[str, str],
    user_agent: str,
    allow_loopback: bool,
    connect_timeout: float,
    total_timeout: float,
) -> tuple[T, None] | tuple[None, str]:
    """Check `url`, send one request to the address checked (no redirects) and hand the streamed response
    to `read` (with the event set when the deadline cut the connection): `read`'s result, or a sentence
    saying why there is none. `total_timeout` counts from the first byte sent to the last read."""
    import requests
    import urllib3
    from requests_hardened import Config, HTTPSession
    from requests_hardened.ip_filter import InvalidIPAddress

    config = Config(
        ip_filter_enable=True,
        ip_filter_allow_loopback_ips=allow_loopback,
        never_redirect=True,
        default_timeout=(connect_timeout, total_timeout),
        user_agent_override=user_agent,
    )
    timed_out = f"timed out after {total_timeout:g} s"
    sockets: list[socket.socket] = []
    expired = threading.Event()
    watchdog = threading.Timer(total_timeout, _shut, args=(sockets, expired))
    try:
        check_destination(url, allow_loopback=allow_loopback)
        with HTTPSession(config) as session:
            session.trust_env = False  # no proxies from the environment: they would bypass the pinning
            for scheme in ("http://", "https://"):
                session.mount(scheme, _guarded_adapter(scheme == "https://", allow_loopback, sockets))
            watchdog.start()
            response = session.request(
                method,
                url,
                data=data,
                headers=headers,
                timeout=(connect_timeout, total_timeout),
                allow_redirects=False,
                stream=True,
            )
            with response:
                result = read(response, expired)
    except ForbiddenDestination as error:
        return None, f"forbidden destination: {error}"
    except InvalidIPAddress as error:
        return None, f"forbidden destination: resolved to {error}"
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as error:
        if expired.is_set() or isinstance(error, requests.Timeout | urllib3.exceptions.TimeoutError):
            return None, timed_out
        return None, f"connection failed: {type(error).__name__}"
    except (ValueError, UnicodeError) as error:  # e.g. a header value http.client refuses
        return None, f"invalid request: {type(error).__name__}: {error}"
    finally:
        watchdog.cancel()
    if expired.is_set():  # the body was cut off by the deadline
        return None, timed_out
    return result, None


def _shut(sockets: list[socket.socket], expired: threading.Event) -> None:
    """The attempt's deadline: cut its connections, which ends any read in progress at once."""
    expired.set()
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _media_type(response: Any) -> str | None:
    """The Content-Type's media type, lower-cased, without parameters; None when there is none."""
    return response.headers.get("Content-Type", "").split(";")[0].strip().lower() or None


def _is_ndjson(response: Any) -> bool:
    return _media_type(response) == NDJSON


def _declared_length(response: Any) -> int:
    """The Content-Length the response declares, or -1 when it declares none (or nonsense)."""
    try:
        return int(response.headers.get("Content-Length", "-1"))
    except ValueError:
        return -1


def _read_bounded(
    response: Any, limit: int, on_line: LineReader | None, expired: threading.Event
) -> tuple[bytes, bool]:
    """The body's first `limit` bytes, and whether there was more (which is not read). Each read returns
    what has arrived (decoded), so with `on_line` every complete line is passed on at once (and a last
    line without a newline at the end, unless the deadline cut it off)."""
    received = bytearray()
    total = 0
    while chunk := response.raw.read1(READ_BYTES, decode_content=True):
        total += len(chunk)
        received += chunk
        if total > limit:
            return (b"" if on_line else bytes(received[:limit])), True
        if on_line is not None and b"\n" in chunk:
            *lines, rest = received.split(b"\n")
            received = bytearray(rest)
            if any(on_line(bytes(line)) for line in lines):
                return b"", False
    if on_line is None:
        return bytes(received), False
    if received and not expired.is_set():
        on_line(bytes(received))
    return b"", False


def _guarded_adapter(https: bool, allow_loopback: bool, sockets: list[socket.socket]) -> Any:
    """requests-hardened's adapter (pinning, no redirects), with Runplane's policy applied to the pinned
    address too and every socket it opens registered for the deadline."""
    from requests_hardened.ip_filter import InvalidIPAddress
    from requests_hardened.ip_filter_adapter import IPFilterAdapter
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    class Registered(HTTPConnection):
        def _new_conn(self) -> socket.socket:
            sock = super()._new_conn()
            sockets.append(sock)
            return sock

    class RegisteredTLS(HTTPSConnection):
        def _new_conn(self) -> socket.socket:
            sock = super()._new_conn()
            sockets.append(sock)
            return sock

    class Pool(HTTPConnectionPool):
        ConnectionCls = Registered

    class PoolTLS(HTTPSConnectionPool):
        ConnectionCls = RegisteredTLS

    class GuardedAdapter(IPFilterAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = {"http": Pool, "https": PoolTLS}

        def build_connection_pool_key_attributes(self, request: Any, verify: Any, cert: Any = None) -> Any:
            host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
            pinned = ipaddress.ip_address(host_params["host"].strip("[]"))
            if address_problem(pinned, allow_loopback=allow_loopback):
                raise InvalidIPAddress(pinned)
            return host_params, pool_kwargs

    return GuardedAdapter(is_https_proto=https, allow_loopback=allow_loopback)
