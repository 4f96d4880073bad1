"""PEGS model pieces: config, InfoNCE, mapper shapes, sequence construction, gradient mask, forced [IMG] block."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from stickerconv.pegs.config import MapperConfig, PegsConfig
from stickerconv.pegs.heads import GenMapper, info_nce
from stickerconv.pegs.sequence import IGNORE, IMG_END, IMG_START, image_roles, img_token, sample_example

from helpers.pegs import boost_token, tiny_model, two_turn_images, two_turn_sample


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return two_turn_images(tmp_path_factory.mktemp("img"))


def test_config_json_round_trip_and_presets():
    for name in ("tiny", "small", "paper"):
        cfg = PegsConfig.preset(name)
        assert PegsConfig.from_json(cfg.to_json()) == cfg
    paper = PegsConfig.preset("paper")
    assert (paper.n_ret_tokens, paper.n_gen_tokens, paper.retrieval_dim, paper.tau) == (32, 32, 256, 0.07)
    assert (paper.mapper.d_model, paper.mapper.n_queries, paper.mapper.out_dim) == (512, 77, 768)
    assert (paper.lora.r, paper.lora.alpha, paper.lora.target_modules) == (8, 16, ["q_proj", "v_proj"])
    with pytest.raises(ValueError, match="unknown PEGS preset"):
        PegsConfig.preset("huge")
    with pytest.raises(ValueError, match="n_gen_tokens"):
        PegsConfig.preset("tiny", n_gen_tokens=0)


def test_info_nce_hand_checked_and_symmetric():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[1.0, 0.0], [1.0, 1.0]])  # normalised: (1, 0), (0.7071, 0.7071)
    tau = 0.5
    c = 1 / math.sqrt(2)
    s = torch.tensor([[1.0, c], [0.0, c]]) / tau  # S_ij = <a_i, b_j> / tau
    # rows: CE over j; columns: CE over i
    row = -(s[0, 0] - torch.logsumexp(s[0], 0) + s[1, 1] - torch.logsumexp(s[1], 0)) / 2
    col = -(s[0, 0] - torch.logsumexp(s[:, 0], 0) + s[1, 1] - torch.logsumexp(s[:, 1], 0)) / 2
    expected = 0.5 * (row + col)
    assert info_nce(a, b, tau).item() == pytest.approx(expected.item(), abs=1e-6)
    x, y = torch.randn(5, 8), torch.randn(5, 8)
    logits = F.normalize(x, dim=-1) @ F.normalize(y, dim=-1).t() / 0.07
    both = 0.5 * (F.cross_entropy(logits, torch.arange(5)) + F.cross_entropy(logits.t(), torch.arange(5)))
    assert info_nce(x, y, 0.07).item() == pytest.approx(both.item(), rel=1e-6)
    assert info_nce(x, y, 0.07).item() == pytest.approx(info_nce(y, x, 0.07).item(), rel=1e-6)


@pytest.mark.parametrize("out_dim", [768, 1024])
def test_mapper_emits_77_prompt_embeddings(out_dim):
    cfg = MapperConfig(d_model=32, encoder_layers=1, decoder_layers=1, heads=4, ffn=64, out_dim=out_dim)
    mapper = GenMapper(in_dim=48, cfg=cfg)
    assert mapper(torch.randn(2, 8, 48)).shape == (2, 77, out_dim)


def test_image_roles_follow_the_template(images):
    for style in ("v0", "v1.5"):
        sample = two_turn_sample(style)
        assert image_roles(sample.input_text, style) == ["user", "system", "user"]


def test_sequence_construction(images):
    model = tiny_model()
    sample = two_turn_sample()
    ex = sample_example(sample, images, "v1.5", model.config.system_prompt)
    batch = model.collator()([ex])
    ids, labels = batch.input_ids[0].tolist(), batch.labels[0].tolist()
    k, n = model.vision.n_tokens, model.config.n_img_tokens
    tok = model.tokenizer
    img_start, img_end = tok.convert_tokens_to_ids([IMG_START, IMG_END])
    img_ids = tok.convert_tokens_to_ids([img_token(i + 1) for i in range(n)])
    # two user stickers -> <Img> + K slots + </Img>, all unsupervised
    assert ids.count(img_start) == ids.count(img_end) == 2
    assert batch.perception_mask.sum().item() == 2 * k and batch.pixels.shape[0] == 2
    for pos in [i for i, t in enumerate(ids) if t == img_start]:
        assert ids[pos + k + 1] == img_end
        assert labels[pos : pos + k + 2] == [IGNORE] * (k + 2)
        assert batch.perception_mask[0, pos + 1 : pos + k + 1].all()
    # the history system sticker is an unsupervised [IMG] block; the response's block is supervised
    blocks = [i for i, t in enumerate(ids) if t == img_ids[0]]
    assert len(blocks) == 2
    assert labels[blocks[0] : blocks[0] + n] == [IGNORE] * n
    assert ids[blocks[1] : blocks[1] + n] == img_ids == labels[blocks[1] : blocks[1] + n]
    assert batch.block_start.tolist() == [blocks[1]]
    # everything before the response is unsupervised; the response text, block and EOS are targets
    response_ids = tok("hug", add_special_tokens=False).input_ids
    first_label = next(i for i, lab in enumerate(labels) if lab != IGNORE)
    assert labels[first_label : first_label + len(response_ids)] == response_ids
    assert labels[-1] == tok.eos_token_id == ids[-1]
    assert ids[0] == tok.bos_token_id and labels[0] == IGNORE
    assert ex.caption == "sticker 0" and ex.target_image == images / "s0.png"
    assert batch.target_rows.tolist() == [0] and batch.captions == ["sticker 0"]


def test_truncation_never_splits_an_image_block(images):
    model = tiny_model(max_length=40)
    ex = sample_example(two_turn_sample(), images, "v1.5", "")
    batch = model.collator()([ex])
    assert batch.input_ids.shape[1] <= 40
    assert batch.perception_mask.sum().item() == model.vision.n_tokens * batch.pixels.shape[0]
    assert batch.block_start.tolist() == [-1] and batch.target_rows.numel() == 0


def _grad_rows(w: torch.Tensor) -> list[int]:
    return (w.grad.abs().sum(dim=1) > 0).nonzero().flatten().tolist()


@pytest.mark.parametrize("lora", [False, True])
def test_gradient_mask_only_new_rows(images, lora):
    model = tiny_model()
    if lora:
        model.attach_lora()
    parts = ("tokens", "proj", "ret", "gen") + (("lora",) if lora else ())
    model.freeze_except(parts)
    ex = sample_example(two_turn_sample(), images, "v1.5", model.config.system_prompt)
    batch = model.collator()([ex, ex])
    out = model(batch, gen_targets=torch.zeros(2, 77, model.config.mapper.out_dim))
    (out.lm_loss + out.gen_loss + out.ret_loss).backward()
    matrices = model.token_matrices()
    assert len(matrices) == 1  # tied in the tiny config; peft keeps the copies tied
    assert _grad_rows(matrices[0]) == sorted(model.new_token_ids)  # <Img>, </Img>, [IMG1..N]: all of them
    assert len(model.new_token_ids) == model.config.n_img_tokens + 2
    if lora:
        base = model.llm.get_input_embeddings().original_module.weight
        assert matrices[0] is not base and not base.requires_grad and base.grad is None
        assert any(p.grad is not None for n, p in model.llm.named_parameters() if "lora_B" in n)


def test_frozen_rows_do_not_move_under_adamw(images):
    from stickerconv.pegs.train import StageConfig, _optimizer

    model = tiny_model()
    params = model.freeze_except(("tokens", "proj"))
    w = model.token_matrices()[0]
    before = w.detach().clone()
    opt = _optimizer(model, params, StageConfig(stage="joint", lr=1e-2, weight_decay=0.5))
    ex = sample_example(two_turn_sample(), images, "v1.5", "")
    model(model.collator()([ex])).lm_loss.backward()
    opt.step()
    changed = ((w.detach() - before).abs().sum(dim=1) > 0).nonzero().flatten().tolist()
    assert changed and set(changed) <= set(model.new_token_ids)


def test_forced_img_block_completion(images):
    model = tiny_model()
    prompt = sample_example(two_turn_sample(), images, "v1.5", "", with_response=False)
    plain = model.generate(prompt, max_new_tokens=5)
    assert not plain.send_sticker and plain.ret_embedding is None and plain.gen_embeds is None
    img = model.img_ids
    boost_token(model, prompt, img[2], 200.0)  # [IMG3] would win if it were allowed before [IMG1]
    boost_token(model, prompt, img[0], 100.0)
    gen = model.generate(prompt, max_new_tokens=5)
    assert gen.send_sticker and gen.token_ids == img  # [IMG1] then the forced rest of the block
    assert gen.ret_embedding.shape == (256,) and torch.linalg.norm(gen.ret_embedding).item() == pytest.approx(1.0)
    assert gen.gen_embeds.shape == (77, model.config.mapper.out_dim)


def test_force_sticker_reads_an_embedding_when_the_model_does_not_send(images):
    model = tiny_model()
    prompt = sample_example(two_turn_sample(), images, "v1.5", "", with_response=False)
    boost_token(model, prompt, model.img_ids[0], -100.0)  # [IMG1] is never the greedy choice here
    plain = model.generate(prompt, max_new_tokens=5)
    forced = model.generate(prompt, max_new_tokens=5, force_sticker=True)
    assert not plain.send_sticker and plain.ret_embedding is None and plain.gen_embeds is None
    assert not forced.send_sticker  # still the model's own decision
    assert forced.token_ids == plain.token_ids and forced.text == plain.text
    assert forced.ret_embedding.shape == (model.config.retrieval_dim,)
    assert torch.linalg.norm(forced.ret_embedding).item() == pytest.approx(1.0)
    assert forced.gen_embeds.shape == (77, model.config.mapper.out_dim)
    again = model.generate(prompt, max_new_tokens=5, force_sticker=True)
    assert torch.equal(again.ret_embedding, forced.ret_embedding)  # greedy: deterministic
