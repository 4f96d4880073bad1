"""A clone of the repository alone must pass its tests: fixtures live in tests/data, intact and
credited, and nothing reads the workplace's folder beside the checkout (conftest's ``OUTSIDE``)."""

from __future__ import annotations

import hashlib
import re
import uuid
from pathlib import Path

import pytest

from helpers.paths import REPO, TEST_DATA, fixture_file

TESTS = REPO / "tests"
EXCERPTS = TEST_DATA / "stickerconv"


def test_reading_the_workplace_folder_fails_the_test(outside_folder):
    # The path need not exist: the audit hook refuses the open before the file system is asked.
    outside = outside_folder
    for target in (outside / "data" / "profiles" / "train_profile.jsonl", outside, outside / ".." / outside.name / "x"):
        with pytest.raises(PermissionError, match="tests must not read"):
            open(target, encoding="utf-8")
    # ... and only that folder: a sibling whose name merely starts the same way reaches the file system, which
    # answers that it does not exist (nothing is written beside the checkout to show it).
    lookalike = outside.parent / f"{outside.name}-{uuid.uuid4().hex}.txt"
    with pytest.raises(FileNotFoundError):
        open(lookalike, encoding="utf-8")


def test_no_test_names_the_workplace_folder(outside_folder):
    name = re.escape(outside_folder.name)
    pattern = re.compile(rf"""["'/]{name}["'/]|\.\./{name}|{re.escape(str(outside_folder))}""")
    allowed = {TESTS / "conftest.py", Path(__file__).resolve()}
    offenders = [
        f"{path.relative_to(REPO)}:{number}: {line.strip()}"
        for path in sorted(TESTS.rglob("*.py"))
        if path.resolve() not in allowed
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if pattern.search(line)
    ]
    assert offenders == []


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
