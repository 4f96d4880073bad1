"""L_ret pooled over gradient-accumulation windows (issue 20): at micro-batch 3 × accumulation 12 the retrieval loss
is computed on every optimiser step over the window's 36 pairs, and its accumulated gradient is the gradient of the
same contrastive loss computed on the 36 pairs at once."""

from __future__ import annotations

import copy

import pytest
import torch

from stickerconv.pegs.heads import RetrievalBank, RetrievalHeads
from stickerconv.pegs.train import STAGE_PARTS, StageConfig, _total, sticker_examples, train_stage
from stickerconv.stickers.library import StickerLibrary

from helpers.pegs import tiny_model

MICRO, ACCUM = 3, 12


def retrieval_examples(pack, n: int):
    library = StickerLibrary.load(pack)
    return sticker_examples(StickerLibrary(library.root, library.stickers[:n]), "retrieval")


def head_grads(model) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in model.ret_heads.named_parameters()}


def test_pooled_gradient_equals_the_full_batch_gradient(small_pack):
    """Accumulated as the training loop does (each micro-batch's loss over the accumulation steps, the pooled L_ret
    weighted by them), the retrieval heads' gradient is the 36-pair loss's; per-micro-batch InfoNCE is not."""
    model = tiny_model().eval()  # eval: no dropout, so the two forwards see the same states
    model.freeze_except(STAGE_PARTS["retrieval"])  # the heads and the [IMG] rows, as the retrieval stage
    collate = model.collator()
    examples = retrieval_examples(small_pack, MICRO * ACCUM)
    micro = [collate(examples[i : i + MICRO]) for i in range(0, len(examples), MICRO)]
    assert all(batch.target_rows.numel() == MICRO for batch in micro)

    bank, pooled_losses = RetrievalBank(), []
    for i, batch in enumerate(micro):
        bank.closing = i == ACCUM - 1
        out = model(batch, ret_bank=bank)
        pooled_losses.append(out.ret_loss)
        (_total("retrieval", out, ret_weight=ACCUM) / ACCUM).backward()  # what accelerator.backward does
    pooled = head_grads(model)
    assert all(loss is None for loss in pooled_losses[:-1]) and len(bank) == 0  # drained at the window's end

    model.zero_grad(set_to_none=True)
    full = model(collate(examples))
    full.ret_loss.backward()
    assert pooled_losses[-1].item() == pytest.approx(full.ret_loss.item(), abs=1e-5)
    for name, grad in head_grads(model).items():
        torch.testing.assert_close(pooled[name], grad, rtol=1e-4, atol=1e-6, msg=name)

    model.zero_grad(set_to_none=True)
    for batch in micro:  # the unpooled loss: each micro-batch's 3 pairs against each other only
        (model(batch).ret_loss / ACCUM).backward()
    separate = head_grads(model)
    assert not torch.allclose(separate["text.weight"], pooled["text.weight"], rtol=1e-2, atol=1e-6)


def test_heads_loss_needs_two_pairs_and_a_bank_drains_in_order():
    heads = RetrievalHeads(8, 6, 4)
    assert heads.loss(torch.randn(1, 8), torch.randn(1, 6), 0.07) is None
    bank = RetrievalBank()
    assert bank.drain() is None
    first, second = (torch.randn(2, 8), torch.randn(2, 6)), (torch.randn(1, 8), torch.randn(1, 6))
    bank.add(*first)
    bank.add(*second)
    text, image = bank.drain()
    assert len(bank) == 0 and torch.equal(text, torch.cat([first[0], second[0]]))
    assert torch.equal(image, torch.cat([first[1], second[1]]))


def test_every_optimiser_step_computes_l_ret_over_the_whole_window(tmp_path, small_pack, monkeypatch):
    """Through train_stage: one pooled L_ret per optimiser step, over all 36 pairs of its 12 micro-batches of 3,
    also after a stage that left accelerate's micro-batch count mid-epoch (the windows stay aligned)."""
    calls: list[int] = []
    real = RetrievalHeads.loss

    def counted(self, text_states, image_features, tau):
        calls.append(text_states.shape[0])
        return real(self, text_states, image_features, tau)

    monkeypatch.setattr(RetrievalHeads, "loss", counted)
    base = tiny_model()
    quiet = {"warmup_steps": 0, "log_every": 100, "checkpoint_every": 100}
    before = StageConfig(stage="retrieval", max_steps=5, batch_size=2, **quiet)
    train_stage(copy.deepcopy(base), retrieval_examples(small_pack, 16), before, tmp_path / "before")  # 8 a epoch
    calls.clear()
    cfg = StageConfig(stage="retrieval", lr=1e-3, max_steps=2, batch_size=MICRO, grad_accum=ACCUM, **quiet)
    result = train_stage(base, retrieval_examples(small_pack, 2 * MICRO * ACCUM), cfg, tmp_path / "pooled")
    assert result.steps == 2 and len(result.losses) == 2
    assert calls == [MICRO * ACCUM, MICRO * ACCUM]
