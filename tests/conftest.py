"""Shared fixtures: a small real pack (the first emoji of the default pack, Noto style) and its index.

Built once per test session from the real sources the install step provides, so tests exercise
the same rendering, labelling and embedding code as the full pack, in seconds.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SMALL_PACK_EMOJI = 260  # the smileys and hands: every one of the 7 labels occurs among them


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
