"""PEGS as a scorer of the sticker retrieval protocols (:mod:`stickerconv.evaluate.retrieval.protocols`).

Why a scorer of its own: PEGS reads the whole sample (the history with its ``<IMG>`` markers and the
input stickers), not the cleaned context text, so it declares ``needs_sample`` and the protocols
pass the record. For each sample the prompt is built exactly as training and ``PegsResponder``
build it (:func:`~stickerconv.pegs.sequence.sample_example` without the response), the reply is
decoded greedily, and the ``[IMG1..N]`` block is read after the text even when the send decision
is not to send (``force_sticker``): ranking needs an embedding for every sample with a gold
sticker, and the send decision is measured separately (``send_decisions`` on predictions). A model
with ``retrieval_read="context"`` reads its block right after the prompt instead, whatever it writes.
Candidates are ranked by cosine between that embedding and the library's sticker-embedding
matrix (:func:`~stickerconv.responders.pegs.sticker_matrix`). Generation is the slow part (1-4 s
per sample for ``small`` on 2 cores), so each sample's embedding is computed once and shared by
every protocol and split.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stickerconv.data.samples import IMG, Sample
from stickerconv.evaluate.retrieval.protocols import RetrievalError
from stickerconv.pegs.model import PegsModel
from stickerconv.pegs.sequence import sample_example
from stickerconv.responders.pegs import sticker_matrix
from stickerconv.stickers.library import StickerLibrary

log = logging.getLogger(__name__)

# signature value: how the context embedding is read, by the model's retrieval_read
EMBEDDING = {"reply": "greedy-text+forced-img-block", "context": "context+img-block"}


class PegsScorer:
    """Cosine between a PEGS model's retrieval embedding of the sample and each candidate sticker's."""

    needs_sample = True

    def __init__(
        self,
        model: PegsModel,
        library: StickerLibrary,
        image_root: Path | str,
        checkpoint: Path | str | None = None,
        max_new_tokens: int | None = None,
    ) -> None:
        if model.ret_heads is None:
            raise RetrievalError("this PEGS model has no retrieval tokens (n_ret_tokens = 0): it cannot rank stickers")
        self.model = model.eval()
        self.library = library
        self.image_root = Path(image_root)
        self.max_new_tokens = max_new_tokens or model.config.decoding.max_new_tokens  # None: the checkpoint's
        self._rows = {s.id: row for row, s in enumerate(library.stickers)}
        self._matrix = sticker_matrix(model, library).float().cpu().numpy()  # (N, dim), L2-normalised
        self._cache: dict[tuple[str, tuple[str, ...]], tuple[np.ndarray, bool]] = {}  # prompt -> (emb, sent)
        self.name = f"pegs:{checkpoint if checkpoint is not None else 'unsaved'}"
        self.signature_fields = {
            "embedding": EMBEDDING[model.config.retrieval_read],
            "max_new_tokens": str(self.max_new_tokens),
        }

    @classmethod
    def from_checkpoint(
        cls, checkpoint: Path | str, library: StickerLibrary, image_root: Path | str, max_new_tokens: int | None = None
    ) -> PegsScorer:
        return cls(PegsModel.from_pretrained(checkpoint), library, image_root, checkpoint, max_new_tokens)

    @property
    def pool(self) -> list[str]:
        """Every library sticker id: the full pool of this scorer."""
        return list(self._rows)

    @property
    def sent_share(self) -> float | None:
        """Share of the embedded samples where the model's send decision was to send (None before any)."""
        if not self._cache:
            return None
        return sum(sent for _, sent in self._cache.values()) / len(self._cache)

    def __call__(self, context: str, candidates: Sequence[str], sample: Mapping[str, Any] | None = None) -> np.ndarray:
        if sample is None:
            raise RetrievalError("PegsScorer needs the sample record: the retrieval protocols pass it (needs_sample)")
        missing = [c for c in candidates if c not in self._rows]
        if missing:
            raise RetrievalError(
                f"sticker {missing[0]!r} is not in the library {self.library.root} "
                f"({len(missing)} candidate(s) missing)"
            )
        embedding = self.embedding(sample)  # (dim,)
        return self._matrix[[self._rows[c] for c in candidates]] @ embedding  # (C, dim) @ (dim,) -> (C,)

    def embedding(self, sample: Mapping[str, Any]) -> np.ndarray:
        """The (retrieval_dim,) L2-normalised embedding of one sample, generated once and then cached."""
        text, images = _prompt_parts(sample)
        key = (text, tuple(images))
        if key not in self._cache:
            cfg = self.model.config
            prompt = sample_example(
                _prompt_sample(text, images), self.image_root, cfg.style, cfg.system_prompt, with_response=False
            )
            read = [s.image for s in prompt.segments if s.kind == "user_image" and s.image is not None]  # perceived
            missing = [path for path in read if not path.is_file()]
            if missing:
                raise RetrievalError(
                    f"input sticker {missing[0]} not found: --image-root must be the folder the samples' "
                    "image paths are relative to"
                )
            gen = self.model.generate(prompt, max_new_tokens=self.max_new_tokens, force_sticker=True)
            assert gen.ret_embedding is not None  # forced block and ret_heads checked in __init__
            self._cache[key] = (gen.ret_embedding.float().cpu().numpy(), gen.send_sticker)
        return self._cache[key][0]

    def prepare(
        self, samples: Sequence[Mapping[str, Any]], on_progress: Callable[[int, int], None] | None = None
    ) -> None:
        """Embed ``samples`` up front (the slow part), so a caller can show progress; scoring then reads the cache."""
        for done, sample in enumerate(samples, 1):
            self.embedding(sample)
            if on_progress:
                on_progress(done, len(samples))
        log.info("pegs scorer: %d prompts embedded, the model decided to send in %s", len(self._cache), self.sent_share)


def _prompt_parts(sample: Mapping[str, Any]) -> tuple[str, list[str]]:
    """The history text and input image paths of a sample record, checked against each other."""
    text, images = sample.get("input_text"), sample.get("input_image") or []
    if not isinstance(text, str) or not text:
        raise RetrievalError("a sample without input_text: PEGS reads the dialogue history from it")
    if isinstance(images, str) or not all(isinstance(p, str) for p in images):
        raise RetrievalError("input_image must be a list of image paths")
    if text.count(IMG) != len(images):
        raise RetrievalError(f"input_text has {text.count(IMG)} {IMG} but input_image lists {len(images)} image(s)")
    return text, list(images)


def _prompt_sample(text: str, images: list[str]) -> Sample:
    """A :class:`Sample` holding only the prompt side; the response fields stay empty, as at inference."""
    return Sample(
        input_text=text,
        input_image=images,
        response_text="",
        response_image=[],
        user_persona="",
        user_status="",
        input_image_metadata=None,
        response_image_metadata=None,
        query="",
        history=[],
    )
