"""The frozen Stable Diffusion side of PEGS: L_gen targets and PEGS-Gen / PEGS-RAG images.

Why here: the SD text encoder gives the generation mapper its regression target (77 x width, §5.3),
and the diffusers pipelines turn mapped ``prompt_embeds`` into stickers (§5.5). No SD weights exist
offline (offline-assets §4), so ``name_or_path = "tiny-random"`` builds a tiny randomly initialised
UNet, VAE and CLIP text encoder (as in diffusers' own pipeline tests) with a tokenizer from a
generated character vocabulary: the real code path runs, the images are noise. ``"sd15-random"``
builds SD-1.5's own shapes (its published config values, written below) with random weights, for
measuring the paper's costs without a download; ``DiffusionConfig.random`` narrows them for CPU tests.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from stickerconv.pegs.config import SD15_RANDOM, TINY_RANDOM, DiffusionConfig

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


# SD-1.5's published config values (stable-diffusion-v1-5: unet/, vae/, text_encoder/, scheduler/ config.json):
# 859.5 M + 83.7 M + 123.1 M parameters; the text encoder is CLIP ViT-L/14's, 77 x 768
SD15_UNET: dict[str, Any] = {
    "sample_size": 64,  # latents of 512 px images
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [320, 640, 1280, 1280],
    "layers_per_block": 2,
    "attention_head_dim": 8,
    "norm_num_groups": 32,
    "norm_eps": 1e-5,
    "act_fn": "silu",
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "downsample_padding": 1,
    "mid_block_scale_factor": 1,
    "center_input_sample": False,
}
SD15_VAE: dict[str, Any] = {
    "sample_size": 512,
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "act_fn": "silu",
    "scaling_factor": 0.18215,
}
SD15_TEXT_ENCODER: dict[str, Any] = {
    "vocab_size": 49408,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "projection_dim": 768,
}
SD15_SCHEDULER: dict[str, Any] = {  # PNDM, as SD-1.5's scheduler/ folder
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
}


def sd15_random(overrides: dict[str, dict[str, Any]] | None = None, seed: int = 0) -> SDComponents:
    """SD-1.5's UNet, VAE, CLIP text encoder and PNDM scheduler with random weights (no download).

    ``overrides`` replaces config values per part (``unet``, ``vae``, ``text_encoder``): the classes and the
    code path stay SD-1.5's, only the sizes change. The UNet's cross-attention width always follows the text
    encoder's. No CLIP BPE vocabulary installs offline, so the tokenizer is ``tiny-random``'s character one over
    SD-1.5's 49,408-row embedding table: prompts tokenise differently, every shape is SD-1.5's."""
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    overrides = overrides or {}
    torch.manual_seed(seed)
    tokenizer = _char_clip_tokenizer()
    text_kwargs = {**SD15_TEXT_ENCODER, **overrides.get("text_encoder", {})}
    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id, "pad_token_id": 1}
    text_encoder = CLIPTextModel(CLIPTextConfig(**text_kwargs, **ids))
    unet_kwargs = {**SD15_UNET, **overrides.get("unet", {}), "cross_attention_dim": text_kwargs["hidden_size"]}
    unet = UNet2DConditionModel(**unet_kwargs)
    vae = AutoencoderKL(**{**SD15_VAE, **overrides.get("vae", {})})
    return SDComponents(text_encoder, tokenizer, unet, vae, PNDMScheduler(**SD15_SCHEDULER))


def load_sd(cfg: DiffusionConfig, width: int, seed: int = 0, device: str | torch.device = "cpu") -> SDComponents:
    """The frozen SD parts of ``cfg``; ``width`` (the mapper's out_dim) must equal the text encoder's.

    Random parts are built on the CPU and then moved, so a run on a GPU and a reload on a CPU get the same
    weights from the same seed (CUDA's generator draws other numbers)."""
    if cfg.name_or_path == TINY_RANDOM:
        parts = tiny_random_sd(width, seed)
    elif cfg.name_or_path == SD15_RANDOM:
        parts = sd15_random(cfg.random, seed)
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
