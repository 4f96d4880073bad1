"""PEGS image encoders: the offline CNN (and its contrastive pretraining), CLIP and BLIP-2 via tiny random configs."""

from __future__ import annotations

import pytest
import torch

from stickerconv.pegs.config import PegsConfig, VisionConfig
from stickerconv.pegs.vision import ImageTransform, build_vision, pretrain_cnn, save_cnn, sticker_text
from stickerconv.stickers.library import StickerLibrary

TINY_CLIP = {
    "hidden_size": 32,
    "intermediate_size": 37,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "image_size": 32,
    "patch_size": 8,
}
TINY_BLIP2 = {
    "vision_config": {
        "hidden_size": 32,
        "intermediate_size": 37,
        "num_hidden_layers": 1,
        "num_attention_heads": 4,
        "image_size": 32,
        "patch_size": 8,
    },
    "qformer_config": {
        "hidden_size": 32,
        "intermediate_size": 37,
        "num_hidden_layers": 1,
        "num_attention_heads": 4,
        "encoder_hidden_size": 32,
        "vocab_size": 99,
    },
    "text_config": {
        "model_type": "opt",
        "hidden_size": 16,
        "num_hidden_layers": 1,
        "ffn_dim": 16,
        "num_attention_heads": 2,
        "vocab_size": 99,
        "word_embed_proj_dim": 16,
    },
    "num_query_tokens": 4,
}


def test_cnn_shapes():
    enc = build_vision(VisionConfig(kind="cnn", cnn_channels=[8, 16], cnn_grid=2))
    out = enc(torch.randn(3, 3, 32, 32))
    assert out.tokens.shape == (3, 4, 16) and out.pooled.shape == (3, 16)
    assert not any(p.requires_grad for p in enc.parameters())


def test_clip_vision_path_with_a_tiny_random_config():
    enc = build_vision(VisionConfig(kind="clip", random=TINY_CLIP, image_size=32))
    out = enc(torch.randn(2, 3, 32, 32))
    assert out.tokens.shape == (2, enc.n_tokens, 32) and enc.n_tokens == 17 and out.pooled.shape == (2, 32)


def test_blip2_vision_and_qformer_path_with_a_tiny_random_config():
    enc = build_vision(VisionConfig(kind="blip2", random=TINY_BLIP2, image_size=32))
    out = enc(torch.randn(2, 3, 32, 32))
    assert out.tokens.shape == (2, 4, 32) and out.pooled.shape == (2, 32)


def test_pegs_with_blip2_perception_and_clip_retrieval(small_pack):
    from stickerconv.pegs.model import PegsModel
    from stickerconv.pegs.sequence import image_block_example

    cfg = PegsConfig.preset(
        "tiny",
        vision=VisionConfig(kind="blip2", random=TINY_BLIP2, image_size=32),
        retrieval_vision=VisionConfig(kind="clip", random=TINY_CLIP, image_size=32),
    )
    model = PegsModel(cfg)
    library = StickerLibrary.load(small_pack)
    batch = model.collator()([image_block_example(library.image_path(s), s.description) for s in library.stickers[:3]])
    out = model(batch)
    assert out.ret_loss is not None and torch.isfinite(out.lm_loss)
    assert model.image_embeddings(batch.target_pixels).shape == (3, 256)


def test_cnn_contrastive_pretraining(small_pack, embedder, tmp_path):
    library = StickerLibrary.load(small_pack)
    stickers = library.stickers[:64]
    cfg = VisionConfig(kind="cnn", cnn_channels=[8, 16, 32])
    texts = [sticker_text(s.label, s.description) for s in stickers]
    enc, losses = pretrain_cnn(
        [library.image_path(s) for s in stickers], texts, embedder.embed, cfg, steps=30, batch_size=32, lr=3e-3
    )
    assert sum(losses[-5:]) < sum(losses[:5])
    save_cnn(enc, tmp_path / "cnn.pt")
    again = build_vision(cfg.model_copy(update={"name_or_path": str(tmp_path / "cnn.pt")}))
    x = ImageTransform(cfg)(library.image_path(stickers[0])).unsqueeze(0)
    assert torch.equal(enc(x).pooled, again(x).pooled)
    with pytest.raises(ValueError, match="matched"):
        pretrain_cnn([library.image_path(stickers[0])], texts, embedder.embed, cfg, steps=1)
