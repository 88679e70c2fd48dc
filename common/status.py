"""gRPC status codes as the integers the wire carries (ItemError.code, the gateway's JSON).

Pure: imports grpc only, so the client may use it too (ris.common.grpc_server it must not).
"""

from __future__ import annotations

import grpc


def status_int(code: grpc.StatusCode) -> int:
    """The code's number (INVALID_ARGUMENT -> 3), as in ``common_pb2.ItemError.code``."""
    return int(code.value[0])
