"""BERT WordPiece tokenizer over a vocab.txt, in plain Python: text models need no torch/HF libs.

Matches the uncased BERT tokenizer (clean, split CJK, lowercase + strip accents, split on
whitespace and punctuation, greedy longest-match WordPiece with "##" continuations); tests
check its ids against the `tokenizers` library's on fixed strings.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAX_WORD_CHARS = 100  # longer words become [UNK], as in BERT


def _is_punctuation(ch: str) -> bool:
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x2A6DF
        or 0x2A700 <= cp <= 0x2B73F
        or 0x2B740 <= cp <= 0x2B81F
        or 0x2B820 <= cp <= 0x2CEAF
        or 0xF900 <= cp <= 0xFAFF
        or 0x2F800 <= cp <= 0x2FA1F
    )


def _clean(text: str) -> str:
    out = []
    for ch in text:
        cp = ord(ch)
        if (
            cp == 0
            or cp == 0xFFFD
            or (unicodedata.category(ch) in ("Cc", "Cf") and ch not in "\t\n\r")
        ):
            continue
        if ch in " \t\n\r" or unicodedata.category(ch) == "Zs":
            out.append(" ")
        elif _is_cjk(cp):
            out.append(f" {ch} ")
        else:
            out.append(ch)
    return "".join(out)


def basic_tokens(text: str, lowercase: bool = True) -> list[str]:
    """Whitespace and punctuation split, lowercased and accent-stripped (BERT's BasicTokenizer)."""
    words = []
    for word in _clean(text).split():
        if lowercase:
            word = "".join(
                ch
                for ch in unicodedata.normalize("NFD", word.lower())
                if unicodedata.category(ch) != "Mn"
            )
        current = ""
        for ch in word:
            if _is_punctuation(ch):
                if current:
                    words.append(current)
                words.append(ch)
                current = ""
            else:
                current += ch
        if current:
            words.append(current)
    return words


@dataclass(frozen=True)
class Encoded:
    input_ids: np.ndarray  # int64 [N, L]
    attention_mask: np.ndarray  # int64 [N, L]


class WordPieceTokenizer:
    """`encode(texts, max_length)` -> padded ids and mask with [CLS] ... [SEP]."""

    def __init__(self, vocab: list[str], lowercase: bool = True) -> None:
        self.vocab = {token: i for i, token in enumerate(vocab)}
        self.lowercase = lowercase
        self.unk = self.vocab["[UNK]"]
        self.cls = self.vocab["[CLS]"]
        self.sep = self.vocab["[SEP]"]
        self.pad = self.vocab.get("[PAD]", 0)

    @classmethod
    def from_file(cls, path: Path, lowercase: bool = True) -> WordPieceTokenizer:
        lines = Path(path).read_text(encoding="utf-8").split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        return cls(lines, lowercase)

    def _wordpiece(self, word: str) -> list[int]:
        if len(word) > MAX_WORD_CHARS:
            return [self.unk]
        ids = []
        start = 0
        while start < len(word):
            end = len(word)
            found = None
            while start < end:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    found = self.vocab[piece]
                    break
                end -= 1
            if found is None:
                return [self.unk]
            ids.append(found)
            start = end
        return ids

    def ids(self, text: str) -> list[int]:
        """Token ids without [CLS]/[SEP]."""
        out: list[int] = []
        for word in basic_tokens(text, self.lowercase):
            out.extend(self._wordpiece(word))
        return out

    def encode(self, texts: list[str], max_length: int) -> Encoded:
        rows = [[self.cls, *self.ids(t)[: max_length - 2], self.sep] for t in texts]
        width = max(len(r) for r in rows)
        ids = np.full((len(rows), width), self.pad, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
        return Encoded(ids, mask)
