"""The service's requests as plain functions over the store and the embedder (no gRPC here
beyond the message types), so they read and test without a network in between."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import grpc
import numpy as np

from ris.api import common_pb2, search_pb2
from ris.common.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from ris.common.status import status_int
from ris.search.augmentation import Augmenter
from ris.search.batching import IMAGE_OVERHEAD, MESSAGE_OVERHEAD, EmbedLimits, split
from ris.search.config import SearchConfig
from ris.search.embedder_client import EmbedderClient, ModelRef, check_model
from ris.search.filters import build_filter
from ris.search.indexing import plan_index
from ris.search.metrics import SearchMetrics
from ris.search.near_duplicates import promote
from ris.search.query_expansion import MAX_ALPHA, expand, resolve
from ris.search.query_expansion import METRICS as EXPANSION_METRICS
from ris.search.store import MilvusStore
from ris.search.store_schema import (
    RAW_SUFFIX,
    CollectionMeta,
    Hit,
    validate_name,
    vector_problem,
)

log = logging.getLogger(__name__)
DEFAULT_TOP_K = 10
MAX_TOP_K = 1024
DEFAULT_GET_LIMIT = 100
MAX_GET_LIMIT = 16384
MAX_QUERIES = 256
_METRIC_NAMES = {1: "COSINE", 2: "IP", 3: "L2"}
_METRIC_ENUM = {v: k for k, v in _METRIC_NAMES.items()}


def filter_expr(f: search_pb2.Filter | None) -> str:
    if f is None:
        return ""
    return build_filter(ids=f.ids, labels=f.labels, metadata=dict(f.metadata))


def collection_info(meta: CollectionMeta, count: int) -> search_pb2.CollectionInfo:
    return search_pb2.CollectionInfo(
        name=meta.name,
        count=count,
        dim=meta.dim,
        model_name=meta.model_name,
        model_version=meta.model_version,
        metric=_METRIC_ENUM.get(meta.metric, 0),  # type: ignore[arg-type]
        index_type=meta.index.index_type,
        index_params={
            **{k: str(v) for k, v in meta.index.build_params.items()},
            **meta.index.params,
        },
        description=meta.description,
        augmentation=search_pb2.DatabaseAugmentation(
            enabled=meta.augmented,
            top_n=meta.augment_top_n,
            alpha=meta.augment_alpha if meta.augmented else 0.0,
        ),
    )


def augmentation_settings(
    requested: search_pb2.DatabaseAugmentation | None, metric: str, config: SearchConfig
) -> tuple[int, float]:
    """(top_n, alpha) for a new collection: the request's over the server's defaults. Off for
    L2 (no similarity to weight by): silently when defaulted, INVALID_ARGUMENT when asked."""
    if requested is None:
        top_n = config.augmentation_top_n if metric in EXPANSION_METRICS else 0
        return top_n, config.augmentation_alpha
    if not requested.enabled:
        return 0, config.augmentation_alpha
    if metric not in EXPANSION_METRICS:
        raise InvalidArgument(f"augmentation needs a COSINE or IP collection, not {metric}")
    if not 0 <= requested.top_n <= 64:
        raise InvalidArgument("augmentation.top_n must be 0..64")
    if not (np.isfinite(requested.alpha) and 0 <= requested.alpha <= MAX_ALPHA):
        raise InvalidArgument(f"augmentation.alpha must be 0..{MAX_ALPHA:g}")
    top_n = requested.top_n or config.augmentation_top_n or 3
    return top_n, float(requested.alpha or config.augmentation_alpha)


@dataclass
class Services:
    """What every request needs."""

    config: SearchConfig
    store: MilvusStore
    embedder: EmbedderClient
    metrics: SearchMetrics = field(default_factory=SearchMetrics)
    augmenter: Augmenter = field(init=False)

    def __post_init__(self) -> None:
        self.augmenter = Augmenter(self.store)

    # -- collections -------------------------------------------------------------------------

    def create_collection(
        self, req: search_pb2.CreateCollectionRequest
    ) -> search_pb2.CollectionInfo:
        validate_name(req.name)
        if req.name.endswith(RAW_SUFFIX):  # before exists(): the answer must not reveal a twin
            raise InvalidArgument(f"name: collection names ending in {RAW_SUFFIX!r} are reserved")
        if int(req.metric) not in (0, *_METRIC_NAMES):
            raise InvalidArgument(
                f"metric {int(req.metric)} unknown: use COSINE (1), IP (2) or L2 (3)"
            )
        if self.store.exists(req.name):
            if req.exist_ok:
                return self.describe_collection(req.name)
            raise AlreadyExists(f"collection {req.name!r} already exists")
        metric = _METRIC_NAMES.get(int(req.metric), "COSINE")  # 0 = unset: the default
        plan = plan_index(req.index_type, dict(req.index_params), self.config.default_index_type)
        top_n, alpha = augmentation_settings(
            req.augmentation if req.HasField("augmentation") else None, metric, self.config
        )
        model = self.embedder.model_info(req.model)
        if model.modality == "text":
            raise InvalidArgument(
                f"model {model.name!r} is a text model: a collection holds image embeddings "
                "(text queries use the text model that maps into the image model's space)"
            )
        if plan.index_type.startswith("IVF"):  # validated above; now sized per segment of dim
            plan = plan_index(plan.index_type, dict(req.index_params), plan.index_type, model.dim)
        meta = CollectionMeta(
            name=req.name,
            dim=model.dim,
            metric=metric,
            index=plan,
            model_name=model.name,
            model_version=model.version,
            description=req.description,
            augment_top_n=top_n,
            augment_alpha=alpha,
            visual_dims=model.visual_dims,
        )
        self.store.create_collection(meta)
        return collection_info(self.store.describe(req.name), 0)

    def describe_collection(self, name: str) -> search_pb2.CollectionInfo:
        meta = self.store.describe(name)
        count = self.store.count(name)
        info = collection_info(meta, count)
        info.warnings.extend(self.store.size_warnings(meta, count))
        return info

    def list_collections(self) -> search_pb2.ListCollectionsResponse:
        out = search_pb2.ListCollectionsResponse()
        for name in self.store.list_collections():
            try:
                out.collections.append(self.describe_collection(name))
            except (NotFound, FailedPrecondition):  # dropped meanwhile, or not one of ours
                continue
        return out

    def service_info(self, req: search_pb2.GetServiceInfoRequest) -> search_pb2.ServiceInfo:
        """The limits a client must respect, and the model (geometry) a collection uses."""
        model_name = self.store.describe(req.collection).model_name if req.collection else ""
        try:
            model = self.embedder.describe_model(model_name)
        except Unavailable:  # the limits this service knows alone; no model: asked again later
            model = None
        ref = ModelRef.of(model) if model is not None else ModelRef(model_name, "", 0)
        embed = EmbedLimits.for_model(ref, self.config, MAX_QUERIES)
        # what a client may put in one message: less than the embedder could take, the framing
        # of the client's own message (an IngestRequest / SearchRequest) taken off too
        own = self.config.max_message_bytes - MESSAGE_OVERHEAD - IMAGE_OVERHEAD
        limits = search_pb2.ServiceLimits(
            max_message_bytes=self.config.max_message_bytes,
            max_item_bytes=min(own, embed.max_item_bytes),
            max_queries=MAX_QUERIES,
            max_images_per_embed=embed.max_images,
        )
        return search_pb2.ServiceInfo(limits=limits, model=model)  # model None = unset

    # -- rows --------------------------------------------------------------------------------

    def get(self, req: search_pb2.GetRequest) -> search_pb2.GetResponse:
        # Asking for n ids means wanting all n back: the default limit only caps filter scans.
        limit = req.limit or (min(len(req.ids), MAX_GET_LIMIT) if req.ids else DEFAULT_GET_LIMIT)
        if not 1 <= limit <= MAX_GET_LIMIT:
            raise InvalidArgument(f"limit must be 1..{MAX_GET_LIMIT}")
        meta = self.store.describe(req.collection)
        rows = self.store.get(
            req.collection,
            ids=list(req.ids),
            expr=filter_expr(req.filter),
            limit=limit,
            include_vectors=req.include_vectors and not meta.augmented,
        )
        if req.include_vectors and meta.augmented:  # the embeddings, not the blends
            self.store.fill_raw_vectors(meta, rows)
        return search_pb2.GetResponse(
            items=[
                search_pb2.StoredItem(
                    id=r.id, label=r.label, uri=r.uri, metadata=r.metadata, vector=r.vector or []
                )
                for r in rows
            ]
        )

    def delete(self, req: search_pb2.DeleteRequest) -> search_pb2.DeleteResponse:
        expr = filter_expr(req.filter)
        if not req.ids and not expr:
            raise InvalidArgument("delete needs ids or a non-empty filter")
        meta = self.store.describe(req.collection)
        if meta.augmented:
            return search_pb2.DeleteResponse(
                deleted=self.augmenter.delete(meta, ids=list(req.ids), expr=expr)
            )
        return search_pb2.DeleteResponse(
            deleted=self.store.delete(req.collection, ids=list(req.ids), expr=expr)
        )

    def count(self, req: search_pb2.CountRequest) -> search_pb2.CountResponse:
        self.store.describe(req.collection)
        return search_pb2.CountResponse(
            count=self.store.count(req.collection, filter_expr(req.filter))
        )

    # -- search ------------------------------------------------------------------------------

    def search(self, req: search_pb2.SearchRequest) -> search_pb2.SearchResponse:
        """Resolve every query to a vector (embed / given / stored), then search Milvus: once,
        or with query expansion (the default) a first search for the neighbours, the expanded
        queries' search, whose hits and scores are returned. milvus_seconds covers both. An
        augmented collection is searched in its blends or its raw twin, per query (_space)."""
        top_k = req.top_k or DEFAULT_TOP_K
        if not 1 <= top_k <= MAX_TOP_K:
            raise InvalidArgument(f"top_k must be 1..{MAX_TOP_K}")
        if not req.queries:
            raise InvalidArgument("no queries")
        if len(req.queries) > MAX_QUERIES:
            raise InvalidArgument(f"at most {MAX_QUERIES} queries per call")
        if int(req.space) not in search_pb2.SearchSpace.values():
            names = ", ".join(f"{n} ({v})" for n, v in search_pb2.SearchSpace.items())
            raise InvalidArgument(f"space {int(req.space)} is not one of {names}")
        expansion = resolve(
            req.query_expansion if req.HasField("query_expansion") else None, self.config
        )
        min_score = req.min_score if req.HasField("min_score") else None
        if min_score is not None and not np.isfinite(min_score):
            raise InvalidArgument("min_score must be a finite number")
        meta = self.store.describe(req.collection)
        expr = filter_expr(req.filter)
        response = search_pb2.SearchResponse()
        results = [response.results.add() for _ in req.queries]
        vectors: dict[int, np.ndarray] = {}
        kinds = [q.WhichOneof("kind") for q in req.queries]
        for kind in kinds:
            self.metrics.search_queries.labels(kind or "empty").inc()

        images = [i for i, k in enumerate(kinds) if k == "image"]
        if images:
            start = time.perf_counter()
            model = self.embedder.model_info(meta.model_name)
            check_model(meta.name, meta.model_name, meta.model_version, meta.dim, model)
            # As many embedder calls as its limits need (count and bytes); too big fails alone.
            limits = EmbedLimits.for_model(model, self.config, MAX_QUERIES)
            groups, oversize = split(images, lambda i: len(req.queries[i].image), limits)
            for i, reason in oversize:
                _error(results[i], grpc.StatusCode.RESOURCE_EXHAUSTED, f"query {i}: {reason}")
            for group in groups:
                batch = self.embedder.embed([req.queries[i].image for i in group], meta.model_name)
                check_model(meta.name, meta.model_name, meta.model_version, meta.dim, batch.model)
                for i, outcome in zip(group, batch.results, strict=True):
                    if outcome.vector is None:
                        results[i].error.CopyFrom(
                            common_pb2.ItemError(
                                code=outcome.error_code, message=outcome.error_message
                            )
                        )
                    else:
                        vectors[i] = outcome.vector
            response.embed_seconds = time.perf_counter() - start
            self.metrics.stage_seconds.labels("search", "embed").observe(response.embed_seconds)

        texts = [i for i, k in enumerate(kinds) if k == "text"]
        if texts:
            start = time.perf_counter()
            self._embed_texts(meta, req, texts, results, vectors)
            response.embed_seconds += time.perf_counter() - start

        milvus_start = time.perf_counter()
        ids = {i: req.queries[i].id for i, k in enumerate(kinds) if k == "id"}
        level = self.config.milvus_search_consistency
        found = self._stored_queries(meta, set(ids.values()), level)
        for i, kind in enumerate(kinds):
            query = req.queries[i]
            if kind == "vector":
                if len(query.vector.values) != meta.dim:
                    _error(
                        results[i],
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"vector has {len(query.vector.values)} values, collection dim {meta.dim}",
                    )
                elif problem := vector_problem(query.vector.values, meta.metric):
                    _error(results[i], grpc.StatusCode.INVALID_ARGUMENT, problem)
                else:
                    vectors[i] = np.asarray(query.vector.values, dtype=np.float32)
            elif kind == "id":
                vec = found.get(query.id)
                if vec is None:
                    _error(results[i], grpc.StatusCode.NOT_FOUND, f"no item with id {query.id!r}")
                else:
                    vectors[i] = vec
            elif kind is None:
                _error(results[i], grpc.StatusCode.INVALID_ARGUMENT, "empty query")

        # An id query's own item is never its neighbour (expanding with itself changes
        # nothing); with exclude_self it is not a hit either.
        stored_ids = {i: req.queries[i].id for i in vectors if kinds[i] == "id"}
        selves = stored_ids if req.exclude_self else {}
        for space in (meta, meta.raw()) if meta.augmented else (meta,):
            order = [i for i in sorted(vectors) if _space(meta, kinds[i], req.space) == space]
            if not order:
                continue
            queries = [vectors[i] for i in order]
            if expansion.enabled and meta.metric in EXPANSION_METRICS:
                width = expansion.top_n + (1 if stored_ids else 0)
                first = self.store.search(space, queries, width, expr, consistency=level)
                neighbours = [
                    [h.id for h in row if h.id != stored_ids.get(i)][: expansion.top_n]
                    for i, row in zip(order, first, strict=True)
                ]
                queries = self._expanded(space.name, queries, neighbours, expansion.alpha, level)
            extra = 1 if selves else 0
            depth = top_k + extra
            guarded = [i for i in order if kinds[i] != "text"] if self._guards(space) else []
            if guarded:
                depth = max(depth, self.config.near_duplicate_depth)
            hits = self.store.search(
                space, queries, min(depth, MAX_TOP_K + 1), expr, consistency=level
            )
            if guarded:
                hits = self._near_duplicates_first(space, order, hits, guarded, vectors, level)
            for i, row in zip(order, hits, strict=True):
                if i in selves:
                    row = [h for h in row if h.id != selves[i]]
                row = _finite(row)
                if min_score is not None:  # scores are higher-is-better for every metric
                    row = [h for h in row if h.score >= min_score]
                results[i].hits.extend(_hit(h) for h in row[:top_k])
        response.milvus_seconds = time.perf_counter() - milvus_start
        self.metrics.stage_seconds.labels("search", "milvus").observe(response.milvus_seconds)
        return response

    def _guards(self, space: CollectionMeta) -> bool:
        """Whether searches of ``space`` rank near duplicates first (near_duplicates.py)."""
        return (
            space.visual_dims > 0
            and self.config.near_duplicate_threshold > 0
            and space.metric in EXPANSION_METRICS
        )

    def _near_duplicates_first(
        self,
        space: CollectionMeta,
        order: list[int],
        hits: list[list[Hit]],
        guarded: list[int],
        vectors: Mapping[int, np.ndarray],
        level: str,
    ) -> list[list[Hit]]:
        """Each guarded query's top near_duplicate_depth hits with its near duplicates first,
        by their raw embeddings' visual part (one read for every query of the call)."""
        depth = self.config.near_duplicate_depth
        wanted = set(guarded)
        ids = sorted({h.id for i, row in zip(order, hits, strict=True) if i in wanted
                      for h in row[:depth]})  # fmt: skip
        stored = self.store.vectors(space.raw_name if space.augmented else space.name, ids, level)
        threshold = self.config.near_duplicate_threshold
        return [
            promote(row[:depth], vectors[i], stored, space.visual_dims, threshold) + row[depth:]
            if i in wanted
            else row
            for i, row in zip(order, hits, strict=True)
        ]

    def _stored_queries(
        self, meta: CollectionMeta, ids: set[str], level: str
    ) -> dict[str, np.ndarray]:
        """Id queries' vectors: the items' raw embeddings (an augmented collection's blends are
        what is searched, not what the item looks like)."""
        if not ids:
            return {}
        if meta.augmented:
            raw = self.store.raw_vectors(meta, sorted(ids), level)
            # only items still in the main collection (a raw row can outlive a failed write)
            alive = self.store.get(meta.name, ids=sorted(raw), limit=len(raw), consistency=level)
            live = {r.id for r in alive}
            return {i: v for i, v in raw.items() if i in live}
        rows = self.store.get(
            meta.name, ids=sorted(ids), limit=len(ids), include_vectors=True, consistency=level
        )
        return {r.id: np.asarray(r.vector, dtype=np.float32) for r in rows if r.vector}

    def _expanded(
        self,
        collection: str,
        queries: list[np.ndarray],
        neighbours: list[list[str]],
        alpha: float,
        level: str,
    ) -> list[np.ndarray]:
        """Each query expanded with its neighbours' stored vectors (one Get for all)."""
        wanted = sorted({n for row in neighbours for n in row})
        stored: dict[str, list[float] | None] = {}
        if wanted:
            rows = self.store.get(
                collection, ids=wanted, limit=len(wanted), include_vectors=True, consistency=level
            )
            stored = {r.id: r.vector for r in rows}
        out = []
        for query, row in zip(queries, neighbours, strict=True):
            found = [v for v in (stored.get(n) for n in row) if v is not None]
            out.append(expand(query, found, alpha))
        return out

    def _embed_texts(
        self,
        meta: CollectionMeta,
        req: search_pb2.SearchRequest,
        positions: list[int],
        results: list[search_pb2.QueryResult],
        vectors: dict[int, np.ndarray],
    ) -> None:
        """Text queries through a text model that maps into the collection's image space."""
        text_model = self.embedder.text_model_for(meta.model_name)
        problem = ""
        if text_model is None:
            problem = f"the embedder serves no text model for {meta.model_name or 'this space'}"
        elif text_model.dim != meta.dim:
            problem = (
                f"text model {text_model.name} makes {text_model.dim}-d vectors, not {meta.dim}"
            )
        if text_model is None or problem:
            for i in positions:
                _error(results[i], grpc.StatusCode.FAILED_PRECONDITION, problem)
            return
        per_call = text_model.max_images_per_request or len(positions)  # the embedder's limit
        for start in range(0, len(positions), per_call):
            group = positions[start : start + per_call]
            batch = self.embedder.embed_text([req.queries[i].text for i in group], text_model.name)
            for i, outcome in zip(group, batch.results, strict=True):
                if outcome.vector is None:
                    results[i].error.CopyFrom(
                        common_pb2.ItemError(code=outcome.error_code, message=outcome.error_message)
                    )
                else:
                    vectors[i] = outcome.vector
                    results[i].low_confidence = outcome.low_confidence


