"""Text -> ImageNet class weights -> a query vector in the image model's embedding space.

A description is matched against the 1,000 ImageNet classes two ways: semantically (cosine of
its sentence embedding with each class's names, WordNet synonyms and short description) and
lexically (a class name or synonym appearing word for word in the text). The best classes get
softmax weights, and the query is the weighted sum of their rows of the image model's
classifier (fc1000): for average-pooled features x, W_c.x + b_c is class c's logit, so the
query ranks images by how much they look like those classes. GeM features were never seen by
the classifier; the same rows rank them nearly as well (measured in scripts/eval_text_search.py).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ris.common.settings import ConfigError

LOGITS_OUTPUT = "logits"


class ConceptError(ValueError):
    """The concept bank or the classifier cannot be used together."""


@dataclass(frozen=True)
class MatchSettings:
    """How text scores turn into class weights.

    Chosen by a grid search on the `dev` rows of scripts/data/text_queries.csv (86 queries)
    for the best mean reciprocal rank over GeM and average pooling; the `eval` rows were never
    used to choose them.
    """

    top_k: int = 5  # classes mixed into one query
    temperature: float = 0.02  # softmax temperature over class scores (cosine units)
    description_offset: float = 0.15  # a description match counts this much over a name match
    lexical_bonus: float = 0.3  # a name found word for word in the text
    # Best cosine below this: the text matched no known concept. Measured: nonsense and
    # off-topic texts score 0.28-0.47, the eval descriptions 0.45-0.87 (5th percentile 0.57).
    low_confidence: float = 0.50


@dataclass(frozen=True)
class ClassMatch:
    """What one text matched: class weights (sum 1), the best cosine, and whether it is weak."""

    classes: np.ndarray  # int [k]
    weights: np.ndarray  # float [k]
    confidence: float
    low_confidence: bool


_WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> list[str]:
    """Lowercase words with a crude singular: 'sharks' and 'shark' match the same name."""
    out = []
    for word in _WORD.findall(text.lower().replace("'", "")):
        if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
            word = word[:-1]
        out.append(word)
    return out


class ConceptBank:
    """Phrases (names, synonyms, descriptions) with their class and sentence embedding."""

    def __init__(
        self,
        class_index: np.ndarray,
        kind: np.ndarray,
        phrase: list[str],
        embedding: np.ndarray,
        num_classes: int,
    ) -> None:
        self.class_index = class_index.astype(np.int64)
        self.kind = kind
        self.phrase = phrase
        self.embedding = embedding.astype(np.float32)
        self.num_classes = num_classes
        self.is_name = kind != "description"
        # Lexical index: word tuple of every name/synonym -> classes.
        self.names: dict[tuple[str, ...], set[int]] = {}
        for c, k, p in zip(self.class_index, kind, phrase, strict=True):
            key = tuple(words(p))
            if k != "description" and key:
                self.names.setdefault(key, set()).add(int(c))
        self.longest = max((len(k) for k in self.names), default=0)

    @classmethod
    def load(cls, path: Path) -> ConceptBank:
        with np.load(path) as z:
            class_index = z["class_index"]
            return cls(
                class_index,
                z["kind"].astype(str),
                [str(p) for p in z["phrase"]],
                z["embedding"],
                int(class_index.max()) + 1,
            )

    def label_agreement(self, labels: Sequence[str]) -> float:
        """Share of an image model's labels found among the same class's names: 1 = same order."""
        if len(labels) != self.num_classes:
            return 0.0
        known: dict[int, set[tuple[str, ...]]] = {}
        for key, classes in self.names.items():
            for c in classes:
                known.setdefault(c, set()).add(key)
        hits = sum(tuple(words(label)) in known.get(c, ()) for c, label in enumerate(labels))
        return hits / self.num_classes

    @property
    def dim(self) -> int:
        return int(self.embedding.shape[1])

    def lexical(self, text: str) -> np.ndarray:
        """Per class: the fraction of the text's words covered by its longest name found in it."""
        found = np.zeros(self.num_classes, dtype=np.float32)
        tokens = words(text)
        if not tokens:
            return found
        for n in range(min(self.longest, len(tokens)), 0, -1):
            for start in range(len(tokens) - n + 1):
                for c in self.names.get(tuple(tokens[start : start + n]), ()):
                    found[c] = max(found[c], n / len(tokens))
        return found

    def match(self, text: str, vector: np.ndarray, settings: MatchSettings) -> ClassMatch:
        """Class weights for one text given its (unit) sentence embedding."""
        cosines = self.embedding @ vector.astype(np.float32)
        per_class = np.full((2, self.num_classes), -1.0, dtype=np.float32)
        np.maximum.at(per_class[0], self.class_index[self.is_name], cosines[self.is_name])
        described = ~self.is_name
        np.maximum.at(per_class[1], self.class_index[described], cosines[described])
        lexical = self.lexical(text)
        # Confidence: the best cosine, or the share of the text that is a known name.
        confidence = float(np.clip(max(per_class.max(), lexical.max()), 0.0, 1.0))
        scores = np.maximum(per_class[0], per_class[1] + settings.description_offset)
        scores = scores + settings.lexical_bonus * lexical
        k = min(settings.top_k, self.num_classes)
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top])]
        weights = np.exp((scores[top] - scores[top[0]]) / settings.temperature)
        weights /= weights.sum()
        return ClassMatch(top, weights, confidence, confidence < settings.low_confidence)


