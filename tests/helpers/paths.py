"""Where the tests find their data: ``tests/data`` in the checkout, and nothing beside the checkout."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TEST_DATA = REPO / "tests" / "data"


def fixture_file(*parts: str) -> Path:
    """A fixture file under tests/data (the StickerConv excerpts are in tests/data/stickerconv)."""
    path = TEST_DATA.joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"test data {path} is missing from the checkout")
    return path
