"""The frozen Stable Diffusion side of PEGS: L_gen targets and PEGS-Gen / PEGS-RAG images.

Why here: the SD text encoder gives the generation mapper its regression target (77 x width, §5.3),
and the diffusers pipelines turn mapped ``prompt_embeds`` into stickers (§5.5). No SD weights exist
offline (offline-assets §4), so ``name_or_path = "tiny-random"`` builds a tiny randomly initialised
UNet, VAE and CLIP text encoder (as in diffusers' own pipeline tests) with a tokenizer from a
generated character vocabulary: the real code path runs, the images are noise.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from stickerconv.pegs.config import TINY_RANDOM, DiffusionConfig

log = logging.getLogger(__name__)


@dataclass
class SDComponents:
    text_encoder: Any  # CLIPTextModel
    tokenizer: Any  # CLIPTokenizer
    unet: Any  # UNet2DConditionModel
    vae: Any  # AutoencoderKL
    scheduler: Any

    @property
    def width(self) -> int:
        return int(self.text_encoder.config.hidden_size)


def _char_clip_tokenizer() -> Any:
    """A CLIPTokenizer over printable ASCII characters (no merges): enough for the tiny test model."""
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for code in range(33, 127):
            vocab[chr(code) + suffix] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[])


def tiny_random_sd(width: int, seed: int = 0) -> SDComponents:
    """Tiny random SD parts (about 1M parameters), text-encoder width ``width``; latents are 1/2 size."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    tokenizer = _char_clip_tokenizer()
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=width,
            intermediate_size=2 * width,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    )
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=width,
        attention_head_dim=4,
        norm_num_groups=4,
    )
    vae = AutoencoderKL(
        block_out_channels=[8, 16],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
        norm_num_groups=4,
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return SDComponents(text_encoder, tokenizer, unet, vae, scheduler)


def load_sd(cfg: DiffusionConfig, width: int, seed: int = 0, device: str | torch.device = "cpu") -> SDComponents:
    """The frozen SD parts of ``cfg``; ``width`` (the mapper's out_dim) must equal the text encoder's."""
    if cfg.name_or_path == TINY_RANDOM:
        parts = tiny_random_sd(width, seed)
    else:
        from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        path = cfg.name_or_path
        parts = SDComponents(
            CLIPTextModel.from_pretrained(path, subfolder="text_encoder"),
            CLIPTokenizer.from_pretrained(path, subfolder="tokenizer"),
            UNet2DConditionModel.from_pretrained(path, subfolder="unet"),
            AutoencoderKL.from_pretrained(path, subfolder="vae"),
            PNDMScheduler.from_pretrained(path, subfolder="scheduler"),
        )
    if parts.width != width:
        raise ValueError(
            f"the SD text encoder of {cfg.name_or_path} is {parts.width} wide but the mapper emits {width}; "
            f"set mapper.out_dim to {parts.width} (768 for SD-1.5, 1024 for SD-2)"
        )
    for module in (parts.text_encoder, parts.unet, parts.vae):
        module.requires_grad_(False)
        module.to(device).eval()
    return parts


@torch.no_grad()
def encode_captions(parts: SDComponents, captions: list[str]) -> torch.Tensor:
    """E_SD(caption): (B, 77, width) final text-encoder states, the L_gen target (no guidance)."""
    ids = parts.tokenizer(
        captions, padding="max_length", max_length=77, truncation=True, return_tensors="pt"
    ).input_ids  # (B, 77)
    device = next(parts.text_encoder.parameters()).device
    return parts.text_encoder(ids.to(device)).last_hidden_state  # (B, 77, width)


class StickerPainter:
    """PEGS-Gen (text-to-image) and PEGS-RAG (img2img from the retrieved sticker), both conditioned on
    the mapper's ``prompt_embeds``; 50 steps, guidance 7.5, strength 0.8 by default (§5.5)."""

    def __init__(self, parts: SDComponents, cfg: DiffusionConfig):
        from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionPipeline

        modules = {
            "vae": parts.vae,
            "text_encoder": parts.text_encoder,
            "tokenizer": parts.tokenizer,
            "unet": parts.unet,
            "scheduler": parts.scheduler,
            "safety_checker": None,  # §9 item 35: tolerate a missing checker
            "feature_extractor": None,
            "requires_safety_checker": False,
        }
        self.text2img = StableDiffusionPipeline(**modules)
        self.img2img = StableDiffusionImg2ImgPipeline(**modules)
        for pipe in (self.text2img, self.img2img):
            pipe.set_progress_bar_config(disable=True)
        self.parts, self.cfg = parts, cfg
        self.negative = encode_captions(parts, [cfg.negative_prompt or ""])  # (1, 77, width)

    def _common(self, prompt_embeds: torch.Tensor, seed: int) -> dict[str, Any]:
        device = next(self.parts.unet.parameters()).device
        return {
            "prompt_embeds": prompt_embeds.unsqueeze(0).to(device),  # (1, 77, width)
            "negative_prompt_embeds": self.negative.to(device),  # (1, 77, width)
            "num_inference_steps": self.cfg.steps,
            "guidance_scale": self.cfg.guidance,
            "generator": torch.Generator(device="cpu").manual_seed(seed),
        }

    def generate(self, prompt_embeds: torch.Tensor, seed: int = 0) -> Image.Image:
        size = self.cfg.image_size
        return self.text2img(height=size, width=size, **self._common(prompt_embeds, seed)).images[0]

    def restyle(self, image: Image.Image, prompt_embeds: torch.Tensor, seed: int = 0) -> Image.Image:
        size = self.cfg.image_size
        init = image.convert("RGB").resize((size, size))
        return self.img2img(image=init, strength=self.cfg.strength, **self._common(prompt_embeds, seed)).images[0]
