"""StickerIndex: the searchable vectors of a sticker library, saved next to it in ``index/``.

What is embedded per sticker: the paper indexed ``emotion: {label}, emotion describe: {emotion}``
(method reference §3) so that the agents' HyDE-style queries, written in that same form, land on
stickers of the right emotion. By default we keep that document and append the first sentence of
the description, which names what the sticker shows (a cat, a broken heart), so that queries
about a subject match too; the whole description was worse, its related words drowning the
emotion (``bench/retrieval.py`` compares the templates). The template's name is saved with the index.

Ranking adds a small emotion bonus to the cosine similarity: ``emotion_weight`` times the share of
the query's emotion words (a lexicon, ``emotion_lexicon.text_emotions``) that name the sticker's
label. A query that says "furious" then ranks Anger stickers first even when its other words
(a character, a touch of humour) pull elsewhere. The weight 0.1 was chosen on one half of the
labelled emotion descriptions and checked on the other; 0 gives pure similarity.

``IndexSettings.for_profile`` holds both choices per profile: ours, or the paper's (its template, no bonus).
The index saves them with the profile it was built under, and a loaded index ranks as it was built.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stickerconv.profiles import DEFAULT_PROFILE, Profile
from stickerconv.schema import EmotionLabel, Sticker
from stickerconv.stickers.ann import ExactIndex, IvfIndex, build_ann
from stickerconv.stickers.embed import Embedder, canonical_name, load_embedder
from stickerconv.stickers.emotion_lexicon import text_emotions
from stickerconv.stickers.library import StickerLibrary

INDEX_DIR = "index"
FORMAT_VERSION = 1
TEXT_TEMPLATES: dict[str, Callable[[Sticker], str]] = {
    "paper": lambda s: f"emotion: {_label(s)}, emotion describe: {s.emotion}",
    "paper+subject": lambda s: f"emotion: {_label(s)}, emotion describe: {s.emotion} {_first_sentence(s.description)}",
}

DEFAULT_TEMPLATE = "paper+subject"
DEFAULT_EMOTION_WEIGHT = 0.1
RERANK_POOL = 100


@dataclass(frozen=True)
class IndexSettings:
    """What an index embeds per sticker and how it ranks, as one profile sets them."""

    template: str = DEFAULT_TEMPLATE
    emotion_weight: float = DEFAULT_EMOTION_WEIGHT

    @classmethod
    def for_profile(cls, profile: Profile) -> IndexSettings:
        """Ours (``default``), or the paper's (``paper``): its indexed text alone, pure similarity."""
        return cls(template="paper", emotion_weight=0.0) if profile == "paper" else cls()


def _label(sticker: Sticker) -> str:
    return sticker.label.value if sticker.label else "Unknown"


def _first_sentence(text: str) -> str:
    end = text.find(". ")
    return text if end < 0 else text[: end + 1]


class StickerIndexError(RuntimeError):
    """An index that is missing, stale or built differently from what the caller asks."""


@dataclass(frozen=True)
class SearchHit:
    rank: int
    score: float  # similarity + emotion bonus; what the ranking is by
    sticker: Sticker
    similarity: float  # cosine between query and indexed text

    def to_dict(self) -> dict:
        s = self.sticker
        return {
            "rank": self.rank,
            "score": round(self.score, 6),
            "similarity": round(self.similarity, 6),
            "id": s.id,
            "label": s.label.value if s.label else None,
            "description": s.description,
            "emotion": s.emotion,
            "image": s.image,
        }


def indexable(sticker: Sticker) -> bool:
    """A sticker without annotation text has nothing to embed (annotate it first)."""
    return bool(sticker.emotion.strip() or sticker.description.strip())


