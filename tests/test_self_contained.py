"""A clone of the repository alone must pass its tests: fixtures live in tests/data, intact and credited
(CI runs the suite on a clean clone, which proves that no test reads anything beside the checkout)."""

from __future__ import annotations

import hashlib
import re

import pytest

from helpers.paths import REPO, TEST_DATA, fixture_file

TESTS = REPO / "tests"
EXCERPTS = TEST_DATA / "stickerconv"


def test_every_excerpt_is_listed_with_its_checksum_and_the_licence_is_beside_them():
    readme = (EXCERPTS / "README.md").read_text(encoding="utf-8")
    listed = dict(re.findall(r"^\| `([^`]+\.jsonl)` \| [\d,]+ \| `([0-9a-f]{64})` \|", readme, flags=re.M))
    present = {p.relative_to(EXCERPTS).as_posix() for p in EXCERPTS.rglob("*.jsonl")}
    assert set(listed) == present and len(present) == 4
    for name, digest in listed.items():
        assert hashlib.sha256((EXCERPTS / name).read_bytes()).hexdigest() == digest, name
    licence = (EXCERPTS / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in licence and "Version 2.0" in licence
    assert "ZhangYiqun018/StickerConv" in readme


def test_record_counts_match_the_readme():
    readme = (EXCERPTS / "README.md").read_text(encoding="utf-8")
    for name, count in re.findall(r"^\| `([^`]+\.jsonl)` \| ([\d,]+) \|", readme, flags=re.M):
        lines = fixture_file("stickerconv", *name.split("/")).read_text(encoding="utf-8").splitlines()
        assert len(lines) == int(count.replace(",", "")), name


def test_a_missing_fixture_is_named():
    with pytest.raises(FileNotFoundError, match="nothing.jsonl is missing"):
        fixture_file("nothing.jsonl")
