"""HTTP/JSON in front of a running search service: `ris gateway --http-port 8080`.

Every request becomes the matching gRPC call to the service (``--address``, like every client
command), with the caller's ``Authorization: Bearer <token>`` header passed on as gRPC metadata:
the service checks tokens, scopes and limits exactly as for gRPC callers, and its status codes
come back as HTTP statuses with a JSON body ``{"error": {"code": 3, "status":
"INVALID_ARGUMENT", "message": "..."}}``. Bodies and results use the protobuf JSON mapping of
``ris.v1`` (field names as in search.proto; image bytes base64), so a result is the gRPC one.

    GET  /                                 a search page (pick or drop a photo, or type text)
    GET  /v1/collections                   ListCollections
    GET  /v1/collections/{name}            DescribeCollection
    POST /v1/collections/{name}:search     Search: a JSON SearchRequest (collection from the
                                           path), or raw image bytes (Content-Type image/* or
                                           application/octet-stream) with ?top_k=&min_score=&label=
    GET  /v1/collections/{name}/items/{id}:image   GetItemImage: the item's image, read by the
                                           service inside its allowed roots only

The gateway never adds a token of its own (it would lend its rights to anyone who can reach
it), binds 127.0.0.1 unless told otherwise, and refuses bodies over ``--max-body-bytes``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import threading
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from ris.api import search_pb2, search_pb2_grpc
from ris.client.channel import open_channel
from ris.client.config import ClientConfig
from ris.common.status import status_int

log = logging.getLogger(__name__)
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
IMAGE_TYPES = ("image/", "application/octet-stream")
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


class GatewayError(Exception):
    """A request the gateway answers itself, with a gRPC code (before or without a call)."""

    def __init__(self, code: grpc.StatusCode, message: str, http_status: int = 0) -> None:
        super().__init__(message)
        self.code = code
        self.http_status = http_status or HTTP_STATUS.get(code, 500)


def error_body(code: grpc.StatusCode, message: str) -> dict[str, object]:
    return {"error": {"code": status_int(code), "status": code.name, "message": message}}


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
            json_format.Parse(body or b"{}", request)
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


class Gateway:
    """The HTTP server and its channel to the search service; ``start()`` serves in a thread."""

    def __init__(
        self,
        config: ClientConfig,
        host: str = "127.0.0.1",
        port: int = 0,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        self.config = config
        self.max_body_bytes = max_body_bytes
        self._channel = open_channel(config)
        self.stub = search_pb2_grpc.SearchServiceStub(self._channel)
        gateway = self

        class Handler(_Handler):
            owner = gateway

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def start(self) -> Gateway:
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._channel.close()

    def call(self, method: Callable[..., Any], request: Message, authorization: str) -> Any:
        metadata = (("authorization", authorization),) if authorization else ()
        return method(request, timeout=self.config.timeout, metadata=metadata)


class _Handler(BaseHTTPRequestHandler):
    owner: Gateway
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        log.info("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._answer(self._get)

    def do_POST(self) -> None:
        self._answer(self._post)

    def _get(self, path: str) -> Message | Raw:
        if path in ("/", "/index.html"):
            return Raw(page_html(), "text/html; charset=utf-8")
        if path == "/v1/collections":
            return self._call(self.owner.stub.ListCollections, search_pb2.ListCollectionsRequest())
        if path.endswith(":image"):
            name, item_id = _item(path, ":image")
            request = search_pb2.GetItemImageRequest(collection=name, id=item_id)
            image = self._call(self.owner.stub.GetItemImage, request)
            return Raw(image.data, image.content_type)
        name = _collection(path, "")
        return self._call(
            self.owner.stub.DescribeCollection, search_pb2.DescribeCollectionRequest(name=name)
        )

    def _post(self, path: str) -> Message:
        name = _collection(path, ":search")
        body = self._body()
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        request = search_request(name, content_type, body, query)
        return self._call(self.owner.stub.Search, request)

    def _body(self) -> bytes:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise GatewayError(grpc.StatusCode.INVALID_ARGUMENT, "bad Content-Length") from None
        if length > self.owner.max_body_bytes:
            message = f"body of {length} bytes over the limit of {self.owner.max_body_bytes}"
            raise GatewayError(grpc.StatusCode.RESOURCE_EXHAUSTED, message, http_status=413)
        return self.rfile.read(length) if length > 0 else b""

    def _call(self, method: Callable[..., Any], request: Message) -> Message:
        result: Message = self.owner.call(method, request, self.headers.get("Authorization") or "")
        return result

    def _answer(self, handle: Callable[[str], Message | Raw]) -> None:
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        try:
            result = handle(path)
            status, payload = 200, result if isinstance(result, Raw) else to_json(result)
        except GatewayError as error:
            status, payload = error.http_status, error_body(error.code, str(error))
            self.close_connection = True  # a body may be left unread: no keep-alive after it
        except grpc.RpcError as error:
            code = error.code() if callable(getattr(error, "code", None)) else None
            code = code or grpc.StatusCode.UNKNOWN
            details = error.details() if callable(getattr(error, "details", None)) else ""
            status, payload = HTTP_STATUS.get(code, 500), error_body(code, details or str(code))
        raw = payload if isinstance(payload, Raw) else Raw(json.dumps(payload).encode())
        self.send_response(status)
        self.send_header("Content-Type", raw.content_type)
        self.send_header("Content-Length", str(len(raw.data)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Cache-Control", "no-store")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(raw.data)


@dataclasses.dataclass(frozen=True)
class Raw:
    """A response body other than a JSON message: the page, or an item's image."""

    data: bytes
    content_type: str = "application/json"


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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--http-port", type=int, default=8080, help="HTTP port (0 = any free)")
    parser.add_argument("--http-host", default="127.0.0.1", help="address to bind")
    parser.add_argument(
        "--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES, help="largest request body"
    )


def run(args: argparse.Namespace, config: ClientConfig) -> int:
    """Serve until Ctrl-C; the token flags are not used (callers send their own)."""
    config = dataclasses.replace(config, token=None)
    gateway = Gateway(config, args.http_host, args.http_port, args.max_body_bytes)
    print(
        f"ris gateway: http://{args.http_host}:{gateway.port}/v1/collections -> "
        f"search service {config.address} (Ctrl-C to stop)",
        flush=True,
    )
    try:
        gateway.server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        gateway.stop()
    return 0
