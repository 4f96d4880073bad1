"""`accelerate launch` runs `stickerconv pegs train` as 2 DDP processes (gloo, on CPU): they train the weights one
process trains on the same global batch, and rank 0 alone prints and writes.

Why the comparison is exact by construction, not just close:
* accelerate gives each process whole batches of the loader (``split_batches`` False): with the same seed every
  process draws the same shuffled keys, and rank r takes micro-batch r of each group of 2, so one global step of
  2 × 4 is the single process's batch of 8, in the same order;
* each example's random crop is seeded by its key (``_Collate``), not by the batch or process that collates it;
* DDP averages the ranks' gradients, each the mean over that rank's supervised tokens; that equals the mean over
  the 8 examples only when both ranks hold as many tokens, so every caption has the same length (byte-level
  tokenizer: the same number of bytes), and the perception stage has no in-batch negatives (L_ret's would be 4 per
  rank against 8);
* the cosine schedule counts optimiser steps on both sides (train_stage steps it itself; a prepared scheduler
  would advance once per process);
* every process tokenises alike: the tiny preset builds its byte-level tokenizer in a symbol order that differs
  from one build to the next (``tokenizers``' ``ByteLevel.alphabet()`` comes from a hash set), so the config
  names one saved tokenizer that every process loads.

What remains is float summation order, hence the tolerances (measured: weights within 1.5e-8, losses 1e-6)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from stickerconv.cli import app
from stickerconv.data.samples import write_samples
from stickerconv.pegs.config import PegsConfig
from stickerconv.pegs.model import WEIGHTS_FILE, byte_level_tokenizer
from stickerconv.pegs.train import TRAINER_STATE
from stickerconv.stickers.library import StickerLibrary

from helpers.pegs import dialogue_samples, tiny_model

STICKERS = 16
STEPS = 3  # two epochs of 2 global steps of 8: the second epoch's shuffle is compared too


def equal_caption_library(pack: Path, root: Path) -> Path:
    """The pack's first stickers with captions of one length, in a library of their own."""
    source = StickerLibrary.load(pack)
    root.mkdir()
    stickers = []
    for i, sticker in enumerate(source.stickers[:STICKERS]):
        name = Path(sticker.image).name
        shutil.copy(source.image_path(sticker), root / name)
        stickers.append(sticker.model_copy(update={"image": name, "description": f"sticker number {i:02d}"}))
    StickerLibrary(root, stickers).save()
    return root


def tiny_config(root: Path) -> Path:
    """The tiny preset with its byte-level tokenizer saved once, so that every process reads the same ids."""
    byte_level_tokenizer().save_pretrained(root / "tokenizer")
    config = PegsConfig.preset("tiny")
    config = config.model_copy(update={"llm": config.llm.model_copy(update={"tokenizer": str(root / "tokenizer")})})
    config.save(root / "tiny.json")
    return root / "tiny.json"


@pytest.mark.slow
def test_two_processes_train_what_one_trains_on_the_same_global_batch(tmp_path, small_pack):
    library = equal_caption_library(small_pack, tmp_path / "lib")
    samples = tmp_path / "samples.json"
    write_samples(samples, dialogue_samples(StickerLibrary.load(library), 1))
    config = tiny_config(tmp_path)
    common = ["pegs", "train", "--preset", str(config), "--stickers", str(library), "--steps", str(STEPS)]
    common += ["--seed", "7", "--lr", "1e-3"]

    # one process with batches of 8; below, two processes with batches of 4 each: the same global batch
    one = CliRunner().invoke(
        app, [*common, "--batch-size", "8", "--out", str(tmp_path / "one"), "--stages", "perception"]
    )
    assert one.exit_code == 0, one.output

    # the launched run goes on to a gradient stage that loads rank 0's checkpoint and to the send stage, which rank 0
    # runs alone; the others must wait for it and reuse what it wrote
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0"]
    stages = ["--stages", "perception,retrieval,send", "--data", str(samples), "--send-turns", "3"]
    command = [*launch, "--no_python", "stickerconv", *common, "--batch-size", "4", "--out", str(tmp_path / "two")]
    command += stages
    env = os.environ | {
        "ACCELERATE_USE_CPU": "true",  # CPU processes over gloo (accelerate's --cpu alone starts one process)
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "HF_HOME": str(tmp_path / "hf"),  # no accelerate config file of this machine's user applies
        "OMP_NUM_THREADS": "1",  # one core each
    }
    two = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    output = " ".join(two.stdout.split())
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-6000:]

    for line in (f"perception: {STEPS} steps", f"retrieval: {STEPS} steps", "send threshold", "PEGS checkpoint"):
        assert output.count(line) == 1, (line, two.stdout)  # rank 0 printed it, rank 1 did not
    assert (tmp_path / "two" / "03-send" / "send.json").is_file() and (tmp_path / "two" / "final").is_dir()

    a, b = (tmp_path / run / "01-perception" for run in ("one", "two"))
    state_a = torch.load(a / TRAINER_STATE, weights_only=False)
    state_b = torch.load(b / TRAINER_STATE, weights_only=False)
    assert state_a["step"] == state_b["step"] == STEPS
    assert state_b["losses"] == pytest.approx(state_a["losses"], rel=1e-5)
    weights_a, weights_b = load_file(str(a / WEIGHTS_FILE)), load_file(str(b / WEIGHTS_FILE))
    assert weights_a.keys() == weights_b.keys()
    for key, value in weights_a.items():
        torch.testing.assert_close(weights_b[key], value, rtol=1e-5, atol=1e-6, msg=key)
    untrained = tiny_model().proj.weight.detach()
    assert (weights_a["proj.weight"] - untrained).abs().max() > 1e-4  # the compared weights did move
