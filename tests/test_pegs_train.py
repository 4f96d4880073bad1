"""PEGS training on the tiny config: every stage's loss falls, checkpoints reload greedy-identical, resume; stages
change mixed precision in one process; workers, checkpointing and device-side losses leave the losses as they were."""

from __future__ import annotations

import copy
import json
import math
import pickle
import statistics
import sys

import pytest
import torch

from stickerconv.pegs import train as train_module
from stickerconv.pegs.model import PegsModel
from stickerconv.pegs.train import TRAINER_STATE, StageConfig, dialogue_examples, sticker_examples, train_stage
from stickerconv.stickers.library import StickerLibrary

from helpers.pegs import dialogue_samples, tiny_model, trained_tiny


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


def test_training_resumes_from_its_folder(tmp_path, small_pack, caplog):
    """A finished stage keeps no AdamW moments (they would be most of its folder); raising ``max_steps``
    still extends it, the moments starting afresh, and says so."""
    library = StickerLibrary.load(small_pack)
    model = tiny_model()
    examples = dialogue_examples(dialogue_samples(library, 2), small_pack, model)
    cfg = StageConfig(stage="joint", lr=1e-3, warmup_steps=0, max_steps=2, batch_size=2, checkpoint_every=1)
    first = train_stage(model, examples, cfg, tmp_path)
    finished = torch.load(tmp_path / TRAINER_STATE, weights_only=False)
    assert finished["step"] == 2 and finished["optimizer"] is None and finished["scheduler"] is not None
    with caplog.at_level("WARNING", logger="stickerconv.pegs.train"):
        again = train_stage(tiny_model(), examples, cfg.model_copy(update={"max_steps": 4}), tmp_path)
    assert first.steps == 2 and again.steps == 4
    assert again.losses[:2] == first.losses and len(again.losses) == 4
    assert "finished at step 2 to 4" in caplog.text and "start afresh" in caplog.text


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


def perception_examples(pack, n: int = 16):
    """Perception examples (a user sticker, randomly cropped, then its caption) for the first ``n`` stickers."""
    library = StickerLibrary.load(pack)
    return sticker_examples(StickerLibrary(library.root, library.stickers[:n]), "perception")


def test_stages_change_mixed_precision_in_one_process(tmp_path, small_pack):
    """fp32, then bf16 autocast, then fp32 again in one process: accelerate refuses a second Accelerator with another
    precision unless train_stage resets its state, and each stage must run in its own precision (the LM head's
    output dtype shows which) and leave the model's forward unwrapped."""
    model = tiny_model()
    examples = perception_examples(small_pack)
    seen: list[torch.dtype] = []
    hook = model.llm.get_output_embeddings().register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    runs = {}
    for name, precision in (("fp32", "no"), ("bf16", "bf16"), ("again", "no")):
        seen.clear()
        cfg = StageConfig(
            stage="perception", lr=1e-2, warmup_steps=0, max_steps=2, batch_size=4, mixed_precision=precision
        )
        result = train_stage(model, examples, cfg, tmp_path / name)
        runs[name] = (result, set(seen))
    hook.remove()
    for name, (result, _) in runs.items():
        assert result.steps == 2 and len(result.losses) == 2, name
        assert all(math.isfinite(loss) for loss in result.losses), (name, result.losses)
    assert [dtypes for _, dtypes in runs.values()] == [{torch.float32}, {torch.bfloat16}, {torch.float32}]
    assert "_original_forward" not in vars(model) and not model.training
    assert runs["bf16"][0].losses != runs["again"][0].losses  # the third stage trained on from the second's weights


def test_collate_pickles_and_seeds_each_example_by_its_key(small_pack):
    """DataLoader workers get a pickled copy of the collate function; an example's crops depend on its key alone
    (not on the batch it lands in or its neighbours), and a new epoch's key draws new ones."""
    from stickerconv.pegs.train import _Collate

    model = tiny_model()
    examples = perception_examples(small_pack, 4)
    collate = _Collate(model.collator(train=True), seed=3)
    items = list(enumerate(examples))
    whole = collate(items).pixels  # (4, 3, S, S): one user sticker per example
    assert torch.equal(pickle.loads(pickle.dumps(collate))(items).pixels, whole)
    regrouped = torch.cat([collate(items[2:]).pixels, collate(items[:2]).pixels])
    assert torch.equal(regrouped, torch.cat([whole[2:], whole[:2]]))
    next_epoch = collate([(key + len(examples), ex) for key, ex in items]).pixels
    assert not torch.equal(next_epoch, whole)


