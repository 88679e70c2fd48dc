"""gRPC status codes as the integers the wire carries (ItemError.code, the gateway's JSON).

Pure: imports grpc only, so the client may use it too (ris.common.grpc_server it must not).
"""

from __future__ import annotations

import grpc


def status_int(code: grpc.StatusCode) -> int:
    """The code's number (INVALID_ARGUMENT -> 3), as in ``common_pb2.ItemError.code``."""
    return int(code.value[0])


_NAMES = {status_int(code): code.name for code in grpc.StatusCode}


def status_name(number: int) -> str:
    """The name of a code's number (3 -> INVALID_ARGUMENT); UNKNOWN for one grpc does not know."""
    return _NAMES.get(number, "UNKNOWN")
