"""The gateway's listening socket and the open-files room its connections need.

Both fail or adapt before anything is served: a port in use is one clear error (ListenError,
which the CLI prints as one line), and a connection cap the process's open-files limit cannot
hold is lowered, with a warning, rather than letting idle HTTP connections take the descriptors
the gRPC services need.
"""

from __future__ import annotations

import errno
import logging
import socket

log = logging.getLogger(__name__)
# Descriptors kept for everything but HTTP connections: gRPC connections of both services,
# Milvus, the model, logs. The HTTP cap is lowered rather than eat into these.
RESERVED_FDS = 512
MIN_CONNECTIONS = 16


class ListenError(ValueError):
    """The HTTP address cannot be listened on (in use, not this machine's, not allowed)."""


def listen_socket(host: str, port: int, backlog: int) -> socket.socket:
    """A bound, listening, non-blocking TCP socket; ListenError names the address and why."""
    where = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as error:
        raise ListenError(f"HTTP address {where}: {error.strerror}") from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError as error:
        sock.close()
        reason = {
            errno.EADDRINUSE: "is in use (pick another port)",
            errno.EADDRNOTAVAIL: "is not an address of this machine",
            errno.EACCES: "needs privileges (ports below 1024)",
        }.get(error.errno or 0, f"cannot be listened on: {error.strerror}")
        raise ListenError(f"HTTP address {where} {reason}") from None
    sock.setblocking(False)
    return sock


def fit_open_files(max_connections: int) -> int:
    """Raise the soft RLIMIT_NOFILE (up to the hard limit) so ``max_connections`` HTTP
    connections fit beside RESERVED_FDS; returns the cap that fits (lower, and warned, when
    the hard limit is too low)."""
    try:
        import resource
    except ImportError:  # not on this platform (Windows): nothing to raise
        return max_connections
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = max_connections + RESERVED_FDS
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as error:
            log.warning("cannot raise the open-files limit to %d: %s", target, error)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return max_connections
    fitted = max(MIN_CONNECTIONS, soft - RESERVED_FDS)
    log.warning(
        "HTTP connections capped at %d, not %d: the open-files limit is %d (raise `ulimit -n`)",
        fitted,
        max_connections,
        soft,
    )
    return fitted