def test_loader_workers_give_the_same_losses(tmp_path, small_pack):
    """Two workers collate the batches in other processes, in whatever order they finish: the losses are the ones
    collated in the training process (the perception stage crops every example)."""
    examples = perception_examples(small_pack)
    cfg = StageConfig(stage="perception", lr=1e-2, warmup_steps=0, max_steps=3, batch_size=4)
    model = (
        tiny_model()
    )  # copies of one: two tiny models tokenise differently (the byte-level tokenizer's symbol order is random)
    inline = train_stage(copy.deepcopy(model), examples, cfg.model_copy(update={"num_workers": 0}), tmp_path / "a")
    workers = train_stage(model, examples, cfg.model_copy(update={"num_workers": 2}), tmp_path / "b")
    assert len(inline.losses) == 3 and workers.losses == inline.losses


def test_gradient_checkpointing_recomputes_and_trains_alike(tmp_path, small_pack):
    """With checkpointing a decoder layer's first norm runs twice a micro-step (forward, then recomputed in the
    backward), and the joint stage (LoRA, dropout) gives the same losses: the first from the same forward, the
    second after an update from the same gradients. The stage turns it off again."""
    library = StickerLibrary.load(small_pack)
    base = tiny_model()
    examples = dialogue_examples(dialogue_samples(library, 2), small_pack, base)
    runs = {}
    for on in (False, True):
        model = copy.deepcopy(base)
        calls: list[int] = []
        # inside the checkpointed forward (transformers keeps the layer's own hooks out of the recompute)
        norm = model.llm.model.layers[0].input_layernorm
        handle = norm.register_forward_pre_hook(lambda *_, sink=calls: sink.append(1))
        cfg = StageConfig(stage="joint", lr=1e-3, warmup_steps=0, max_steps=2, batch_size=2, gradient_checkpointing=on)
        result = train_stage(model, examples, cfg, tmp_path / str(on))
        handle.remove()
        left_on = any(getattr(m, "gradient_checkpointing", False) for m in model.llm.modules())
        runs[on] = (result.losses, len(calls), left_on)
    (plain, plain_calls, _), (checkpointed, checkpointed_calls, left_on) = runs[False], runs[True]
    assert checkpointed_calls == 2 * plain_calls > 0
    assert checkpointed[0] == plain[0]
    assert checkpointed[1] == pytest.approx(plain[1], abs=1e-6)
    assert not left_on


def test_losses_stay_on_the_device_between_log_points(tmp_path, small_pack, monkeypatch):
    """No host read of a tensor per step: train.py reads losses at log and checkpoint points only, so 2 and 6 steps
    between them cost the same reads, and every step's loss is still recorded."""
    reads: list[str] = []

    def counted(real):
        def read(self, *args):
            if sys._getframe(1).f_code.co_filename == train_module.__file__:
                reads.append(real.__name__)
            return real(self, *args)

        return read

    for name in ("item", "tolist"):
        monkeypatch.setattr(torch.Tensor, name, counted(getattr(torch.Tensor, name)))
    examples = perception_examples(small_pack, 32)  # 8 steps an epoch: one loader pass either way
    base = tiny_model()
    counts, results = [], []
    for steps in (2, 6):
        reads.clear()
        cfg = StageConfig(
            stage="perception",
            lr=1e-2,
            warmup_steps=0,
            max_steps=steps,
            batch_size=4,
            log_every=100,
            checkpoint_every=100,
        )
        results.append(train_stage(copy.deepcopy(base), examples, cfg, tmp_path / str(steps)))
        counts.append(len(reads))
    assert counts[0] == counts[1] > 0
    assert [len(r.losses) for r in results] == [2, 6] and results[1].losses[:2] == results[0].losses


def test_an_interrupted_stage_resumes_to_the_uninterrupted_losses(tmp_path, small_pack):
    """Stopped after step 3 of 4 (its checkpoint is step 2's), a rerun skips the batches of that epoch already seen
    and ends where an uninterrupted run ends: same batches, crops, dropout and learning rates."""
    library = StickerLibrary.load(small_pack)
    base = tiny_model()
    examples = dialogue_examples(dialogue_samples(library, 2), small_pack, base)  # 6 turns: 3 steps an epoch
    cfg = StageConfig(stage="joint", lr=1e-3, warmup_steps=1, max_steps=4, batch_size=2, checkpoint_every=2)
    straight = train_stage(copy.deepcopy(base), examples, cfg, tmp_path / "straight")

    def stop_at_three(step: int, total: int) -> None:
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_stage(copy.deepcopy(base), examples, cfg, tmp_path / "resumed", on_progress=stop_at_three)
    interrupted = torch.load(tmp_path / "resumed" / TRAINER_STATE, weights_only=False)
    assert interrupted["step"] == 2 and interrupted["optimizer"]["state"]  # mid-stage: the moments are kept
    resumed = train_stage(copy.deepcopy(base), examples, cfg, tmp_path / "resumed")
    assert resumed.steps == 4 and resumed.losses == pytest.approx(straight.losses, abs=1e-6)
