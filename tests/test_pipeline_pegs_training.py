"""`train_pegs` and `fit_send_threshold` without the command line: the tiny preset chained through the
alignment, distill and send stages into the same folders `pegs train` writes, resumed on a rerun."""

from __future__ import annotations

import json

import pytest

from stickerconv.pegs.config import SendFit
from stickerconv.pegs.distill import DISTILL_RECORD
from stickerconv.pegs.model import CONFIG_FILE, PegsModel
from stickerconv.pipelines import PipelineError
from stickerconv.pipelines.pegs_training import (
    SEND_RECORD,
    DataLoaded,
    DistillDone,
    FitSendOptions,
    PegsTrainingOptions,
    SendDone,
    StageNotRun,
    StageTrained,
    fit_send_threshold,
    train_pegs,
)
from stickerconv.stickers.library import StickerLibrary

from helpers.pegs import dialogue_samples, tiny_model


def _write_samples(path, library, n_conversations=4):
    samples = dialogue_samples(library, n_conversations)  # 3 turns each, the second with a gold sticker
    path.write_text(json.dumps([s.model_dump(mode="json") for s in samples]))
    return samples


def test_train_pegs_chains_the_stages_and_resumes(small_index, tmp_path):
    library = small_index.library
    data = tmp_path / "samples.json"
    samples = _write_samples(data, library)
    run = tmp_path / "run"
    options = PegsTrainingOptions(
        preset="tiny",
        stickers=library.root,
        out=run,
        data=data,
        stages=("perception", "retrieval", "distill", "send"),
        steps=3,
        batch_size=4,
        distill_steps=20,
        send_turns=6,
    )
    heard = []
    result = train_pegs(options, on_event=heard.append)

    assert heard == result.events
    assert result.ran == ["perception", "retrieval", "distill", "send"] and result.skipped == {}
    dirs = {"perception": "01-perception", "retrieval": "02-retrieval", "distill": "03-distill", "send": "04-send"}
    assert result.checkpoints == {stage: run / name for stage, name in dirs.items()}
    assert result.final == run / "final" and (run / "final" / CONFIG_FILE).is_file()
    loaded = next(e for e in result.events if isinstance(e, DataLoaded))
    assert loaded.samples == len(samples) and loaded.rendered_style is None  # read as samples, not rendered
    assert StageNotRun("vision", "the CNN stays randomly initialised and frozen", chosen=False) in result.events
    trained = [e for e in result.events if isinstance(e, StageTrained)]
    assert [(e.stage, e.number, e.result.steps) for e in trained] == [("perception", 1, 3), ("retrieval", 2, 3)]
    assert all(len(e.result.losses) == 3 for e in trained)

    record = json.loads((run / "03-distill" / DISTILL_RECORD).read_text())
    assert result.distill == record and record["turns"] == len(samples) and len(record["losses"]) == 20
    fit = SendFit.model_validate_json((run / "04-send" / SEND_RECORD).read_text())
    assert result.send == fit and fit.turns == 6 and fit.target == "share"
    assert PegsModel.from_pretrained(run / "final").config.send.fit == fit  # final/ carries the fitted threshold
    summary = result.to_dict()
    assert summary["ran"] == result.ran and summary["send"]["turns"] == 6 and "losses" not in summary["distill"]
    json.dumps(summary)

    again = train_pegs(options)  # a rerun loads the finished stages instead of fitting them again
    reused = {type(e): e.reused for e in again.events if isinstance(e, (DistillDone, SendDone))}
    assert reused == {DistillDone: True, SendDone: True}
    assert again.distill == record and again.send == fit
    assert [e.result.losses for e in again.events if isinstance(e, StageTrained)] == [e.result.losses for e in trained]

    refit = train_pegs(options.model_copy(update={"send_fit": "f1"}))  # another target is fitted again
    send = next(e for e in refit.events if isinstance(e, SendDone))
    assert not send.reused and send.replaced == fit and send.fit.target == "f1"


def test_train_pegs_refuses_bad_input_before_training(small_pack, tmp_path):
    run = tmp_path / "run"
    base = PegsTrainingOptions(preset="tiny", stickers=small_pack, out=run, stages=("perception", "dance"))
    with pytest.raises(PipelineError, match=r"unknown stage\(s\) dance"):
        train_pegs(base)
    with pytest.raises(PipelineError, match="the joint stage trains on dialogues"):
        train_pegs(base.model_copy(update={"stages": ("joint",)}))
    data = tmp_path / "samples.json"
    _write_samples(data, StickerLibrary.load(small_pack), 1)
    few = base.model_copy(update={"stages": ("joint",), "data": data, "batch_size": 8})
    with pytest.raises(PipelineError, match="the joint stage has 3 example"):
        train_pegs(few)
    assert not run.exists()  # refused before any stage wrote a folder


def test_fit_send_threshold_rewrites_the_checkpoint_config(small_pack, tmp_path):
    library = StickerLibrary.load(small_pack)
    data = tmp_path / "samples.json"
    _write_samples(data, library)
    checkpoint = tmp_path / "older"
    tiny_model().save_pretrained(checkpoint)
    options = FitSendOptions(checkpoint=checkpoint, data=data, stickers=small_pack, target="f1", turns=12)
    result = fit_send_threshold(options)
    assert result.config_file == checkpoint / CONFIG_FILE and result.data.samples == 12
    saved = PegsModel.from_pretrained(checkpoint).config.send
    assert saved.decision == "threshold" and saved.fit == result.fit
    assert result.fit.target == "f1" and result.fit.turns == 12 and result.fit.gold_share == pytest.approx(4 / 12)
    with pytest.raises(PipelineError, match="not a PEGS checkpoint"):
        fit_send_threshold(options.model_copy(update={"checkpoint": tmp_path}))


def test_the_options_mirror_the_library_they_drive():
    """The constants kept here so the CLI's --help loads no torch agree with the modules that define them."""
    from typing import get_args

    from stickerconv.pegs.distill import LIBRARY_STICKERS
    from stickerconv.pegs.send import DEFAULT_TURNS, Target
    from stickerconv.pegs.train import StageConfig
    from stickerconv.pipelines.pegs_training import PRECISIONS, SEND_TARGETS

    assert PegsTrainingOptions.model_fields["send_turns"].default == DEFAULT_TURNS
    assert FitSendOptions.model_fields["turns"].default == DEFAULT_TURNS
    assert PegsTrainingOptions.model_fields["distill_library"].default == LIBRARY_STICKERS
    assert SEND_TARGETS == get_args(Target)
    assert PRECISIONS == get_args(StageConfig.model_fields["mixed_precision"].annotation)
