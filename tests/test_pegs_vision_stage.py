"""The vision stage of `stickerconv pegs train`: the random CNN of a preset is pretrained first, every
later checkpoint names the weights file (not a copy), a rerun reuses it, and a missing file is named."""

from __future__ import annotations

import json
import shutil
import statistics

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from stickerconv.cli import app
from stickerconv.pegs.config import PegsConfig
from stickerconv.pegs.model import PegsModel
from stickerconv.pegs.train import untrained_cnns, vision_stage
from stickerconv.pegs.vision import build_vision
from stickerconv.stickers.library import StickerLibrary

N_STICKERS = 32


@pytest.fixture(scope="module")
def few(small_pack, tmp_path_factory):
    """A library folder of the first stickers of the small pack (images copied)."""
    full = StickerLibrary.load(small_pack)
    root = tmp_path_factory.mktemp("few")
    stickers = full.stickers[:N_STICKERS]
    for s in stickers:
        (root / s.image).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(full.image_path(s), root / s.image)
    StickerLibrary(root, stickers).save()
    return root


def _words(text: str) -> str:
    return " ".join(text.split())


def test_pegs_train_pretrains_the_cnn_first_and_reuses_it(few, tmp_path):
    out = tmp_path / "run"
    args = ["pegs", "train", "--preset", "tiny", "--stickers", str(few), "--out", str(out)]
    args += ["--stages", "perception,vision", "--steps", "2", "--batch-size", "4", "--vision-steps", "40"]
    runner = CliRunner()
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    weights = (out / "00-vision" / "cnn.pt").resolve()
    record = json.loads((out / "00-vision" / "losses.json").read_text())
    losses = record["encoders"]["cnn.pt"]["losses"]
    assert len(losses) == 40 and record["stickers"] == N_STICKERS
    assert statistics.mean(losses[-5:]) < statistics.mean(losses[:5]), losses  # the pretraining loss falls
    assert "vision: cnn.pt 40 steps" in _words(result.output)

    # each later checkpoint carries a copy of the CNN file, named relative to it, and keeps the frozen CNN out
    # of its weights file: a checkpoint moved on its own still loads the pretrained CNN
    for stage in ("01-perception", "final"):
        written = json.loads((out / stage / "pegs_config.json").read_text())
        assert written["vision"]["name_or_path"] == "vision-cnn.pt"
        assert (out / stage / "vision-cnn.pt").read_bytes() == weights.read_bytes()
    assert not any(k.startswith("vision.") for k in load_file(str(out / "01-perception" / "weights.safetensors")))
    moved = shutil.copytree(out / "01-perception", tmp_path / "elsewhere" / "checkpoint")
    model = PegsModel.from_pretrained(moved)
    assert model.config.vision.name_or_path == str(moved / "vision-cnn.pt")
    pretrained = build_vision(PegsConfig.preset("tiny").vision.model_copy(update={"name_or_path": str(weights)}))
    for key, value in pretrained.state_dict().items():
        assert torch.equal(model.vision.state_dict()[key], value), key
    model.save_pretrained(moved)  # saved again in place: still named relative to the checkpoint
    assert json.loads((moved / "pegs_config.json").read_text())["vision"]["name_or_path"] == "vision-cnn.pt"

    # a rerun reuses the finished vision stage (and resumes the finished perception stage)
    before = weights.stat().st_mtime_ns
    rerun = runner.invoke(app, args)
    assert rerun.exit_code == 0, rerun.output
    assert "reused" in rerun.output and weights.stat().st_mtime_ns == before

    # a config whose CNN has weights skips the stage with a note
    config_file = tmp_path / "pretrained.json"
    PegsConfig.load(out / "final" / "pegs_config.json").save(config_file)
    skip = [*args[:3], str(config_file), *args[4:7], str(tmp_path / "again"), *args[8:]]
    skipped = runner.invoke(app, skip)
    assert skipped.exit_code == 0, skipped.output
    assert "skipping the vision stage" in _words(skipped.output)
    assert not (tmp_path / "again" / "00-vision").exists() and (tmp_path / "again" / "01-perception").is_dir()


def test_without_the_vision_stage_the_cnn_stays_random(few, tmp_path):
    args = ["pegs", "train", "--preset", "tiny", "--stickers", str(few), "--out", str(tmp_path)]
    result = CliRunner().invoke(app, [*args, "--stages", "perception", "--steps", "1", "--batch-size", "4"])
    assert result.exit_code == 0, result.output
    assert "CNN stays randomly initialised" in _words(result.output)
    assert PegsConfig.load(tmp_path / "final" / "pegs_config.json").vision.name_or_path is None
    # a frozen random part is not written: it is rebuilt from the seed, as the untrained preset draws it
    assert not any(k.startswith("vision.") for k in load_file(str(tmp_path / "final" / "weights.safetensors")))
    rebuilt = PegsModel.from_pretrained(tmp_path / "final").vision.state_dict()
    drawn = PegsModel(PegsConfig.preset("tiny")).vision.state_dict()
    assert rebuilt.keys() == drawn.keys() and all(torch.equal(rebuilt[k], drawn[k]) for k in drawn)


def test_vision_stage_refuses_a_folder_of_other_cnn_settings(few, tmp_path, embedder):
    library = StickerLibrary.load(few)
    tiny = PegsConfig.preset("tiny")
    assert untrained_cnns(tiny) == ["vision"]
    first = vision_stage(tiny, library, tmp_path, embedder.embed, steps=2)
    assert not first.reused and untrained_cnns(first.config) == []
    assert vision_stage(tiny, library, tmp_path, embedder.embed, steps=2).reused
    wider = tiny.model_copy(update={"vision": tiny.vision.model_copy(update={"cnn_channels": [8, 16, 64]})})
    with pytest.raises(ValueError, match="other CNN settings"):
        vision_stage(wider, library, tmp_path, embedder.embed, steps=2)
    with pytest.raises(ValueError, match="nothing for the vision stage"):
        vision_stage(first.config, library, tmp_path, embedder.embed)


def test_a_missing_cnn_weights_file_is_named(tmp_path):
    missing = tmp_path / "moved" / "cnn.pt"
    config = PegsConfig.preset("tiny")
    config = config.model_copy(update={"vision": config.vision.model_copy(update={"name_or_path": str(missing)})})
    with pytest.raises(FileNotFoundError, match=str(missing)):
        PegsModel(config)