def _space(meta: CollectionMeta, kind: str | None, requested: int) -> CollectionMeta:
    """The collection a query searches: an augmented collection's blends, or its raw twin
    (asked for, or by default for text queries: see SearchSpace in search.proto)."""
    if not meta.augmented or requested == search_pb2.SEARCH_SPACE_AUGMENTED:
        return meta
    if requested == search_pb2.SEARCH_SPACE_RAW or kind == "text":
        return meta.raw()
    return meta


def _finite(row: list[Hit]) -> list[Hit]:
    """The hits with a finite score; a NaN/inf score is a bug upstream, logged, never returned."""
    kept = [h for h in row if math.isfinite(h.score)]
    if len(kept) != len(row):
        log.error("dropped %d hits with non-finite scores", len(row) - len(kept))
    return kept


def _error(result: search_pb2.QueryResult, code: grpc.StatusCode, message: str) -> None:
    result.error.CopyFrom(common_pb2.ItemError(code=status_int(code), message=message))


def _hit(h: Hit) -> search_pb2.Hit:
    hit = search_pb2.Hit(
        id=h.id,
        score=h.score + 0.0,
        label=h.label,
        uri=h.uri,
        metadata=h.metadata,
        near_duplicate=h.near_duplicate,
    )
    if h.visual_score is not None:
        hit.visual_score = h.visual_score
    return hit
