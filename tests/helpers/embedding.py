"""A deterministic embedder for tests: bag-of-words vectors, so texts that share words are similar, with a name no
preset uses (code that should take the index's embedder can only get this one by taking it)."""

from __future__ import annotations

import hashlib

import numpy as np


class HashEmbedder:
    def __init__(self, name: str = "hash", dim: int = 64):
        self.name, self.dim = name, dim

    def embed(self, texts, batch_size=64, on_progress=None):
        out = np.zeros((len(texts), self.dim), np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().split():
                out[row, int(hashlib.md5(word.encode()).hexdigest(), 16) % self.dim] += 1
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)
