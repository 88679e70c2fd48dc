"""The services' edges an unfriendly caller finds (issue 37): the embedder port under `ris serve`
with tokens, GetItemImage's one answer for every refusal, the search service's own embed timeout,
reserved names, out-of-range enums and the pixel limit's message. Real servers on loopback, the
real model, Milvus Lite."""

from __future__ import annotations

import dataclasses
import io
import os
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from embedder_fixtures import TEST_MAX_IMAGE_PIXELS, embed_request
from fuzz_inputs import png_claiming
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image
from search_fixtures import Photo, item_of, running_search, search_client, search_config

from ris.api import embedder_pb2, embedder_pb2_grpc, search_pb2
from ris.common.auth import Scope
from ris.common.errors import PUSHBACK_KEY
from ris.embedder.config import EmbedderConfig
from ris.launcher.serve import ServeOptions, Services, _share_embedder_token
from ris.search.config import SearchConfig
from ris.search.indexing import plan_index
from ris.search.server import _SCOPES as SEARCH_SCOPES
from ris.search.store_schema import CollectionMeta

ROOT = Path(__file__).resolve().parent.parent
READER, WRITER = "reader-token-edges-1", "writer-token-edges-1"


def refused(call, request, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=60, **kwargs)
    return info.value


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


# -- item 6: the embedder port under `ris serve` with tokens ------------------------------------


@pytest.fixture(scope="module")
def served_with_tokens(
    model_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Services]:
    env = {
        "RIS_SEARCH_READ_TOKENS": READER,
        "RIS_SEARCH_WRITE_TOKENS": WRITER,
        "RIS_EMBEDDER_TEXT_MODEL": "off",
        "RIS_EMBEDDER_INTRA_OP_THREADS": "2",
    }
    options = ServeOptions(
        port=0,
        embedder_port=0,
        model=model_path,
        provider="cpu",
        milvus_uri=str(tmp_path_factory.mktemp("served") / "m.db"),
    )
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # what `ris serve` reads, at start only
    try:
        running = Services(options)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    with running:
        yield running


def test_serve_with_tokens_closes_the_embedder_port_and_search_still_works(
    served_with_tokens: Services, photos: list[Photo]
) -> None:
    channel = grpc.insecure_channel(served_with_tokens.embedder_address)
    try:
        embedder = embedder_pb2_grpc.EmbedderStub(channel)
        image = embed_request([photos[0].data])
        for metadata in (None, bearer(READER), bearer(WRITER), bearer("guessed-token-123")):
            for call, request in (
                (embedder.Embed, image),
                (embedder.GetModelInfo, embedder_pb2.GetModelInfoRequest()),
            ):
                error = refused(call, request, metadata=metadata)
                assert error.code() == grpc.StatusCode.UNAUTHENTICATED, (metadata, error)
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10
        )
        assert health.status == health_pb2.HealthCheckResponse.SERVING  # probes stay open
    finally:
        channel.close()

    with search_client(served_with_tokens.address) as search:
        search.CreateCollection(
            search_pb2.CreateCollectionRequest(name="guarded"), metadata=bearer(WRITER), timeout=60
        )
        items = [item_of(p) for p in photos[:3]]
        stored = search.Ingest(
            iter([search_pb2.IngestRequest(collection="guarded", items=items)]),
            metadata=bearer(WRITER),
            timeout=120,
        )
        assert (stored.stored, stored.failed) == (3, 0)
        found = search.Search(
            search_pb2.SearchRequest(
                collection="guarded", queries=[search_pb2.Query(image=photos[1].data)], top_k=1
            ),
            metadata=bearer(READER),
            timeout=120,
        )
        assert found.results[0].hits[0].id == photos[1].id


def test_serve_shares_a_configured_embedder_token_and_leaves_open_setups_open(
    model_path: Path,
) -> None:
    embedder = EmbedderConfig(model_paths=[model_path])
    # no tokens anywhere: nothing changes
    assert _share_embedder_token(embedder, SearchConfig()) == (embedder, SearchConfig())
    # search tokens and a chosen RIS_EMBEDDER_TOKEN: the embedder takes exactly that one
    search = SearchConfig(read_tokens=READER, embedder_token="chosen-embedder-token")
    wired_embedder, wired_search = _share_embedder_token(embedder, search)
    assert wired_embedder.allowed_tokens() == ["chosen-embedder-token"]
    assert wired_search.secrets().embedder_token == "chosen-embedder-token"
    # the embedder's own tokens stay valid beside the internal one the search service sends
    own = dataclasses.replace(embedder, tokens="embedder-own-token-1")
    wired_embedder, wired_search = _share_embedder_token(own, SearchConfig())
    internal = wired_search.secrets().embedder_token
    assert len(internal) >= 32 and internal != "embedder-own-token-1"
    assert wired_embedder.allowed_tokens() == ["embedder-own-token-1", internal]


# -- item 7: GetItemImage serves images only, with one answer for every refusal -----------------


@pytest.fixture(scope="module")
def image_root(tmp_path_factory: pytest.TempPathFactory, photos: list[Photo]) -> Path:
    root = tmp_path_factory.mktemp("image-root")
    (root / "photo.jpg").write_bytes(photos[0].data)
    out = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 30, 30)).save(out, format="PNG")
    (root / "shot.dat").write_bytes(out.getvalue())  # an image whatever its name says
    (root / "notes.txt").write_text("not a picture\n" * 20)
    (root / "fake.jpg").write_bytes(b"this is text named like a photo\n" * 10)
    (root / "folder").mkdir()
    return root


