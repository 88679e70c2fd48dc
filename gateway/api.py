"""The HTTP API as an ASGI application over AsyncRisClient: routes, request reading, answers.

Each request becomes one client call (``AsyncRisClient.call``: the client's channel, retries
and timeout) sent with the caller's own ``Authorization`` (``with_authorization``); the gateway
holds no token. gRPC status codes come back as HTTP statuses with a JSON error body. What the
gateway answers itself (bad paths, bodies, headers; being full) is a GatewayError. Messages of
UNAVAILABLE and internal failures are replaced by fixed text (logged in full here): they can
hold the service's internal address.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import logging
import urllib.parse
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from ris.api import search_pb2
from ris.client.aio import AsyncRisClient
from ris.client.config import ClientConfig
from ris.client.errors import RisError
from ris.common.status import status_int
from ris.gateway.settings import HttpSettings

log = logging.getLogger("ris.gateway")
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

IMAGE_TYPES = ("image/", "application/octet-stream")
MAX_AUTHORIZATION_BYTES = 4096  # well inside gRPC's metadata limit (8 KiB for all of it)
HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
# Said instead of the service's text: these can name internal addresses or code.
PUBLIC_MESSAGES = {
    grpc.StatusCode.UNAVAILABLE: "the search service is unavailable; try again shortly",
    grpc.StatusCode.INTERNAL: "internal error in the search service",
    grpc.StatusCode.UNKNOWN: "internal error in the search service",
    grpc.StatusCode.DATA_LOSS: "internal error in the search service",
}


class GatewayError(Exception):
    """A request the gateway answers itself, with a gRPC code (before or without a call)."""

    def __init__(self, code: grpc.StatusCode, message: str, http_status: int = 0) -> None:
        super().__init__(message)
        self.code = code
        self.http_status = http_status or HTTP_STATUS.get(code, 500)


class ClientGone(Exception):
    """The caller closed the connection (or the gateway did, for its timeouts) mid-request."""


@dataclasses.dataclass(frozen=True)
class Raw:
    """A response body other than a JSON message: the page, or an item's image."""

    data: bytes
    content_type: str = "application/json"


@dataclasses.dataclass(frozen=True)
class Answer:
    status: int
    body: Raw
    close: bool = False  # no keep-alive after it (a body may be left unread)


def error_body(code: grpc.StatusCode, message: str) -> dict[str, object]:
    return {"error": {"code": status_int(code), "status": code.name, "message": message}}


def error_answer(code: grpc.StatusCode, message: str, status: int, close: bool) -> Answer:
    data = json.dumps(error_body(code, message)).encode()
    return Answer(status, Raw(data), close)


