"""The gRPC plumbing both services share: one server with health, reflection, binding, draining.

Each service builds its own servicer and clients; this class owns the parts that must behave
the same in both: message limits, the worker pool and admission (a bounded queue, then
RESOURCE_EXHAUSTED; health and reflection exempt: admission.py), interceptors, health status,
bind errors, and a stop that drains in-flight calls exactly once however many callers ask.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ris.common.admission import AdmissionInterceptor, AdmissionLimits
from ris.common.tls import add_port

log = logging.getLogger(__name__)
HANDLER_EXIT_S = 3.0  # after the grace period: how long cancelled handlers get to return


class PortInUseError(OSError):
    """The configured address could not be bound."""


class GrpcServer:
    """A grpc.Server serving one service plus health checking and reflection."""

    def __init__(
        self,
        service_name: str,
        register: Callable[[grpc.Server], None],
        *,
        workers: int,
        max_message_bytes: int,
        thread_name_prefix: str,
        interceptors: Sequence[grpc.ServerInterceptor] = (),
        admission: AdmissionLimits | None = None,
    ) -> None:
        """``interceptors`` run before admission (so a refused token does not queue);
        ``admission`` defaults to ``workers`` slots and the default queue."""
        self.service_name = service_name
        self.admission = admission or AdmissionLimits(workers=workers)
        threads = self.admission.threads
        self._admission = AdmissionInterceptor(self.admission)
        self._server = grpc.server(
            futures.ThreadPoolExecutor(threads, thread_name_prefix=thread_name_prefix),
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
                ("grpc.so_reuseport", 0),  # a second server on the same port must fail to bind
            ],
            # Only a last-resort bound on memory under a flood: admission sheds long before.
            maximum_concurrent_rpcs=4 * threads,
            interceptors=[*interceptors, self._admission],
        )
        register(self._server)
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        reflection.enable_server_reflection(
            (service_name, health.SERVICE_NAME, reflection.SERVICE_NAME), self._server
        )
        self._stopped = threading.Event()
        self._stop_lock = threading.Lock()
        self._stopping = False

    def bind(self, address: str, credentials: grpc.ServerCredentials | None) -> int:
        """Bind (TLS when credentials are given); the port, or PortInUseError."""
        try:
            port = add_port(self._server, address, credentials)
        except (RuntimeError, ValueError) as exc:
            raise PortInUseError(f"cannot bind {address}: {exc}") from exc
        if not port:
            raise PortInUseError(f"cannot bind {address}")
        return port

    def start(self) -> None:
        self._server.start()
        for name in ("", self.service_name):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    def begin_stop(self) -> bool:
        """True for the one caller that should stop; later callers wait for it and get False."""
        with self._stop_lock:
            if self._stopping:
                self._stopped.wait()
                return False
            self._stopping = True
            return True

    def drain(self, grace: float) -> None:
        """NOT_SERVING for health probes, refuse new calls, let running ones finish (``grace``
        s, then gRPC cancels them), then wait up to HANDLER_EXIT_S for their handlers to
        return, so that the caller can close what they use (a Milvus client mid-upsert)."""
        self.health.enter_graceful_shutdown()
        self._server.stop(grace).wait()
        if not self._admission.wait_idle(HANDLER_EXIT_S):
            log.warning(
                "%s: %d handlers still running %.1f s after the grace period; closing anyway",
                self.service_name,
                self._admission.running,
                HANDLER_EXIT_S,
            )

    def mark_stopped(self) -> None:
        self._stopped.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the stop has finished; True when it has."""
        return self._stopped.wait(timeout)
