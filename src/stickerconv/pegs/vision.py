"""Frozen image encoders for PEGS: perception tokens for input stickers, a pooled vector for retrieval.

Why three kinds: the paper's encoders (BLIP-2 vision tower + Q-Former for perception, CLIP ViT for
retrieval) have no offline weights (offline-assets §3), so their transformers loading paths are
kept real and tested with tiny random configs, while the offline default is a small CNN trained
from scratch by contrastive alignment with MiniLM embeddings of the sticker texts
(:func:`pretrain_cnn`). Every encoder returns the same two tensors, so the model never branches.
"""

from __future__ import annotations

import logging
import random
from abc import ABCMeta, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from stickerconv.pegs.config import VisionConfig
from stickerconv.pegs.heads import info_nce

log = logging.getLogger(__name__)


@dataclass
class VisionOutput:
    tokens: torch.Tensor  # (B, K, D) perception tokens
    pooled: torch.Tensor  # (B, P) pooled vector for the retrieval image side


class ImageTransform:
    """Path -> (3, S, S) float tensor, normalised with the encoder's mean/std.

    Transparent stickers are composited on white. Training uses RandomResizedCrop with scale
    0.5-1.0 (BLIP-2's transform, §5.1) from a seeded ``random.Random``; evaluation a plain resize.
    """

    def __init__(self, cfg: VisionConfig, train: bool = False, seed: int = 0):
        self.size, self.train = cfg.image_size, train
        self.mean = torch.tensor(cfg.mean).view(3, 1, 1)
        self.std = torch.tensor(cfg.std).view(3, 1, 1)
        self.rng = random.Random(seed)

    def _crop(self, img: Image.Image) -> Image.Image:
        w, h = img.size
        area = w * h * self.rng.uniform(0.5, 1.0)
        ratio = np.exp(self.rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        cw = min(w, max(1, round((area * ratio) ** 0.5)))
        ch = min(h, max(1, round((area / ratio) ** 0.5)))
        x, y = self.rng.randint(0, w - cw), self.rng.randint(0, h - ch)
        return img.crop((x, y, x + cw, y + ch))

    def __call__(self, path: Path | str) -> torch.Tensor:
        with Image.open(path) as raw:
            rgba = raw.convert("RGBA")
        img = Image.new("RGB", rgba.size, (255, 255, 255))
        img.paste(rgba, mask=rgba.getchannel("A"))
        if self.train:
            img = self._crop(img)
        img = img.resize((self.size, self.size), Image.Resampling.BICUBIC)
        x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)  # (3, S, S)
        return (x - self.mean) / self.std


class VisionEncoder(nn.Module, metaclass=ABCMeta):
    """What PEGS needs of an image encoder."""

    n_tokens: int  # K
    token_dim: int  # D
    pooled_dim: int  # P

    @abstractmethod
    def forward(self, pixels: torch.Tensor) -> VisionOutput:  # pixels: (B, 3, S, S)
        """Token features for the LLM and a pooled vector for retrieval."""


class CnnEncoder(VisionEncoder):
    """Stride-2 conv stages (conv 3x3, GroupNorm, GELU); the last map is pooled to grid x grid tokens."""

    def __init__(self, channels: Sequence[int], grid: int):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for c in channels:
            layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1), nn.GroupNorm(min(8, c), c), nn.GELU()]
            c_in = c
        self.body = nn.Sequential(*layers)
        self.grid = nn.AdaptiveAvgPool2d(grid)
        self.n_tokens, self.token_dim, self.pooled_dim = grid * grid, c_in, c_in

    def forward(self, pixels: torch.Tensor) -> VisionOutput:
        f = self.body(pixels)  # (B, C, h, w)
        tokens = self.grid(f).flatten(2).transpose(1, 2)  # (B, grid*grid, C)
        return VisionOutput(tokens=tokens, pooled=f.mean(dim=(2, 3)))  # pooled: (B, C)


class ClipEncoder(VisionEncoder):
    """transformers ``CLIPVisionModel``: all patch states as tokens, the pooled [CLS] for retrieval."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        cfg = model.config
        self.n_tokens = (cfg.image_size // cfg.patch_size) ** 2 + 1
        self.token_dim = self.pooled_dim = cfg.hidden_size

    def forward(self, pixels: torch.Tensor) -> VisionOutput:
        out = self.model(pixel_values=pixels)
        return VisionOutput(tokens=out.last_hidden_state, pooled=out.pooler_output)  # (B, 1+P, D), (B, D)


class Blip2Encoder(VisionEncoder):
    """BLIP-2's frozen vision tower + Q-Former: the learned queries give (B, 32, 768) perception tokens."""

    def __init__(self, vision_model: nn.Module, query_tokens: nn.Parameter, qformer: nn.Module):
        super().__init__()
        self.vision_model, self.query_tokens, self.qformer = vision_model, query_tokens, qformer
        self.n_tokens = query_tokens.shape[1]
        self.token_dim = qformer.config.hidden_size
        self.pooled_dim = vision_model.config.hidden_size

    def forward(self, pixels: torch.Tensor) -> VisionOutput:
        v = self.vision_model(pixel_values=pixels)
        feats = v.last_hidden_state  # (B, 1+P, Dv)
        mask = torch.ones(feats.shape[:2], dtype=torch.long, device=feats.device)  # (B, 1+P)
        queries = self.query_tokens.expand(feats.shape[0], -1, -1)  # (B, Q, Dq)
        q = self.qformer(query_embeds=queries, encoder_hidden_states=feats, encoder_attention_mask=mask)
        return VisionOutput(tokens=q.last_hidden_state, pooled=v.pooler_output)  # (B, Q, Dq), (B, Dv)