def to_json(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def search_request(
    name: str, content_type: str, body: bytes, query: dict[str, list[str]]
) -> search_pb2.SearchRequest:
    """The SearchRequest an HTTP search stands for (INVALID_ARGUMENT when it cannot be read)."""
    request = search_pb2.SearchRequest()
    if content_type.startswith(IMAGE_TYPES):
        request.queries.add(image=body)
        try:
            if "top_k" in query:
                request.top_k = int(query["top_k"][-1])
            if "min_score" in query:
                request.min_score = float(query["min_score"][-1])
        except ValueError as error:
            raise GatewayError(grpc.StatusCode.INVALID_ARGUMENT, f"bad query: {error}") from None
        request.filter.labels.extend(query.get("label", []))
    elif content_type.startswith("application/json") or not content_type:
        try:
            json_format.Parse((body or b"{}").decode("utf-8"), request)
        except UnicodeDecodeError as error:
            message = f"body is not UTF-8 JSON: byte {error.start} cannot be decoded"
            raise GatewayError(grpc.StatusCode.INVALID_ARGUMENT, message) from None
        except json_format.ParseError as error:
            message = f"body is not a ris.v1.SearchRequest in JSON: {error}"
            raise GatewayError(grpc.StatusCode.INVALID_ARGUMENT, message) from None
        if request.collection and request.collection != name:
            message = f"body names collection {request.collection!r}, the path {name!r}"
            raise GatewayError(grpc.StatusCode.INVALID_ARGUMENT, message)
    else:
        message = f"Content-Type {content_type!r}: send application/json or image bytes"
        raise GatewayError(grpc.StatusCode.INVALID_ARGUMENT, message)
    request.collection = name
    return request


def authorization(headers: list[tuple[bytes, bytes]]) -> str:
    """The caller's Authorization, as gRPC metadata can carry it (printable ASCII, one header,
    at most MAX_AUTHORIZATION_BYTES); UNAUTHENTICATED otherwise. "" when there is none."""
    values = [value for name, value in headers if name == b"authorization"]
    if not values:
        return ""
    if len(values) > 1:
        raise GatewayError(grpc.StatusCode.UNAUTHENTICATED, "more than one Authorization header")
    value = values[0]
    if len(value) > MAX_AUTHORIZATION_BYTES:
        message = f"Authorization of {len(value)} bytes, over {MAX_AUTHORIZATION_BYTES}"
        raise GatewayError(grpc.StatusCode.UNAUTHENTICATED, message)
    if any(byte < 0x20 or byte > 0x7E for byte in value):
        message = "Authorization must be printable ASCII (Bearer <token>)"
        raise GatewayError(grpc.StatusCode.UNAUTHENTICATED, message)
    return value.decode("ascii")


def check_head_size(scope: Scope, limit: int) -> None:
    """431 for a request line and headers over ``limit`` bytes. (h11 bounds a head that comes
    in pieces; one that arrives whole in a single read is measured here.)"""
    size = len(scope["raw_path"]) + len(scope["query_string"]) + len(scope["method"]) + 12
    size += sum(len(name) + len(value) + 4 for name, value in scope["headers"])
    if size > limit:
        message = f"request line and headers of {size} bytes, over {limit}"
        raise GatewayError(grpc.StatusCode.INVALID_ARGUMENT, message, http_status=431)


def header(headers: list[tuple[bytes, bytes]], name: bytes) -> str:
    return next((v.decode("latin-1") for n, v in headers if n == name), "")


async def read_body(receive: Receive, settings: HttpSettings) -> bytes:
    """The whole body, bounded in size (413) and time (408); ClientGone if the caller left."""
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(settings.body_timeout_s):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientGone
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > settings.max_body_bytes:
                    raise _too_large(size, settings.max_body_bytes)
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(chunks)
    except TimeoutError:
        message_text = f"request body not received within {settings.body_timeout_s:g} s"
        raise GatewayError(grpc.StatusCode.DEADLINE_EXCEEDED, message_text, 408) from None


def _too_large(size: int, limit: int) -> GatewayError:
    message = f"body of {size} bytes over the limit of {limit}"
    return GatewayError(grpc.StatusCode.RESOURCE_EXHAUSTED, message, http_status=413)


class GatewayApi:
    """The ASGI application: opens its AsyncRisClient at startup (lifespan), closes it at
    shutdown; every request is answered (or the caller is gone) and never raises."""

    def __init__(self, config: ClientConfig, settings: HttpSettings) -> None:
        self.config = config
        self.settings = settings
        self._client: AsyncRisClient | None = None
        self._in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            try:
                answer = await self._answer(scope, receive)
            except ClientGone:
                return
            await _send(send, answer)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._client = AsyncRisClient(self.config)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._client is not None:
                    await self._client.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _answer(self, scope: Scope, receive: Receive) -> Answer:
        if self._in_flight >= self.settings.max_requests:
            message = f"the gateway has {self._in_flight} requests in flight; retry shortly"
            return error_answer(grpc.StatusCode.RESOURCE_EXHAUSTED, message, 429, close=True)
        self._in_flight += 1
        try:
            return await self._route(scope, receive)
        except GatewayError as error:
            return error_answer(error.code, str(error), error.http_status, close=True)
        except RisError as error:
            code, message = _public(error)
            return error_answer(code, message, HTTP_STATUS.get(code, 500), close=False)
        except ClientGone:
            raise
        except Exception:  # a bug: logged with its traceback, answered without it
            log.exception("%s %s failed", scope["method"], scope["path"])
            message = "internal error in the gateway"
            return error_answer(grpc.StatusCode.INTERNAL, message, 500, close=True)
        finally:
            self._in_flight -= 1

    async def _route(self, scope: Scope, receive: Receive) -> Answer:
        method, path = scope["method"], scope["path"]
        check_head_size(scope, self.settings.max_header_bytes)
        if method in ("GET", "HEAD"):
            if path in ("/", "/index.html"):
                return Answer(200, Raw(page_html(), "text/html; charset=utf-8"))
            return await self._get(path, scope["headers"])
        if method == "POST":
            return await self._post(path, scope, receive)
        message = f"method {method} is not served: GET or POST"
        raise GatewayError(grpc.StatusCode.UNIMPLEMENTED, message, http_status=405)

    async def _get(self, path: str, headers: list[tuple[bytes, bytes]]) -> Answer:
        if path == "/v1/collections":
            request = search_pb2.ListCollectionsRequest()
            return _json(await self._call(headers, "ListCollections", request))
        if path.endswith(":image"):
            name, item_id = _item(path, ":image")
            request = search_pb2.GetItemImageRequest(collection=name, id=item_id)
            image: Any = await self._call(headers, "GetItemImage", request)
            return Answer(200, Raw(image.data, image.content_type))
        name = _collection(path, "")
        request = search_pb2.DescribeCollectionRequest(name=name)
        return _json(await self._call(headers, "DescribeCollection", request))

    async def _post(self, path: str, scope: Scope, receive: Receive) -> Answer:
        name = _collection(path, ":search")
        headers = scope["headers"]
        caller = authorization(headers)  # refused before the body is read
        length = header(headers, b"content-length")
        if length and int(length) > self.settings.max_body_bytes:  # h11 checked it is digits
            raise _too_large(int(length), self.settings.max_body_bytes)
        body = await read_body(receive, self.settings)
        query = urllib.parse.parse_qs(scope["query_string"].decode("latin-1"))
        content_type = header(headers, b"content-type").split(";")[0].strip().lower()
        request = search_request(name, content_type, body, query)
        return _json(await self._client_for(caller).call("Search", request))

    async def _call(
        self, headers: list[tuple[bytes, bytes]], method: str, request: Message
    ) -> Message:
        return await self._client_for(authorization(headers)).call(method, request)

    def _client_for(self, caller: str) -> AsyncRisClient:
        assert self._client is not None, "the lifespan startup opens the client"
        return self._client.with_authorization(caller)


def _public(error: RisError) -> tuple[grpc.StatusCode, str]:
    """The code and the message a caller may see (the service's details, but not internals)."""
    code = error.code or grpc.StatusCode.UNKNOWN
    cause = error.__cause__
    details = getattr(cause, "details", None)
    text = (details() if callable(details) else None) or str(error)
    if code in PUBLIC_MESSAGES or error.code is None:
        log.warning("search service call failed: %s: %s", code.name, text)
        return code, PUBLIC_MESSAGES.get(code, "internal error in the search service")
    return code, text


def _json(message: Message) -> Answer:
    return Answer(200, Raw(json.dumps(to_json(message)).encode()))


async def _send(send: Send, answer: Answer) -> None:
    headers = [
        (b"content-type", answer.body.content_type.encode("latin-1")),
        (b"content-length", str(len(answer.body.data)).encode()),
        (b"x-content-type-options", b"nosniff"),
        (b"cache-control", b"no-store"),
    ]
    if answer.status in (429, 503):
        headers.append((b"retry-after", b"1"))
    if answer.close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": answer.body.data})


@functools.cache
def page_html() -> bytes:
    from ris.gateway.page import PAGE

    return PAGE.encode()


def _collection(path: str, suffix: str) -> str:
    """The collection name in /v1/collections/{name}{suffix}; NOT_FOUND for other paths."""
    prefix = "/v1/collections/"
    if path.startswith(prefix) and path.endswith(suffix):
        name = path[len(prefix) : len(path) - len(suffix)]
        if name and "/" not in name:
            return name
    raise GatewayError(grpc.StatusCode.NOT_FOUND, f"no such resource: {path}")


def _item(path: str, suffix: str) -> tuple[str, str]:
    """(collection, id) in /v1/collections/{name}/items/{id}{suffix}; ids may hold slashes."""
    prefix = "/v1/collections/"
    rest = path[len(prefix) : len(path) - len(suffix)] if path.startswith(prefix) else ""
    name, sep, item_id = rest.partition("/items/")
    if not sep or not name or "/" in name or not item_id:
        raise GatewayError(grpc.StatusCode.NOT_FOUND, f"no such resource: {path}")
    return name, item_id
