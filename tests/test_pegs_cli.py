"""`stickerconv pegs train` chains the stages into a checkpoint that `eval predict --responder pegs-ret` uses, and
its predictions carry what the when-to-send metrics and the sticker frequency are computed from."""

import asyncio
import json

from typer.testing import CliRunner

from stickerconv.agent4sc.runner import run_generation
from stickerconv.cli import app
from stickerconv.data.convert import convert
from stickerconv.evaluate.multimodal.scores import sticker_frequency
from stickerconv.evaluate.predict import load_predictions
from stickerconv.evaluate.retrieval.protocols import send_decisions
from stickerconv.runfiles import CONVERSATIONS

from helpers.agent4sc import PERSONAS, llm_factory, scripted_world


def test_train_tiny_then_predict_with_pegs_ret(tmp_path, small_index):
    asyncio.run(run_generation(PERSONAS[:2], small_index, llm_factory(tmp_path, scripted_world()), tmp_path / "gen"))
    samples = tmp_path / "samples.json"
    convert(tmp_path / "gen" / CONVERSATIONS, "samples", samples)
    lib = str(small_index.library.root)
    runner = CliRunner()
    args = ["pegs", "train", "--preset", "tiny", "--stickers", lib, "--out", str(tmp_path / "pegs")]
    args += ["--data", str(samples), "--stages", "perception,retrieval,joint,send", "--steps", "3", "--batch-size", "4"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    for stage in ("01-perception", "02-retrieval", "03-joint", "04-send", "final"):
        assert (tmp_path / "pegs" / stage).is_dir()
    assert "joint: 3 steps" in " ".join(result.output.split())
    assert "send threshold" in " ".join(result.output.split())
    rerun = runner.invoke(app, args)  # finished stages are resumed, not trained again
    assert rerun.exit_code == 0, rerun.output
    out = tmp_path / "pred.json"
    predict = ["eval", "predict", "--responder", "pegs-ret", "--checkpoint", str(tmp_path / "pegs" / "final")]
    result = runner.invoke(
        app, [*predict, "--data", str(samples), "--stickers", lib, "--out", str(out), "--limit", "3"]
    )
    assert result.exit_code == 0, result.output
    records = load_predictions(out)
    assert len(records) == 3 and all(r["pred_meta"]["responder"] == "pegs-ret" for r in records)
    # a sent sticker is a file of the library, with its published metadata; no sticker, no metadata
    root = small_index.library.root
    assert all(bool(r["pred_image"]) == (r["pred_image_metadata"] is not None) for r in records)
    assert all((root / path).is_file() for r in records for path in r["pred_image"])
    assert all(r["pred_meta"]["send_decision"].startswith("threshold ") for r in records)  # the fitted decision
    json.dumps(records)  # plain JSON
    scores = send_decisions(records, bootstrap=20) | sticker_frequency(records, bootstrap=20)
    sent = sum(bool(r["pred_image"]) for r in records)
    assert scores["sticker_frequency"].score == sent / len(records)
    gold = sum(bool(r["response_image"]) for r in records)
    hits = sum(bool(r["pred_image"]) and bool(r["response_image"]) for r in records)
    assert scores["send_f1"].score == (2 * hits / (sent + gold) if sent + gold else 0.0)


def test_bad_stage_and_missing_data_are_user_errors(tmp_path, small_index):
    runner = CliRunner()
    base = ["pegs", "train", "--preset", "tiny", "--stickers", str(small_index.library.root), "--out", str(tmp_path)]
    result = runner.invoke(app, [*base, "--stages", "perception,dance"])
    assert result.exit_code != 0 and "unknown stage(s) dance" in " ".join(str(result.exception).split())
    result = runner.invoke(app, [*base, "--stages", "joint"])
    assert "give --data SAMPLES" in str(result.exception)
