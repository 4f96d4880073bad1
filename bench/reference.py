"""Where the benchmarks find the StickerConv reference data.

The published figures in bench/README.md were measured on the authors' full files (2,015 profiles,
24,602 emotion descriptions). A clone has only the excerpts in tests/data/stickerconv, so each
benchmark takes, in order: the folder in ``STICKERCONV_REFERENCE`` (laid out as the full release:
``profiles/``, ``stickers/``, ``emotion_descriptions/``), a ``shared/data`` folder beside the checkout
(where this project's development machines keep the full files), or the excerpts, and says which.
Figures from the excerpts are smaller runs and differ from the README's.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXCERPTS = REPO / "tests" / "data" / "stickerconv"


def _full_folder() -> Path | None:
    for candidate in (os.environ.get("STICKERCONV_REFERENCE"), REPO.parent / "shared" / "data"):
        if candidate and (Path(candidate) / "profiles" / "train_profile.jsonl").is_file():
            return Path(candidate)
    return None


def profiles() -> Path:
    """The persona profiles: the full 2,015 when available, else the 306-profile excerpt."""
    full = _full_folder()
    path = full / "profiles" / "train_profile.jsonl" if full else EXCERPTS / "profiles" / "train_profile_excerpt.jsonl"
    print(f"[reference data] profiles: {path}", flush=True)
    return path


def profile_sample() -> Path:
    full = _full_folder()
    return (full or EXCERPTS) / "profiles" / "profile_sample.jsonl"


def knowledge_stickers() -> Path:
    full = _full_folder()
    return (full or EXCERPTS) / "stickers" / "knowledge_sticker_example.jsonl"


def emotion_descriptions() -> Path | None:
    """The labelled emotion descriptions, or None: they are 6 MB and have no excerpt in the repository."""
    full = _full_folder()
    path = full / "emotion_descriptions" / "emotion_descriptions.jsonl" if full else None
    return path if path is not None and path.is_file() else None
