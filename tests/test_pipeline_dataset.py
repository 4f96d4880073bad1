"""The dataset pipelines run from Python, without the CLI: the files each writes, and the results it returns
agree with them."""

from __future__ import annotations

import json

import pytest

from stickerconv.data.io import load_conversations
from stickerconv.pipelines import PipelineError
from stickerconv.pipelines.dataset import (
    ConvertOptions,
    QualityOptions,
    SplitOptions,
    StatsOptions,
    ValidateOptions,
    convert,
    quality,
    split,
    stats,
    validate,
)

from helpers.data import make_library, published_sessions, published_stickers, write_jsonl


@pytest.fixture()
def sessions(tmp_path):
    return write_jsonl(tmp_path / "sessions.jsonl", published_sessions())


def test_validate_reports_every_record_and_writes_the_valid_ones(sessions, tmp_path):
    library = make_library(tmp_path / "library", published_stickers())
    broken = write_jsonl(tmp_path / "broken.jsonl", [*published_sessions(), {"conversation": "none"}])
    fixed = tmp_path / "fixed.json"
    result = validate(ValidateOptions(file=broken, stickers=library, fix_out=fixed))
    assert not result.report.ok and result.report.records == 11 and result.report.valid == 10
    assert result.report.written == 10 and len(json.loads(fixed.read_text())) == 10
    assert "broken.jsonl" in result.source
    assert validate(ValidateOptions(file=sessions)).report.ok


def test_stats_writes_the_json_the_plots_and_the_report(sessions, tmp_path):
    result = stats(StatsOptions(file=sessions, out=tmp_path / "stats"))
    assert result.stats["sessions"] == 10 and result.stats_file == tmp_path / "stats" / "stats.json"
    assert json.loads(result.stats_file.read_text()) == result.stats
    assert result.report == tmp_path / "stats" / "report.md" and result.report.is_file()
    assert stats(StatsOptions(file=sessions)).stats_file is None  # no out, no files
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_text('{"conversation": 1}\n')
    with pytest.raises(PipelineError, match=r"garbage.jsonl: no countable sessions \(1 malformed record"):
        stats(StatsOptions(file=garbage))


def test_split_keeps_every_session_once(sessions, tmp_path):
    result = split(SplitOptions(file=sessions, out=tmp_path / "split", ratios=(0.6, 0.2, 0.2), seed=1, layout="json"))
    assert sum(result.report.sessions.values()) == 10 and result.report.ratios == (0.6, 0.2, 0.2)
    assert all(path.suffix == ".json" and path.is_file() for path in result.report.files.values())
    assert len(load_conversations(tmp_path / "split")) == 10
    assert SplitOptions(file=sessions, out=tmp_path).ratios == (0.8, 0.1, 0.1)  # the command's default
    with pytest.raises(PipelineError, match="--format 'csv': choose from jsonl, json, parquet"):
        split(SplitOptions(file=sessions, out=tmp_path / "x", layout="csv"))


def test_convert_writes_one_sample_per_turn(sessions, tmp_path):
    out = tmp_path / "samples.parquet"
    result = convert(ConvertOptions(file=sessions, to="samples", out=out, style="v0"))
    turns = sum(len(s["conversation"]) for s in published_sessions())
    assert result.report.written == result.report.turns == turns and result.written == "parquet"
    chat = convert(ConvertOptions(file=sessions, to="chat", out=tmp_path / "chat.jsonl", system_prompt=""))
    assert chat.report.written == 10
    first = json.loads((tmp_path / "chat.jsonl").read_text().splitlines()[0])
    assert first["messages"][0]["role"] == "user"  # '' means no system message
    with pytest.raises(PipelineError, match="--to 'csv': choose from samples, chat, hf"):
        convert(ConvertOptions(file=sessions, to="csv", out=tmp_path / "x.jsonl"))
    with pytest.raises(PipelineError, match="--style 'v2': choose from v0, v1.5"):
        convert(ConvertOptions(file=sessions, to="samples", out=tmp_path / "x.jsonl", style="v2"))


def test_quality_compares_files_side_by_side(sessions, tmp_path):
    half = write_jsonl(tmp_path / "half.jsonl", published_sessions()[:5])
    out = tmp_path / "quality"
    result = quality(QualityOptions(files=(sessions, half), out=out, names=("all", "half"), self_bleu_sample=50))
    assert result.names == ["all", "half"] and [r["sessions"] for r in result.results] == [10, 5]
    assert result.report == out / "quality.md" and result.report.is_file()
    assert set(json.loads((out / "quality.json").read_text())) == {"all", "half"}
    with pytest.raises(PipelineError, match="give one distinct --name per file"):
        quality(QualityOptions(files=(sessions, half), out=out, names=("same", "same")))
