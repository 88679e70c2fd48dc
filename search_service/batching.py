"""Cutting images into embedder calls that fit every message limit, for Ingest and for Search.

A group holds at most ``max_images`` images and about ``target_bytes`` bytes of them; an image
larger than the target goes alone. An image that could never fit one embedder message (over
``max_item_bytes``: the smaller of this service's and the embedder's message limits, less
framing) is handed back to fail alone with RESOURCE_EXHAUSTED, so no limit fails an image that
is valid on its own, nor its neighbours. The embedder's limit is the one it reports in its
ModelInfo (``max_request_bytes``), so the two services cannot disagree about it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from ris.search.config import SearchConfig
from ris.search.embedder_client import ModelRef

T = TypeVar("T")
# Protobuf framing of one ImageInput inside an EmbedRequest (field tags, length prefixes).
IMAGE_OVERHEAD = 16
# The rest of one EmbedRequest (model name, framing), with room to spare.
MESSAGE_OVERHEAD = 4096


@dataclass(frozen=True)
class EmbedLimits:
    """How many images, and how many bytes of them, one embedder call may carry."""

    max_images: int  # images per call
    target_bytes: int  # image bytes per call aimed for (a larger image goes alone)
    max_item_bytes: int  # the largest image that fits one call at all
    limit_name: str  # the setting that bounds max_item_bytes, for error messages

    @classmethod
    def for_model(cls, model: ModelRef, config: SearchConfig, max_images: int) -> EmbedLimits:
        """Limits for calls to the embedder serving ``model`` (its reported limits win)."""
        hard, name = config.max_message_bytes, "the search service's max_message_bytes"
        if model.max_request_bytes and model.max_request_bytes < hard:
            hard, name = model.max_request_bytes, "the embedder's max_message_bytes"
        if model.max_images_per_request:
            max_images = min(max_images, model.max_images_per_request)
        max_item = max(1, hard - MESSAGE_OVERHEAD - IMAGE_OVERHEAD)
        target = min(config.embed_batch_bytes, hard - MESSAGE_OVERHEAD)
        return cls(max(1, max_images), target, max_item, f"{name} = {hard} bytes")

    def too_big(self, size: int) -> str | None:
        """Why an image of ``size`` bytes can never be embedded, or None when it can."""
        if size <= self.max_item_bytes:
            return None
        return (
            f"image is {size} bytes; the most one embedder call can carry is "
            f"{self.max_item_bytes} bytes ({self.limit_name})"
        )


class Grouper(Generic[T]):
    """Pulls items from a stream and hands them out in groups that fit ``limits``.

    ``oversize(item, reason)`` is called for each item that fits no group (it is skipped).
    ``rest()`` yields what was not handed out yet, for reporting when the work stops early.
    """

    def __init__(
        self,
        items: Iterable[T],
        size_of: Callable[[T], int],
        limits: EmbedLimits,
        oversize: Callable[[T, str], None],
    ) -> None:
        self._items = iter(items)
        self._size_of = size_of
        self.limits = limits
        self._oversize = oversize
        self._carried: list[T] = []  # the item that ended the previous group

    def take(self) -> list[T]:
        """The next group; empty when the stream is exhausted."""
        group: list[T] = []
        total = 0
        while len(group) < self.limits.max_images:
            if self._carried:
                item = self._carried.pop()
            else:
                try:
                    item = next(self._items)
                except StopIteration:
                    break
            size = self._size_of(item)
            reason = self.limits.too_big(size)
            if reason is not None:
                self._oversize(item, reason)
                continue
            cost = size + IMAGE_OVERHEAD
            if group and total + cost > self.limits.target_bytes:
                self._carried.append(item)
                break
            group.append(item)
            total += cost
        return group

    def groups(self) -> Iterator[list[T]]:
        while group := self.take():
            yield group

    def rest(self) -> Iterator[T]:
        while self._carried:
            yield self._carried.pop()
        yield from self._items


def split(
    items: Sequence[T], size_of: Callable[[T], int], limits: EmbedLimits
) -> tuple[list[list[T]], list[tuple[T, str]]]:
    """(groups, oversize items with the reason) for a list known in full (a Search's queries)."""
    oversize: list[tuple[T, str]] = []
    grouper = Grouper(items, size_of, limits, lambda item, why: oversize.append((item, why)))
    return list(grouper.groups()), oversize
