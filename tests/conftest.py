"""Shared fixtures: a small real pack (the first emoji of the default pack, Noto style) and its index.

Built once per test session from the real sources the install step provides, so tests exercise
the same rendering, labelling and embedding code as the full pack, in seconds.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from helpers.paths import REPO

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# The workplace keeps reference data in a folder beside the checkout; a clone has none, so no test may read it.
OUTSIDE = REPO.parent / "shared"
SMALL_PACK_EMOJI = 260  # the smileys and hands: every one of the 7 labels occurs among them


def _refuse_outside_reads(event: str, args: tuple) -> None:
    """Fail any test that opens a file in the workplace folder beside the checkout (``OUTSIDE``): a clone of
    the repository has no such folder, so a test that needs one would pass here and fail for everyone else."""
    if event != "open" or not args or not isinstance(args[0], str | bytes | os.PathLike):
        return
    path = os.path.abspath(os.fsdecode(args[0]))
    if path == str(OUTSIDE) or path.startswith(str(OUTSIDE) + os.sep):
        raise PermissionError(f"tests must not read {path}: keep fixtures in tests/data (see tests/data/README.md)")


sys.addaudithook(_refuse_outside_reads)


@pytest.fixture(scope="session")
def outside_folder() -> Path:
    """The folder the audit hook guards, for the test that checks the guard."""
    return OUTSIDE


@pytest.fixture(scope="session")
def embedder():
    from stickerconv.stickers.embed import load_embedder

    return load_embedder("minilm")


@pytest.fixture(scope="session")
def small_pack(tmp_path_factory) -> Path:
    from stickerconv.stickers.emoji_pack import build_default_pack

    out = tmp_path_factory.mktemp("pack")
    build_default_pack(out, ["noto"], limit=SMALL_PACK_EMOJI)
    return out


@pytest.fixture(scope="session")
def small_index(small_pack, embedder):
    from stickerconv.stickers.index import StickerIndex
    from stickerconv.stickers.library import StickerLibrary

    index, skipped = StickerIndex.build(StickerLibrary.load(small_pack), embedder)
    assert skipped == []
    index.save()
    return index
