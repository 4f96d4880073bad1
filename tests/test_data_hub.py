"""``data pull``: the Hub loader on local published-format files, and a clear message offline."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stickerconv.data.hub import HubUnavailable, pull

from helpers.data import published_sessions, write_jsonl

SCRIPT = Path(sys.executable).parent / "stickerconv"


def test_local_published_files_load_through_datasets_losslessly(tmp_path):
    records = published_sessions()
    train = write_jsonl(tmp_path / "train.json", records[:7])  # JSON Lines under .json, as on the Hub
    validation = tmp_path / "validation.json"
    validation.write_text(json.dumps(records[7:], indent=2, ensure_ascii=False), encoding="utf-8")  # a JSON array
    report = pull("NEUDM/StickerConv", tmp_path / "out", from_files=[train, validation])
    assert report.sessions == {"train": 7, "validation": 3}
    for name, expected in (("train", records[:7]), ("validation", records[7:])):
        lines = (tmp_path / "out" / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
        assert [json.loads(line) for line in lines] == expected


def test_meta_survives_and_absent_meta_stays_absent(tmp_path):
    records = published_sessions()[:3]
    records[1]["meta"] = {"persona_id": "p1", "seed": 4}
    pull("x/y", tmp_path / "out", from_files=[write_jsonl(tmp_path / "test.jsonl", records)])
    assert [json.loads(line) for line in (tmp_path / "out" / "test.jsonl").open()] == records


def test_offline_pull_says_how_to_get_the_files(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubUnavailable) as info:
        pull("NEUDM/StickerConv", tmp_path / "out")
    message = str(info.value)
    assert "HF_HUB_OFFLINE is set" in message
    assert "https://huggingface.co/datasets/NEUDM/StickerConv/tree/main" in message
    assert "--from-file train.json" in message


def test_cli_pull_offline_is_one_clear_error(tmp_path):
    result = subprocess.run(
        [str(SCRIPT), "data", "pull", "NEUDM/StickerConv", "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ | {"HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: cannot download NEUDM/StickerConv from the Hugging Face Hub")
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()


def test_no_network_is_reported_like_offline_mode(tmp_path, monkeypatch):
    import datasets

    def unreachable(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'NEUDM/StickerConv' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    with pytest.raises(HubUnavailable, match="no connection: Couldn't reach"):
        pull("NEUDM/StickerConv", tmp_path / "out")