def build_vision(cfg: VisionConfig, seed: int = 0) -> VisionEncoder:
    """The encoder of ``cfg``, frozen and in eval mode. Hub ids download where there is network."""
    torch.manual_seed(seed)
    if cfg.kind == "cnn":
        enc: VisionEncoder = CnnEncoder(cfg.cnn_channels, cfg.cnn_grid)
        if cfg.name_or_path is not None:
            weights = Path(cfg.name_or_path)
            if not weights.is_file():
                # a training config names the vision stage's file by path (checkpoints carry a copy)
                raise FileNotFoundError(
                    f"CNN weights file {weights} (vision name_or_path) is missing: restore it, or point "
                    "name_or_path in the config (pegs_config.json of a checkpoint) at the file from pretrain_cnn; "
                    "a relative name is read from the config file's folder, else the working directory"
                )
            enc.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    elif cfg.kind == "clip":
        from transformers import CLIPVisionConfig, CLIPVisionModel

        model = (
            CLIPVisionModel.from_pretrained(cfg.name_or_path)
            if cfg.name_or_path is not None
            else CLIPVisionModel(CLIPVisionConfig(**(cfg.random or {})))
        )
        enc = ClipEncoder(model)
    elif cfg.name_or_path is not None:
        from transformers import Blip2Model

        # Blip2Model also holds the language model; only the vision tower, queries and Q-Former stay
        full = Blip2Model.from_pretrained(cfg.name_or_path)
        enc = Blip2Encoder(full.vision_model, full.query_tokens, full.qformer)
    else:
        enc = random_blip2(cfg.random or {})
    enc.requires_grad_(False)
    return enc.eval()


def random_blip2(kwargs: dict[str, Any]) -> Blip2Encoder:
    """A randomly initialised BLIP-2 vision tower, query tokens and Q-Former from ``Blip2Config`` kwargs.

    Only the three parts PEGS uses are built: ``Blip2Model`` would also build its language model (OPT-2.7B at
    the paper's config, 2.7 B random parameters thrown away). The queries are drawn from N(0, 0.02) as in
    BLIP-2's training init: transformers starts them at zero, and 32 equal queries give 32 equal tokens."""
    from transformers import Blip2Config, Blip2QFormerModel, Blip2VisionModel

    config = Blip2Config(**kwargs)
    vision_model = Blip2VisionModel(config.vision_config)
    queries = torch.empty(1, config.num_query_tokens, config.qformer_config.hidden_size)  # (1, Q, Dq)
    query_tokens = nn.Parameter(queries.normal_(0.0, config.qformer_config.initializer_range))
    return Blip2Encoder(vision_model, query_tokens, Blip2QFormerModel(config.qformer_config))


def sticker_text(label: str | None, description: str) -> str:
    """The text a CNN learns to match: ``"label: description"``."""
    return f"{label}: {description}" if label else description


def pretrain_cnn(
    images: Sequence[Path],
    texts: Sequence[str],
    embed_texts: Callable[[Sequence[str]], np.ndarray],
    cfg: VisionConfig,
    steps: int = 2000,
    batch_size: int = 128,
    lr: float = 2e-3,
    tau: float = 0.07,
    seed: int = 42,
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[CnnEncoder, list[float]]:
    """Train the offline CNN from scratch: symmetric InfoNCE between a linear projection of its pooled
    output and frozen text embeddings (MiniLM) of the sticker texts. Returns the encoder and the losses.

    ``embed_texts`` is any embedder's ``embed`` (e.g. ``load_embedder("minilm").embed``).
    """
    if len(images) != len(texts) or len(images) < 2:
        raise ValueError(f"need matched images and texts, at least 2; got {len(images)} images, {len(texts)} texts")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    from transformers import get_cosine_schedule_with_warmup

    torch.manual_seed(seed)
    enc = CnnEncoder(cfg.cnn_channels, cfg.cnn_grid)
    text_emb = torch.from_numpy(np.asarray(embed_texts(list(texts)), dtype=np.float32))  # (N, E)
    head = nn.Linear(enc.pooled_dim, text_emb.shape[1])
    transform = ImageTransform(cfg, train=True, seed=seed)
    plain = ImageTransform(cfg, train=False)
    base = torch.stack([plain(p) for p in images])  # (N, 3, S, S) cached for the un-augmented half
    opt = torch.optim.AdamW([*enc.parameters(), *head.parameters()], lr=lr, weight_decay=0.01)
    # linear warmup over 5% then cosine decay; unlike OneCycleLR this is defined for any number of steps
    sched = get_cosine_schedule_with_warmup(opt, max(1, round(0.05 * steps)), steps)
    gen = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    enc.train()
    for step in range(steps):
        idx = torch.randperm(len(images), generator=gen)[:batch_size]  # (B,)
        # half the batch is augmented (crop), half plain, so the encoder sees both views
        pixels = torch.stack([transform(images[i]) if k % 2 else base[i] for k, i in enumerate(idx.tolist())])
        loss = info_nce(head(enc(pixels).pooled), text_emb[idx], tau)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step % 100 == 0:
            log.info("cnn pretrain step %d/%d loss %.4f", step, steps, losses[-1])
        if on_progress:
            on_progress(step + 1, steps)
    enc.requires_grad_(False)
    return enc.eval(), losses


def save_cnn(enc: CnnEncoder, path: Path | str) -> None:
    """The weights file that ``VisionConfig(kind="cnn", name_or_path=path)`` loads."""
    torch.save(enc.state_dict(), path)
