"""Text -> image search quality on imagenet-sample (500 photos, one per class).

Indexes the photos (GeM and average pooling, or the server's pooling with --address), then
queries with each class's name and with hand-written descriptions (scripts/data/
text_queries.csv: `eval` rows are reported, `dev` rows were the only ones used to choose the
matching settings). A query hits when its class's photo is among the top k by cosine.
Also reported: the oracle (the class's own classifier row as the query: the best the
projection can do), and how many off-topic texts are flagged low_confidence.

    python scripts/eval_text_search.py --json out/text_search.json
    python scripts/eval_text_search.py --address 127.0.0.1:50051   # through a running embedder
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from ris.embedder.concepts import ConceptBank, ConceptProjector, read_classifier
from ris.embedder.config import EmbedderConfig
from ris.embedder.model_metadata import read_model_metadata
from ris.embedder.preprocessing import prepare
from ris.embedder.runtime import l2_normalise
from ris.embedder.text_encoder import TextEncoder

ROOT = Path(__file__).resolve().parent.parent

DATASET = ROOT.parent / "shared" / "datasets" / "imagenet-sample"
QUERIES = ROOT / "scripts" / "data" / "text_queries.csv"
OFF_TOPIC = (
    "xyzzy plugh",
    "asdf qwerty zxcv",
    "the meaning of life",
    "quarterly tax report deadline",
    "lorem ipsum dolor sit amet",
    "a feeling of nostalgia",
    "democracy",
    "how to install python",
    "blorft",
    "123456",
)
KS = (1, 5, 10)
# A text embedder: texts -> (unit vectors [N, dim], confidence [N], low_confidence [N]).
TextFn = Callable[[list[str]], tuple[np.ndarray, np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Gallery:
    paths: list[Path]
    classes: np.ndarray  # int [N]
    names: list[str]  # class name per image


def load_gallery(dataset: Path, limit: int | None) -> Gallery:
    with (dataset / "labels.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    if limit:
        rows = rows[:: max(1, len(rows) // limit)][:limit]
    return Gallery(
        [dataset / r["path"] for r in rows],
        np.array([int(r["class_index"]) for r in rows]),
        [r["name"].replace("_", " ") for r in rows],
    )


def image_features_direct(
    model: Path, gallery: Gallery, cache_dir: Path | None, threads: int
) -> dict[str, np.ndarray]:
    """gem and avg features (unnormalised) of every photo, cached by model and file list."""
    meta = read_model_metadata(model)
    key = hashlib.sha256((meta.version + "|".join(map(str, gallery.paths))).encode()).hexdigest()
    cache = cache_dir / f"text_eval_{key[:16]}.npz" if cache_dir else None
    if cache and cache.exists():
        with np.load(cache) as z:
            return {k: z[k] for k in z.files}
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    gem, avg = [], []
    for start in range(0, len(gallery.paths), 16):
        batch = np.stack(
            [
                prepare(p.read_bytes(), meta.preprocessing, 10**9)
                for p in gallery.paths[start : start + 16]
            ]
        )
        g, a = session.run(["gem", "embedding"], {"images": batch})
        gem.append(g)
        avg.append(a)
    features = {"gem": np.concatenate(gem), "avg": np.concatenate(avg)}
    if cache:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, gem=features["gem"], avg=features["avg"])
    return features


def direct_text(text_model: Path, image_model: Path, threads: int) -> TextFn:
    """The serving code path (encoder + concept projection), without the network."""
    config = EmbedderConfig(provider="cpu", intra_op_threads=threads)
    encoder = TextEncoder(text_model, config)
    assert encoder.metadata.concepts is not None, "direct mode needs a concepts text model"
    weight, _ = read_classifier(image_model)
    projector = ConceptProjector(ConceptBank.load(encoder.metadata.concepts), weight)

    def embed(texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        out = []
        for text, vector in zip(texts, encoder.encode(texts), strict=True):
            query, match = projector.project(text, vector)
            out.append((query, match.confidence, match.low_confidence))
        return (
            np.stack([o[0] for o in out]),
            np.array([o[1] for o in out]),
            np.array([o[2] for o in out]),
        )

    return embed


def service_mode(address: str, gallery: Gallery) -> tuple[dict[str, np.ndarray], TextFn, str]:
    """Embed photos and texts through a running embedder (its default models and pooling)."""
    import grpc

    from ris.api import embedder_pb2, embedder_pb2_grpc

    channel = grpc.insecure_channel(address, options=[("grpc.max_send_message_length", 1 << 26)])
    stub = embedder_pb2_grpc.EmbedderStub(channel)
    pooling = stub.GetModelInfo(embedder_pb2.GetModelInfoRequest(), timeout=30).default_model
    vectors: list[np.ndarray] = []
    for start in range(0, len(gallery.paths), 16):
        images = [
            embedder_pb2.ImageInput(data=p.read_bytes(), id=str(i))
            for i, p in enumerate(gallery.paths[start : start + 16])
        ]
        reply = stub.Embed(embedder_pb2.EmbedRequest(images=images), timeout=120)
        vectors.extend(np.array(r.embedding, dtype=np.float32) for r in reply.results)

    def embed(texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        out = []
        for start in range(0, len(texts), 16):
            request = embedder_pb2.EmbedTextRequest(texts=texts[start : start + 16])
            out.extend(stub.EmbedText(request, timeout=60).results)
        return (
            np.array([r.embedding for r in out], dtype=np.float32),
            np.array([r.confidence for r in out]),
            np.array([r.low_confidence for r in out]),
        )

    return {pooling.pooling: np.stack(vectors)}, embed, pooling.pooling


def recall(db: np.ndarray, queries: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """recall@k: the target image (row index) ranks within the top k by cosine."""
    scores = queries @ db.T
    own = scores[np.arange(len(targets)), targets]
    ranks = (scores > own[:, None]).sum(1)
    out = {f"recall@{k}": float((ranks < k).mean()) for k in KS}
    out["mrr"] = float((1.0 / (ranks + 1)).mean())
    return out


def read_queries(path: Path, classes: np.ndarray) -> dict[str, list[tuple[str, int]]]:
    """Description queries per split, only for classes that are in the gallery."""
    present = set(classes.tolist())
    out: dict[str, list[tuple[str, int]]] = {"eval": [], "dev": []}
    with path.open() as fh:
        for row in csv.DictReader(fh):
            if int(row["class_index"]) in present:
                out[row["split"]].append((row["query"], int(row["class_index"])))
    return out


def evaluate(
    features: dict[str, np.ndarray],
    embed_text: TextFn,
    gallery: Gallery,
    queries_csv: Path,
    weight: np.ndarray | None,
) -> dict:
    row_of = {int(c): i for i, c in enumerate(gallery.classes)}
    sets = {
        "class names": [(n, int(c)) for n, c in zip(gallery.names, gallery.classes, strict=True)]
    }
    for split, rows in read_queries(queries_csv, gallery.classes).items():
        sets[f"descriptions ({split})"] = rows
    started = time.perf_counter()
    embedded = {name: embed_text([q for q, _ in rows]) for name, rows in sets.items() if rows}
    _, off_conf, off_low = embed_text(list(OFF_TOPIC))
    text_seconds = time.perf_counter() - started
    report: dict = {"images": len(gallery.paths), "poolings": {}}
    for pooling, raw in features.items():
        db = l2_normalise(raw)
        results = {}
        for name, rows in sets.items():
            if not rows:
                continue
            vectors, conf, low = embedded[name]
            targets = np.array([row_of[c] for _, c in rows])
            results[name] = {
                "queries": len(rows),
                **recall(db, vectors, targets),
                "low_confidence": int(low.sum()),
                "confidence_median": float(np.median(conf)),
            }
        if weight is not None:
            oracle = l2_normalise(weight[gallery.classes])
            results["oracle (class's own classifier row)"] = {
                "queries": len(gallery.classes),
                **recall(db, oracle, np.arange(len(gallery.classes))),
            }
        report["poolings"][pooling] = results
    report["off_topic"] = {
        "texts": list(OFF_TOPIC),
        "confidence": [round(float(c), 3) for c in off_conf],
        "flagged_low_confidence": int(off_low.sum()),
    }
    report["text_ms_per_query"] = 1000 * text_seconds / (sum(map(len, sets.values())) + 10)
    return report


def table(report: dict) -> str:
    lines = ["| pooling | query set | n | R@1 | R@5 | R@10 | MRR | low-conf |", "|---" * 8 + "|"]
    for pooling, results in report["poolings"].items():
        for name, r in results.items():
            lines.append(
                f"| {pooling} | {name} | {r['queries']} | {r['recall@1']:.3f} | "
                f"{r['recall@5']:.3f} | {r['recall@10']:.3f} | {r['mrr']:.3f} | "
                f"{r.get('low_confidence', '-')} |"
            )
    off = report["off_topic"]
    lines.append(
        f"\noff-topic texts flagged low_confidence: {off['flagged_low_confidence']}"
        f"/{len(off['texts'])} (confidences {off['confidence']})"
    )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", type=Path, default=DATASET)
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "resnet50.onnx")
    parser.add_argument("--text-model", type=Path, default=ROOT / "models" / "minilm")
    parser.add_argument("--queries", type=Path, default=QUERIES)
    parser.add_argument("--address", help="embed through this running embedder instead")
    parser.add_argument("--limit", type=int, help="only this many photos (spread over classes)")
    parser.add_argument("--cache-dir", type=Path, default=ROOT / "models" / "cache")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write the report here")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    gallery = load_gallery(args.dataset, args.limit)
    started = time.perf_counter()
    weight = read_classifier(args.model)[0]
    if args.address:
        features, embed_text, _ = service_mode(args.address, gallery)
    else:
        features = image_features_direct(args.model, gallery, args.cache_dir, args.threads)
        embed_text = direct_text(args.text_model, args.model, args.threads)
    report = evaluate(features, embed_text, gallery, args.queries, weight)
    report["mode"] = f"service {args.address}" if args.address else "direct"
    report["seconds"] = round(time.perf_counter() - started, 1)
    print(table(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