def read_classifier(image_model: Path) -> tuple[np.ndarray, np.ndarray]:
    """The final Gemm (or MatMul + Add) producing `logits`: W [classes, dim] and b [classes].

    ONNX Runtime does not expose initializer values, so this reads the graph with `onnx`, the
    one serving-side use of it: only `concepts` text models need it (the `text` extra).
    """
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:  # a ConfigError: the embedder's start reports it in one line
        raise ConfigError(
            f"reading the classifier of {image_model} for a concepts text model needs the onnx "
            "package: pip install 'ris[text]' (or serve without text models)"
        ) from None
    model = onnx.load(str(image_model))
    inits = {i.name: i for i in model.graph.initializer}
    producers = {out: node for node in model.graph.node for out in node.output}
    node = producers.get(LOGITS_OUTPUT)
    while node is not None and node.op_type == "Identity":
        node = producers.get(node.input[0])
    if node is None:
        raise ConceptError(f"{image_model} has no '{LOGITS_OUTPUT}' output to project text through")
    if node.op_type == "Gemm" and node.input[1] in inits:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        weight = numpy_helper.to_array(inits[node.input[1]])
        weight = weight if attrs.get("transB", 0) else weight.T
        bias = (
            numpy_helper.to_array(inits[node.input[2]])
            if len(node.input) > 2 and node.input[2] in inits
            else np.zeros(weight.shape[0], dtype=np.float32)
        )
        return weight.astype(np.float32), bias.astype(np.float32)
    if node.op_type == "Add":
        matmul = producers.get(node.input[0])
        bias_name = node.input[1]
        if matmul is not None and matmul.op_type == "MatMul" and matmul.input[1] in inits:
            weight = numpy_helper.to_array(inits[matmul.input[1]]).T
            return weight.astype(np.float32), numpy_helper.to_array(inits[bias_name]).astype(
                np.float32
            )
    raise ConceptError(
        f"cannot read the classifier weights behind '{LOGITS_OUTPUT}' ({node.op_type})"
    )


class ConceptProjector:
    """Maps sentence embeddings to unit query vectors in the image space via class weights."""

    def __init__(
        self,
        bank: ConceptBank,
        class_vectors: np.ndarray,
        settings: MatchSettings | None = None,
        semantic_weight: float = 0.0,
    ) -> None:
        """semantic_weight > 0: the image space is gem_softmax (pooling.py), and a query is
        [unit classifier-row mix, semantic_weight * class weights], renormalised: the class
        weights play the part of an image's softmax."""
        if class_vectors.shape[0] != bank.num_classes:
            raise ConceptError(
                f"the concept bank has {bank.num_classes} classes but the image model's "
                f"classifier has {class_vectors.shape[0]}"
            )
        self.bank = bank
        self.class_vectors = class_vectors.astype(np.float32)
        self.settings = settings or MatchSettings()
        self.semantic_weight = semantic_weight
        extra = bank.num_classes if semantic_weight else 0
        self.dim = int(class_vectors.shape[1]) + extra

    def project(self, text: str, vector: np.ndarray) -> tuple[np.ndarray, ClassMatch]:
        match = self.bank.match(text, vector, self.settings)
        query = match.weights @ self.class_vectors[match.classes]
        query = query / max(float(np.linalg.norm(query)), 1e-12)
        if self.semantic_weight:
            classes = np.zeros(self.bank.num_classes, dtype=np.float64)
            classes[match.classes] = match.weights
            query = np.concatenate([query, self.semantic_weight * classes])
            query = query / max(float(np.linalg.norm(query)), 1e-12)
        return query.astype(np.float32), match