class StickerIndex:
    def __init__(
        self,
        library: StickerLibrary,
        embedder: Embedder,
        ann: ExactIndex | IvfIndex,
        stickers: list[Sticker],
        template: str,
        emotion_weight: float = DEFAULT_EMOTION_WEIGHT,
        profile: Profile = DEFAULT_PROFILE,
    ):
        self.library, self.embedder, self.ann, self.template = library, embedder, ann, template
        self.emotion_weight, self.profile = emotion_weight, profile
        self.stickers = stickers  # row i of the vectors is stickers[i]
        self._label_rows: dict[EmotionLabel, np.ndarray] = {
            label: np.array([i for i, s in enumerate(stickers) if s.label is label], dtype=np.int64)
            for label in EmotionLabel
        }

    # ------------------------------------------------------------------ build / save / load
    @classmethod
    def build(
        cls,
        library: StickerLibrary,
        embedder: Embedder,
        *,
        kind: str = "auto",
        template: str = DEFAULT_TEMPLATE,
        emotion_weight: float = DEFAULT_EMOTION_WEIGHT,
        profile: Profile = DEFAULT_PROFILE,
        batch_size: int = 64,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> tuple[StickerIndex, list[Sticker]]:
        """Embed every indexable sticker; return the index and the stickers left out (no text). The
        ``emotion_weight`` and the ``profile`` (whose settings these were) are saved with the index."""
        if template not in TEXT_TEMPLATES:
            raise ValueError(f"unknown text template {template!r}; choose from {', '.join(TEXT_TEMPLATES)}")
        stickers = [s for s in library if indexable(s)]
        skipped = [s for s in library if not indexable(s)]
        if not stickers:
            raise StickerIndexError(
                f"nothing to index in {library.root}: none of its {len(library)} stickers has a description or "
                "emotion text (annotate them with `stickerconv stickers annotate`)"
            )
        texts = [TEXT_TEMPLATES[template](s) for s in stickers]
        vectors = embedder.embed(texts, batch_size=batch_size, on_progress=on_progress)  # (N, d)
        ann = build_ann(vectors, kind)
        return cls(library, embedder, ann, stickers, template, emotion_weight, profile), skipped

    def save(self) -> Path:
        folder = self.library.root / INDEX_DIR
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "vectors.npy", self.ann.vectors)
        (folder / "ids.json").write_text(json.dumps([s.id for s in self.stickers]) + "\n", encoding="utf-8")
        self.ann.save(folder)
        meta = {
            "format_version": FORMAT_VERSION,
            "embedder": self.embedder.name,
            "dim": self.embedder.dim,
            "count": len(self.stickers),
            "template": self.template,
            "emotion_weight": self.emotion_weight,
            "profile": self.profile,
            "library_digest": self.library.digest(),
            "kind": self.ann.kind,
            **self.ann.params(),
        }
        # Written last: an interrupted save leaves no index.json, so it is never taken as complete.
        (folder / "index.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        return folder

    @staticmethod
    def read_meta(library_root: Path | str) -> dict:
        path = Path(library_root) / INDEX_DIR / "index.json"
        if not path.is_file():
            raise StickerIndexError(
                f"no index for the library at {library_root} ({path} is missing); "
                f"build it with `stickerconv stickers index {library_root}`"
            )
        return json.loads(path.read_text(encoding="utf-8"))

    @classmethod
    def load(cls, library: StickerLibrary | Path | str, embedder: Embedder | str | None = None) -> StickerIndex:
        """Open a saved index; refuses an embedder other than the one that built it, and a stale index."""
        library = library if isinstance(library, StickerLibrary) else StickerLibrary.load(library)
        meta = cls.read_meta(library.root)
        rebuild = f"`stickerconv stickers index {library.root}"
        wanted = embedder if isinstance(embedder, str) else getattr(embedder, "name", None)
        if wanted is not None and canonical_name(wanted) != canonical_name(meta["embedder"]):
            raise StickerIndexError(
                f"the index of {library.root} was built with embedder {meta['embedder']!r} ({meta['dim']}-d), "
                f"not {wanted!r}: vectors from different embedders cannot be compared. Search with "
                f"--embedder {meta['embedder']} (or leave it out), or rebuild with {rebuild} --embedder {wanted}`"
            )
        if meta["library_digest"] != library.digest():
            raise StickerIndexError(
                f"the index of {library.root} is stale: stickers.jsonl changed after it was built; "
                f"rebuild it with {rebuild}`"
            )
        if embedder is None or isinstance(embedder, str):
            embedder = load_embedder(meta["embedder"])
        if embedder.dim != meta["dim"]:
            raise StickerIndexError(
                f"embedder {embedder.name!r} gives {embedder.dim}-d vectors, the index has {meta['dim']}-d"
            )
        folder = library.root / INDEX_DIR
        ids = json.loads((folder / "ids.json").read_text(encoding="utf-8"))
        by_id = library.by_id()
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise StickerIndexError(
                f"index lists {len(missing)} sticker(s) not in the library (e.g. {missing[0]!r}); "
                f"rebuild it with {rebuild}`"
            )
        vectors = np.load(folder / "vectors.npy", mmap_mode="r" if meta["kind"] == "ivf" else None)
        ann = IvfIndex.load(folder, vectors, meta["nprobe"]) if meta["kind"] == "ivf" else ExactIndex(vectors)
        weight, profile = meta.get("emotion_weight", DEFAULT_EMOTION_WEIGHT), meta.get("profile", DEFAULT_PROFILE)
        return cls(library, embedder, ann, [by_id[i] for i in ids], meta["template"], weight, profile)

    # ------------------------------------------------------------------ search
    def search(self, query: str, k: int = 10, labels: Iterable[EmotionLabel | str] | None = None) -> list[SearchHit]:
        """The k stickers that best fit ``query``, optionally of the given labels only."""
        return self.search_many([query], k, labels)[0]

    def search_many(
        self,
        queries: Sequence[str],
        k: int = 10,
        labels: Iterable[EmotionLabel | str] | None = None,
        vectors: np.ndarray | None = None,
    ) -> list[list[SearchHit]]:
        """Rank by cosine similarity plus ``emotion_weight`` x the share of the query's emotion words
        that name the sticker's label (see the module docstring). ``vectors`` may hold the queries'
        embeddings when the caller has them already."""
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        if any(not q.strip() for q in queries):
            raise ValueError("empty search query")
        rows = None
        if labels is not None:
            wanted = [EmotionLabel(label) for label in labels]
            rows = np.sort(np.concatenate([self._label_rows[label] for label in wanted] or [np.array([], np.int64)]))
            if len(rows) == 0:
                return [[] for _ in queries]
        vectors = np.asarray(self.embedder.embed(list(queries)) if vectors is None else vectors, np.float32)  # (Q, d)
        pool = k if self.emotion_weight == 0 else max(10 * k, RERANK_POOL)
        sims, found = self.ann.search(vectors, pool, rows)  # (Q, pool) each
        results = []
        for q, query in enumerate(queries):
            emotions = text_emotions(query) if self.emotion_weight else {}
            candidates = dict(zip(found[q].tolist(), sims[q].tolist(), strict=True))
            for label in emotions:  # the named emotions' best stickers join the pool even if the topic pulls away
                label_rows = self._label_rows[label] if rows is None else np.intersect1d(self._label_rows[label], rows)
                if len(label_rows):
                    label_sims, label_found = self.ann.search(vectors[q : q + 1], k, label_rows)
                    candidates.update(zip(label_found[0].tolist(), label_sims[0].tolist(), strict=True))
            ranked = sorted(
                (
                    (sim + self.emotion_weight * emotions.get(self.stickers[i].label, 0.0), sim, i)
                    for i, sim in candidates.items()
                    if i >= 0
                ),
                key=lambda c: (-c[0], c[2]),
            )
            results.append(
                [SearchHit(rank, score, self.stickers[i], sim) for rank, (score, sim, i) in enumerate(ranked[:k], 1)]
            )
        return results

    def __len__(self) -> int:
        return len(self.stickers)
