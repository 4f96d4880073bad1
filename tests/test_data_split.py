"""Persona-disjoint splits: no persona leaks, counts are kept, and the seed fixes the result."""

import copy
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from stickerconv.data.io import load_conversations
from stickerconv.data.split import SPLITS, assign, split_file

from helpers.data import published_sessions, write_jsonl
from helpers.paths import fixture_file

SCRIPT = Path(sys.executable).parent / "stickerconv"


def many_sessions(n_personas: int = 120) -> list[dict]:
    """Sessions for real persona texts (train_profile.jsonl), 1-4 sessions per persona."""
    lines = (
        fixture_file("stickerconv", "profiles", "train_profile_excerpt.jsonl").read_text(encoding="utf-8").splitlines()
    )
    base = published_sessions()
    out = []
    rng = random.Random(7)
    for i, line in enumerate(lines[:n_personas]):
        profile = json.loads(line)
        for j in range(rng.randint(1, 4)):
            record = copy.deepcopy(base[(i + j) % 10])
            record["user_persona"], record["user_status"] = profile["persona"], f"{profile['situation']} ({j})"
            out.append(record)
    return out


def _personas(path: Path) -> set[str]:
    return {c.user_persona for c in load_conversations(path)}


def test_no_persona_is_in_two_splits_and_counts_are_kept(tmp_path):
    records = many_sessions()
    report = split_file(write_jsonl(tmp_path / "all.jsonl", records), tmp_path / "out", seed=3)
    seen = {name: _personas(tmp_path / "out" / f"{name}.jsonl") for name in SPLITS}
    assert not (seen["train"] & seen["validation"]) and not (seen["train"] & seen["test"])
    assert not (seen["validation"] & seen["test"])
    assert sum(report.sessions.values()) == len(records)
    assert sum(len(seen[name]) for name in SPLITS) == len({r["user_persona"] for r in records})
    for name, share in zip(SPLITS, (0.8, 0.1, 0.1), strict=True):
        assert abs(report.sessions[name] / len(records) - share) < 0.04
    manifest = json.loads((tmp_path / "out" / "split.json").read_text())
    assert manifest["seed"] == 3 and manifest["sessions"] == report.sessions
    written = [json.loads(line) for name in SPLITS for line in (tmp_path / "out" / f"{name}.jsonl").open()]
    assert sorted(map(json.dumps, written)) == sorted(map(json.dumps, records))  # records unchanged


def test_same_seed_same_split_in_any_input_order():
    records = many_sessions()
    first = dict(zip(map(json.dumps, records), assign(records, (0.8, 0.1, 0.1), seed=5), strict=True))
    shuffled = records[::-1]
    again = dict(zip(map(json.dumps, shuffled), assign(shuffled, (0.8, 0.1, 0.1), seed=5), strict=True))
    assert first == again
    other = assign(records, (0.8, 0.1, 0.1), seed=6)
    assert other != [first[json.dumps(r)] for r in records]


def test_a_persona_id_joins_records_with_different_texts():
    records = published_sessions()
    for i, record in enumerate(records):
        record["meta"] = {"persona_id": f"p{i % 5}"}
    records[9]["user_persona"] = "You are someone else entirely."  # same id as record 4, other text
    records[3]["meta"]["persona_id"] = "p99"  # same text as record 8, other id
    for seed in range(20):
        names = assign(records, (0.4, 0.3, 0.3), seed)
        assert names[9] == names[4] and names[3] == names[8]


@pytest.mark.parametrize("ratios", [(0.8, 0.1), (0.8, 0.3, -0.1), (0.5, 0.3, 0.3)])
def test_bad_ratios_are_refused(ratios):
    with pytest.raises(ValueError, match="sum to 1"):
        assign(published_sessions(), ratios, 0)


def test_cli_split(tmp_path):
    source = write_jsonl(tmp_path / "all.jsonl", many_sessions(40))
    out = tmp_path / "splits"
    result = subprocess.run(
        [str(SCRIPT), "data", "split", str(source), "--out", str(out), "--ratios", "0.6,0.2,0.2", "--seed", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "train:" in result.stdout and (out / "test.jsonl").is_file()
    assert len(load_conversations(out)) == len(many_sessions(40))  # the folder reads as one dataset again
    bad = subprocess.run(
        [str(SCRIPT), "data", "split", str(source), "--out", str(out), "--ratios", "a,b"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "--ratios must be numbers" in bad.stderr
