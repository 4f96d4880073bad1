"""Dataset statistics: exact counts on the published-format fixture, plots and the Markdown report."""

import copy
import json
import subprocess
import sys
from pathlib import Path

from stickerconv.data.plots import PLOTS, write_plots
from stickerconv.data.report import render_report
from stickerconv.data.stats import compute_stats, profile_emotions

from helpers.data import LABELS, published_sessions, published_stickers, write_jsonl
from helpers.paths import fixture_file

SCRIPT = Path(sys.executable).parent / "stickerconv"


def _profiles() -> list[dict]:
    return [
        json.loads(line)
        for line in fixture_file("stickerconv", "profiles", "profile_sample.jsonl").read_text().splitlines()
    ]


def test_counts_match_the_fixture(tmp_path):
    records = published_sessions()
    stats = compute_stats(write_jsonl(tmp_path / "train.jsonl", records))
    turns = [t for r in records for t in r["conversation"]]
    user = [t["user_sticker"] for t in turns if t["user_sticker"]]
    system = [t["system_sticker"] for t in turns if t["system_sticker"]]
    assert stats["sessions"] == 10 and stats["skipped_records"] == 0
    assert (stats["unique_personas"], stats["unique_scenarios"]) == (5, 10)
    assert stats["turns"]["total"] == len(turns) == 33
    assert stats["turns"]["histogram"] == {"1": 2, "2": 2, "3": 2, "4": 1, "5": 1, "6": 2}
    assert (stats["turns"]["mean"], stats["turns"]["median"], stats["turns"]["max"]) == (3.3, 3.0, 6)
    user_words = sorted(len(t["user_message"].split()) for t in turns)
    assert stats["words_per_utterance"]["user"]["median"] == user_words[16]
    assert stats["words_per_utterance"]["user"]["mean"] == round(sum(user_words) / 33, 3)
    assert stats["stickers"]["total"] == len(user) + len(system) == 20
    assert stats["stickers"]["unique"] == len({s["image"] for s in user + system})
    assert stats["stickers"]["by_role"]["user"]["stickers"] == len(user)
    assert stats["stickers"]["by_role"]["system"]["share_of_turns"] == round(len(system) / 33, 4)
    assert stats["stickers"]["sessions_without_sticker"] == 0
    for role, stickers in (("user", user), ("system", system)):
        expected = {label: sum(s["origin_anno"] == label for s in stickers) for label in sorted(set(LABELS))}
        assert {k: v for k, v in stats["sticker_emotions"][role].items() if v} == {
            k: v for k, v in expected.items() if v
        }
    assert stats["persona_emotions"] == {
        "Anger": 0,
        "Disgust": 0,
        "Fear": 0,
        "Happiness": 0,
        "Neutral": 0,
        "Sadness": 0,
        "Surprise": 0,
        "unknown": 10,
    }
    assert [w["word"] for w in stats["emotion_words"]["system"]] == ["lonely", "glad"]


def test_persona_emotions_from_profiles_and_from_meta(tmp_path):
    records = published_sessions()
    records[7]["meta"] = {"persona_id": "p7", "persona_emotion": "Curiosity"}
    stats = compute_stats(write_jsonl(tmp_path / "t.jsonl", records), profile_emotions(_profiles()))
    # sessions 0-4 carry the sample profiles verbatim (Sadness, Joy, Sadness, Fear, Anger); 5-9 a changed situation
    assert stats["persona_emotions"] == {
        "Anger": 1,
        "Disgust": 0,
        "Fear": 1,
        "Happiness": 1,
        "Neutral": 0,
        "Sadness": 2,
        "Surprise": 1,
        "unknown": 4,
    }


def test_emotion_words_are_counted_per_role_with_their_label(tmp_path):
    record = copy.deepcopy(published_sessions()[0])
    record["conversation"][0]["user_message"] = "I am so worried and anxious, worried all day. Nobody cares."
    record["conversation"][1]["user_message"] = "Honestly I'm furious, and sad too."
    stats = compute_stats(write_jsonl(tmp_path / "t.jsonl", [record]))
    words = {w["word"]: (w["count"], w["label"]) for w in stats["emotion_words"]["user"]}
    assert words["worried"] == (2, "Fear") and words["anxious"] == (1, "Fear")
    assert words["furious"] == (1, "Anger") and words["sad"] == (1, "Sadness")
    assert "nobody" not in words


def test_malformed_records_are_skipped_and_counted(tmp_path):
    records = published_sessions()
    broken = copy.deepcopy(records[0])
    del broken["conversation"][0]["user_sticker"]
    path = tmp_path / "t.jsonl"
    write_jsonl(path, [*records[:3], broken, [1], {"conversation": 5}])
    with path.open("a") as fh:
        fh.write('{"conversation": [')
    stats = compute_stats(path)
    assert (stats["sessions"], stats["skipped_records"]) == (3, 4)


def test_plots_and_report(tmp_path):
    stats = compute_stats(write_jsonl(tmp_path / "t.jsonl", published_sessions()), profile_emotions(_profiles()))
    figures = write_plots(stats, tmp_path / "out")
    assert [f.name for f in figures] == list(PLOTS)
    for figure in figures:
        assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and figure.stat().st_size > 10_000
    report = render_report(stats, figures)
    assert report.startswith("# StickerConv dataset statistics")
    assert all(f"]({f.name})" in report for f in figures)
    assert "| Sessions | 10 |" in report and "| Stickers (total / unique) | 20 / " in report


def test_stats_count_every_one_of_20k_sessions(tmp_path):  # its speed is measured by bench/data.py
    records = published_sessions()
    stickers = published_stickers()
    path = tmp_path / "big.jsonl"
    with path.open("w", encoding="utf-8") as fh:
        for i in range(20_000):
            record = copy.deepcopy(records[i % 10])
            record["user_status"] += f" ({i})"
            record["conversation"][0]["user_sticker"] = stickers[i % 10]
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    stats = compute_stats(path)
    assert stats["sessions"] == 20_000 and stats["unique_scenarios"] == 20_000


def test_cli_stats_writes_json_plots_and_report(tmp_path):
    source = write_jsonl(tmp_path / "t.jsonl", published_sessions())
    out = tmp_path / "stats"
    result = subprocess.run(
        [str(SCRIPT), "data", "stats", str(source), "--out", str(out)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "stats.json").read_text())["sessions"] == 10
    assert (out / "report.md").is_file() and all((out / name).is_file() for name in PLOTS)
    assert "stickers total / unique" in result.stdout
