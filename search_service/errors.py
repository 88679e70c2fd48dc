"""Typed failures of the search service; the servicer maps each to one gRPC status code."""

from __future__ import annotations

import grpc


class SearchError(Exception):
    """Base class: a request failed for a reason the caller should see."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL


class InvalidArgument(SearchError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(SearchError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(SearchError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(SearchError):
    """E.g. the embedder serves another model than the one that filled the collection."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class Unavailable(SearchError):
    """The embedder or Milvus cannot be reached; retrying later may work."""

    code = grpc.StatusCode.UNAVAILABLE


class ResourceExhausted(SearchError):
    """The embedder is full (its queue or its RPC limit); back off and retry."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class CallOver(SearchError):
    """The caller cancelled, or its deadline passed: the work for it stops."""

    code = grpc.StatusCode.CANCELLED


class DeadlineExceeded(SearchError):
    """The caller's deadline passed while a dependency worked for it (no retry elsewhere)."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED
