"""The paper-shapes preset (issue 18): the paper's classes and sizes with random weights, its shrunk CPU form, and
checkpoints that rebuild frozen random parts from the seed instead of copying them."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from stickerconv.pegs.config import (
    BLIP2_OPT_27B,
    BYTE_LEVEL,
    BYTE_LEVEL_LLAMA,
    CLIP_VIT_L14,
    LLAMA_7B,
    SD15_RANDOM,
    DiffusionConfig,
    PegsConfig,
    paper_shapes,
)
from stickerconv.pegs.model import STATE_FILE, WEIGHTS_FILE, PegsModel, load_tokenizer
from stickerconv.pegs.sequence import image_block_example, sample_example

from helpers.pegs import tiny_model


def _keys(value: object, prefix: str = "") -> set[str]:
    """Every nested key path of a config value: equal sets mean the same config keys, whatever the sizes."""
    if not isinstance(value, dict):
        return set()
    out = set()
    for k, v in value.items():
        out |= {prefix + k} | _keys(v, prefix + k + ".")
    return out


def test_paper_shapes_is_the_paper_preset_with_random_sources():
    shapes, paper = PegsConfig.preset("paper-shapes"), PegsConfig.preset("paper")
    assert PegsConfig.from_json(shapes.to_json()) == shapes
    assert shapes.llm.name_or_path is None and shapes.llm.random == LLAMA_7B
    assert shapes.llm.tokenizer == BYTE_LEVEL_LLAMA and shapes.llm.dtype == paper.llm.dtype == "float16"
    assert (shapes.vision.kind, shapes.vision.name_or_path, shapes.vision.random) == ("blip2", None, BLIP2_OPT_27B)
    assert (shapes.retrieval_vision.kind, shapes.retrieval_vision.random) == ("clip", CLIP_VIT_L14)
    assert shapes.vision.image_size == shapes.retrieval_vision.image_size == paper.vision.image_size == 224
    assert (shapes.sd.name_or_path, shapes.sd.random) == (SD15_RANDOM, None)
    same = ("n_ret_tokens", "n_gen_tokens", "retrieval_dim", "tau", "mapper", "lora", "max_length", "style")
    assert {k: getattr(shapes, k) for k in same} == {k: getattr(paper, k) for k in same}
    assert (shapes.n_ret_tokens, shapes.n_gen_tokens, shapes.max_length, shapes.style) == (32, 32, 1024, "v0")
    drop = {"name_or_path", "random"}
    assert shapes.sd.model_dump(exclude=drop) == paper.sd.model_dump(exclude=drop)  # 50 steps, 7.5, 512 px
    assert (LLAMA_7B["hidden_size"], LLAMA_7B["num_hidden_layers"], LLAMA_7B["intermediate_size"]) == (4096, 32, 11008)
    assert BLIP2_OPT_27B["num_query_tokens"] == 32 and BLIP2_OPT_27B["qformer_config"]["hidden_size"] == 768


def test_the_shrunk_form_keeps_every_config_key_and_class():
    full, shrunk = paper_shapes(), paper_shapes(shrink=True)
    assert _keys(shrunk.llm.random) == _keys(full.llm.random)
    assert _keys(shrunk.vision.random) == _keys(full.vision.random)
    assert _keys(shrunk.retrieval_vision.random) == _keys(full.retrieval_vision.random)
    assert shrunk.sd.name_or_path == SD15_RANDOM and set(shrunk.sd.random) == {"unet", "vae", "text_encoder"}
    assert shrunk.llm.random["hidden_size"] < 128 and shrunk.llm.random["num_hidden_layers"] == 2
    assert shrunk.mapper.out_dim == shrunk.sd.random["text_encoder"]["hidden_size"]
    assert (shrunk.n_ret_tokens, shrunk.n_gen_tokens, shrunk.style) == (32, 32, "v0")
    with pytest.raises(ValueError, match="sd15-random"):
        DiffusionConfig(random={"unet": {}})
    with pytest.raises(ValueError, match="unknown parts"):
        DiffusionConfig(name_or_path=SD15_RANDOM, random={"safety_checker": {}})


def test_full_sizes_count_the_papers_parameters_on_the_meta_device():
    """Built on torch's meta device: shapes without memory, so the 7 B model is counted, never allocated."""
    from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

    from stickerconv.pegs.diffusion import sd15_random
    from stickerconv.pegs.vision import random_blip2

    cfg = paper_shapes()
    tok = load_tokenizer(cfg.llm.tokenizer)
    assert len(tok) == 32_000

    def count(module: torch.nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    with torch.device("meta"):
        llm = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), **cfg.llm.random))
        blip2 = random_blip2(cfg.vision.random)
        clip = CLIPVisionModel(CLIPVisionConfig(**cfg.retrieval_vision.random))
        sd = sd15_random(cfg.sd.random)
    assert count(llm) == 6_738_415_616  # Llama-2-7B / Vicuna-7B v1.5
    assert blip2.n_tokens == 32 and blip2.token_dim == 768 and blip2.pooled_dim == 1408
    assert 0.98e9 < count(blip2.vision_model) < 0.99e9  # EVA ViT-g/14
    assert 0.10e9 < count(blip2.qformer) < 0.11e9
    assert 303.0e6 < count(clip) < 303.5e6  # CLIP ViT-L/14 vision tower
    assert (count(sd.unet), count(sd.vae), count(sd.text_encoder)) == (859_520_964, 83_653_863, 123_060_480)
    assert sd.width == 768 and type(sd.scheduler).__name__ == "PNDMScheduler"


def test_the_padded_byte_level_tokenizer_gives_the_papers_token_ids():
    tok = load_tokenizer(BYTE_LEVEL_LLAMA)
    text = "Héllo, sticker!"
    ids = tok(text, add_special_tokens=False).input_ids
    assert len(ids) == len(text.encode()) and max(ids) < 258 and tok.decode(ids) == text
    shrunk = paper_shapes(shrink=True)
    model = PegsModel(shrunk.model_copy(update={"llm": shrunk.llm.model_copy(update={"tokenizer": BYTE_LEVEL_LLAMA})}))
    assert model.new_token_ids[:3] == [32_000, 32_001, 32_002]  # <Img>, </Img>, [IMG1] as in §5.1
    assert model.llm.get_input_embeddings().weight.shape == (32_000 + 2 + 64, 64)
    with pytest.raises(ValueError, match="at least 258"):
        load_tokenizer(f"{BYTE_LEVEL}-100")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper_shapes_img")
    for i, colour in enumerate([(255, 0, 0, 255), (0, 200, 0, 255), (0, 0, 255, 255), (90, 90, 0, 255)]):
        Image.new("RGBA", (40, 40), colour).save(root / f"s{i}.png")
    return root


def _dialogue_example(images, style: str = "v0"):
    from stickerconv.data.samples import render_samples
    from stickerconv.schema import Conversation, Sticker, Turn

    s = [Sticker(image=f"s{i}.png", description=f"sticker {i}") for i in range(4)]
    turns = [
        Turn(turn=1, user_message="hi", system_message="hello", user_sticker=s[0], system_sticker=s[1]),
        Turn(turn=2, user_message="sad", system_message="hug", user_sticker=s[2], system_sticker=s[3]),
    ]
    sample = render_samples(
        Conversation(conversation=turns, user_persona="p", user_status="s"), style, lambda x: x.image
    )
    return sample_example(sample[-1], images, style, "be kind")


def _trained_like(model: PegsModel) -> PegsModel:
    """Every trainable part moved away from its init, as training would move it (LoRA B starts at zero)."""
    model.attach_lora()
    params = model.freeze_except(("lora", "proj", "tokens", "ret", "gen"))
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in params:
            noise = 0.05 * torch.randn(p.shape, generator=gen).to(p.dtype)
            if any(p is w for w in model.token_matrices()):
                p[model.new_token_ids] += noise[model.new_token_ids]  # only the new rows ever train
            else:
                p += noise
    model.freeze_except(())  # as loaded: frozen (nn.Transformer takes another kernel path with trainable weights)
    return model.eval()