def test_item_images_serve_only_images_and_refuse_all_else_alike(
    embedder_server, image_root: Path, tmp_path: Path, photos: list[Photo]
) -> None:
    uris = {
        "jpeg": image_root / "photo.jpg",
        "png": image_root / "shot.dat",
        "text": image_root / "notes.txt",
        "fake_jpeg": image_root / "fake.jpg",
        "missing": image_root / "gone.jpg",
        "folder": image_root / "folder",
        "outside": ROOT / "README.md",
        "relative": Path("photo.jpg"),
        "remote": Path("https:/example.com/photo.jpg"),
    }
    config = search_config(
        embedder_server.address, str(tmp_path / "images.db"), allowed_roots=[image_root]
    )
    with running_search(config) as server, search_client(server.address) as stub:
        stub.CreateCollection(search_pb2.CreateCollectionRequest(name="pics"), timeout=60)
        items = [
            search_pb2.Item(id=key, image=photos[0].data, display_uri=str(uri))
            for key, uri in uris.items()
        ]
        items.append(search_pb2.Item(id="no_uri", image=photos[0].data))
        response = stub.Ingest(
            iter([search_pb2.IngestRequest(collection="pics", items=items)]), timeout=120
        )
        assert response.stored == len(items)

        def image(item_id: str) -> search_pb2.ItemImage:
            request = search_pb2.GetItemImageRequest(collection="pics", id=item_id)
            return stub.GetItemImage(request, timeout=30)

        jpeg = image("jpeg")
        assert (jpeg.content_type, jpeg.data) == ("image/jpeg", photos[0].data)
        assert image("png").content_type == "image/png"
        answers = set()
        for key in ("text", "fake_jpeg", "missing", "folder", "outside", "relative", "remote"):
            error = refused(
                stub.GetItemImage, search_pb2.GetItemImageRequest(collection="pics", id=key)
            )
            answers.add((error.code(), error.details()))
        error = refused(
            stub.GetItemImage, search_pb2.GetItemImageRequest(collection="pics", id="no_uri")
        )
        answers.add((error.code(), error.details()))
        assert len(answers) == 1, answers
        code, details = answers.pop()
        assert code == grpc.StatusCode.NOT_FOUND and "no image" in details
        unknown = refused(
            stub.GetItemImage, search_pb2.GetItemImageRequest(collection="pics", id="nobody")
        )
        assert unknown.code() == grpc.StatusCode.NOT_FOUND and "nobody" in unknown.details()


# -- item 10: the search service's own embed timeout ---------------------------------------------


def test_own_embed_timeout_is_deadline_exceeded_with_a_retry_hint(
    make_embedder, tmp_path: Path, photos: list[Photo]
) -> None:
    """A search service whose embed_timeout_s (20 ms) is shorter than one ResNet50 pass on
    this CPU: the search is cut short by the service's own timeout, not the caller's (who set
    none), and says so: DEADLINE_EXCEEDED, grpc-retry-pushback-ms."""
    with make_embedder() as slow:
        config = search_config(slow.address, str(tmp_path / "slow.db"), embed_timeout_s=0.02)
        with running_search(config) as server, search_client(server.address) as stub:
            meta = CollectionMeta("slow", 2048, "COSINE", plan_index("FLAT", {}, "AUTOINDEX"))
            server.store.create_collection(meta)
            request = search_pb2.SearchRequest(
                collection="slow", queries=[search_pb2.Query(image=photos[0].data)]
            )
            with pytest.raises(grpc.RpcError) as info:
                stub.Search(request)  # no deadline of its own
            error = info.value
            assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED, error
            assert "embed_timeout_s" in error.details() and "retry in" in error.details()
            hints = [int(v) for k, v in error.trailing_metadata() or () if k == PUSHBACK_KEY]
            assert hints == [1000], error.trailing_metadata()


# -- item 12: reserved names, enums, the pixel limit's message, the scope table -----------------


def test_dropping_an_internal_companion_is_invalid_and_keeps_both(
    search_stub, collection: str
) -> None:
    for name in (f"{collection}__raw", "never_made__raw"):  # an existing twin, and none
        error = refused(search_stub.DropCollection, search_pb2.DropCollectionRequest(name=name))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error.details().startswith("name:") and "reserved" in error.details()
    described = search_stub.DescribeCollection(
        search_pb2.DescribeCollectionRequest(name=collection), timeout=30
    )
    assert described.name == collection


def test_an_unknown_search_space_is_invalid(search_stub, collection: str) -> None:
    vector = search_pb2.Query(vector=search_pb2.Vector(values=[1.0] * 8))
    request = search_pb2.SearchRequest(collection=collection, queries=[vector])
    request.space = 99  # type: ignore[assignment]
    error = refused(search_stub.Search, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "space 99" in error.details() and "SEARCH_SPACE_RAW" in error.details()


def test_a_decompression_bomb_is_refused_against_the_configured_limit(embedder_stub) -> None:
    pillow_limit = 2 * int(Image.MAX_IMAGE_PIXELS or 0)  # where Pillow itself refuses, on open
    response = embedder_stub.Embed(embed_request([png_claiming(20_000, 20_000)]), timeout=30)
    error = response.results[0].error
    assert error.code == 3
    assert f"400000000 pixels > limit {TEST_MAX_IMAGE_PIXELS}" in error.message, error.message
    assert str(pillow_limit) not in error.message


def test_security_docs_list_every_read_method() -> None:
    text = (ROOT / "docs" / "security.md").read_text()
    read_row = next(line for line in text.splitlines() if line.startswith("| read"))
    read_methods = {m.rsplit("/", 1)[1] for m, s in SEARCH_SCOPES.items() if s == Scope.READ}
    assert read_methods and all(f"`{m}`" in read_row for m in read_methods), read_row
