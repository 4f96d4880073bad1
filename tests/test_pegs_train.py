"""PEGS training on the tiny config: every stage's loss falls, checkpoints reload greedy-identical, resume."""

from __future__ import annotations

import json
import statistics

import pytest
import torch

from stickerconv.pegs.model import PegsModel
from stickerconv.pegs.train import TRAINER_STATE, StageConfig, dialogue_examples, train_stage
from stickerconv.stickers.library import StickerLibrary

from test_pegs_fixtures import dialogue_samples, tiny_model, trained_tiny


@pytest.fixture(scope="session")
def trained(tmp_path_factory, small_pack):
    return trained_tiny(tmp_path_factory.getbasetemp(), small_pack)


@pytest.mark.slow
def test_tiny_training_loss_falls_in_every_stage(trained):
    record = json.loads((trained.parent / "losses.json").read_text())
    for stage in ("perception", "retrieval", "generation", "joint"):
        losses = record[stage]["losses"]
        head, tail = statistics.mean(losses[:5]), statistics.mean(losses[-5:])
        assert tail < head, f"{stage}: {losses}"


def test_checkpoint_reloads_and_answers_identically(tmp_path, small_pack):
    library = StickerLibrary.load(small_pack)
    model = tiny_model()
    examples = dialogue_examples(dialogue_samples(library, 3), small_pack, model)
    train_stage(
        model, examples, StageConfig(stage="joint", lr=1e-2, warmup_steps=0, max_steps=2, batch_size=4), tmp_path
    )
    assert model.lora_attached
    prompt = examples[1]
    prompt = type(prompt)(prompt.segments[:-3])  # drop the response: text, [IMG] block and EOS
    reloaded = PegsModel.from_pretrained(tmp_path)
    a, b = model.generate(prompt, max_new_tokens=12), reloaded.generate(prompt, max_new_tokens=12)
    assert a.token_ids == b.token_ids and a.text == b.text
    batch = model.collator()(examples[:2])
    with torch.no_grad():
        la, lb = model(batch).lm_loss, reloaded(batch).lm_loss
    assert la.item() == pytest.approx(lb.item(), abs=1e-6)
    saved = {p.name for p in tmp_path.iterdir()}
    assert {"pegs_config.json", "pegs_state.json", "tokenizer", "weights.safetensors", TRAINER_STATE} <= saved


def test_training_resumes_from_its_folder(tmp_path, small_pack):
    library = StickerLibrary.load(small_pack)
    model = tiny_model()
    examples = dialogue_examples(dialogue_samples(library, 2), small_pack, model)
    cfg = StageConfig(stage="joint", lr=1e-3, warmup_steps=0, max_steps=2, batch_size=2, checkpoint_every=1)
    first = train_stage(model, examples, cfg, tmp_path)
    again = train_stage(tiny_model(), examples, cfg.model_copy(update={"max_steps": 4}), tmp_path)
    assert first.steps == 2 and again.steps == 4
    assert again.losses[:2] == first.losses and len(again.losses) == 4


def test_heads_learn_at_their_own_rate_and_token_rows_without_decay():
    """head_lr goes to the retrieval heads and mapper only; the LLM-side parts keep lr, and the token
    matrices get no weight decay."""
    from stickerconv.pegs.train import _optimizer

    model = tiny_model()
    params = model.freeze_except(("proj", "tokens", "ret", "gen"))
    opt = _optimizer(model, params, StageConfig(stage="joint", lr=1e-4, head_lr=3e-3))
    by_id = {id(p): group for group in opt.param_groups for p in group["params"]}
    heads = [*model.ret_heads.parameters(), *model.gen_mapper.parameters()]
    assert {by_id[id(p)]["lr"] for p in heads} == {3e-3}
    assert {by_id[id(p)]["lr"] for p in model.proj.parameters()} == {1e-4}
    assert {by_id[id(w)]["weight_decay"] for w in model.token_matrices()} == {0.0}
    assert sum(len(g["params"]) for g in opt.param_groups) == len(params)
    default = _optimizer(model, params, StageConfig(stage="joint", lr=1e-4))
    assert {g["lr"] for g in default.param_groups} == {1e-4}


def test_fewer_examples_than_one_batch_is_refused_not_looped_on(tmp_path, small_pack):
    library = StickerLibrary.load(small_pack)
    model = tiny_model()
    examples = dialogue_examples(dialogue_samples(library, 1), small_pack, model)
    cfg = StageConfig(stage="joint", warmup_steps=0, max_steps=2, batch_size=len(examples) + 1)
    with pytest.raises(ValueError, match=f"has {len(examples)} example\\(s\\), fewer than one batch of"):
        train_stage(model, examples, cfg, tmp_path)
    assert not (tmp_path / TRAINER_STATE).exists()