def _outputs(model: PegsModel, images) -> dict[str, torch.Tensor]:
    batch = model.collator()([_dialogue_example(images), image_block_example(images / "s2.png", "sticker 2")])
    targets = torch.linspace(-1, 1, 2 * 77 * model.config.mapper.out_dim).view(2, 77, -1)
    with torch.no_grad():
        out = model(batch, gen_targets=targets)
        logits = model.llm(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    return {
        "lm": out.lm_loss,
        "gen": out.gen_loss,
        "ret": out.ret_loss,
        "logits": logits,
        "perception": model.vision(batch.pixels).tokens,
        "sticker_side": model.image_embeddings(batch.target_pixels),
    }


def test_a_shrunk_paper_shapes_checkpoint_holds_only_trained_parts_and_round_trips(tmp_path, images):
    model = _trained_like(PegsModel(paper_shapes(shrink=True)))
    folder = model.save_pretrained(tmp_path / "ckpt")
    from safetensors.torch import load_file

    stored = load_file(str(folder / WEIGHTS_FILE))
    frozen = [k for k in stored if k.startswith(("vision.", "retrieval_vision.", "llm.")) and "lora_" not in k]
    assert frozen == []  # no backbone, no BLIP-2, no CLIP (and SD is never part of the model)
    assert not any(word in k for k in stored for word in ("unet", "vae", "text_encoder"))
    assert {k.split(".")[0] for k in stored} == {"proj", "ret_heads", "gen_mapper", "llm", "token_rows"}
    assert stored["token_rows.0"].shape == (len(model.new_token_ids), 64)  # untied: embedding and LM head rows
    assert stored["token_rows.1"].shape == (len(model.new_token_ids), 64)
    model_bytes = sum(v.numel() * v.element_size() for v in model.state_dict().values())
    assert (folder / WEIGHTS_FILE).stat().st_size < model_bytes / 4
    state = json.loads((folder / STATE_FILE).read_text())
    assert state["format"] == 2 and state["lora"] and state["rebuilt_fingerprint"].startswith("sha256:")

    again = PegsModel.from_pretrained(folder)
    want, got = _outputs(model, images), _outputs(again, images)
    for name in want:
        assert torch.equal(want[name], got[name]), name
    assert PegsModel(paper_shapes(shrink=True)).rebuilt_fingerprint == model.rebuilt_fingerprint


def test_a_rebuild_that_differs_is_refused(tmp_path):
    folder = tiny_model().save_pretrained(tmp_path / "ckpt")
    state = json.loads((folder / STATE_FILE).read_text())
    state["rebuilt_fingerprint"] = "sha256:" + "0" * 64  # as if another torch had drawn the random init
    (folder / STATE_FILE).write_text(json.dumps(state))
    with pytest.raises(ValueError, match="come out differently"):
        PegsModel.from_pretrained(folder)


def test_a_format_1_checkpoint_with_the_random_parts_stored_still_loads_them(tmp_path, images):
    """Checkpoints written before issue 18 copied a random backbone and encoder in full: they load, and the
    stored values are the ones used."""
    from safetensors.torch import save_file

    model = tiny_model()
    folder = model.save_pretrained(tmp_path / "ckpt")
    layer = "llm.model.layers.0.mlp.up_proj.weight"
    with torch.no_grad():
        model.state_dict()[layer].add_(1.0)  # a stored value the seed cannot rebuild
    old_kept = {"proj", "ret_heads", "gen_mapper", "vision", "llm"}  # format 1: random parts in full
    legacy = {k: v.clone().contiguous() for k, v in model.state_dict().items() if k.split(".")[0] in old_kept}
    save_file(legacy, str(folder / WEIGHTS_FILE))
    (folder / STATE_FILE).write_text(json.dumps({"format": 1, "lora": False}))
    again = PegsModel.from_pretrained(folder)
    assert torch.equal(again.state_dict()[layer], model.state_dict()[layer])
    assert torch.equal(_outputs(again, images)["logits"], _outputs(model, images)["logits"])
