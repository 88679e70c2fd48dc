"""ris.common.grpc_server: the plumbing both services share, on a real loopback server."""

from __future__ import annotations

import threading

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ris.common.grpc_server import GrpcServer, PortInUseError


def _server() -> GrpcServer:
    return GrpcServer(
        "test.Service",
        lambda server: None,
        workers=4,
        max_message_bytes=1 << 20,
        thread_name_prefix="test",
    )


def _status(port: int, service: str) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status


def test_serves_health_for_the_server_and_its_service_then_stops_once() -> None:
    server = _server()
    port = server.bind("127.0.0.1:0", None)
    server.start()
    serving = health_pb2.HealthCheckResponse.SERVING
    assert _status(port, "") == serving and _status(port, "test.Service") == serving

    assert server.begin_stop()
    late: list[bool] = []
    waiter = threading.Thread(target=lambda: late.append(server.begin_stop()))
    waiter.start()
    server.drain(0.1)
    server.mark_stopped()
    waiter.join(timeout=10)
    assert late == [False], "a second stop waits for the first and does nothing"
    assert server.wait(0)


def test_a_taken_port_is_a_clear_error() -> None:
    first = _server()
    port = first.bind("127.0.0.1:0", None)
    first.start()
    try:
        with pytest.raises(PortInUseError, match=f"127.0.0.1:{port}"):
            _server().bind(f"127.0.0.1:{port}", None)
    finally:
        first.drain(0)
