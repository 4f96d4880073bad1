"""Image–text encoders for the multimodal metrics: CLIP (the paper's) or a labelled offline proxy.

The multimodal metrics (method reference §6.6) compare texts and sticker images in one embedding
space: ``sim(a, b) = 100 · cos(a, b)`` of CLIP ViT-B/32's projected, L2-normalised embeddings, text
truncated to 77 tokens. An encoder here is anything with ``encode_texts`` and ``encode_images``
returning such vectors, so the metrics never care which model produced them.

* :class:`ClipEncoder` is the real path: ``CLIPModel`` through transformers, by hub name or local
  folder (``openai/clip-vit-base-patch32`` by default). No CLIP weights install offline, so tests run
  it on a tiny randomly initialised ``CLIPConfig`` saved to a folder.
* :class:`StickerTextProxyEncoder` works offline but is *not* CLIP: a sticker is represented by its
  annotated text (description and emotion) and embedded with the text embedder (MiniLM), so image
  and text share MiniLM's space. Its numbers are only comparable with other proxy numbers; every
  result computed with it says so in its name and signature (offline-assets §3, §8).

Sticker images are paths as samples store them (relative to an image root, §4.4 and §9 item 20),
resolved against a configurable ``image_root``; absolute paths are used as they are.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from stickerconv.data.resolve import StickerResolver
from stickerconv.stickers.embed import Embedder, load_embedder
from stickerconv.stickers.library import StickerLibrary

log = logging.getLogger(__name__)

DEFAULT_CLIP = "openai/clip-vit-base-patch32"
CLIP_MAX_TOKENS = 77  # CLIP's context length; longer texts are truncated (§6.6)
PROXY_SUFFIX = "_proxy"  # appended to the name of every metric computed with a proxy encoder


class EncoderError(RuntimeError):
    """An encoder that cannot be loaded or an image it cannot encode, with the way to fix it."""


@dataclass(frozen=True)
class StickerImage:
    """A sticker as a sample names it: its image path plus the annotation text the record carries."""

    path: str  # relative to the image root (§4.4), or absolute
    description: str = ""
    emotion: str = ""

    @property
    def text(self) -> str:
        """The annotated text that stands for the image in the proxy: description, then emotion."""
        return " ".join(part.strip() for part in (self.description, self.emotion) if part.strip())


class ImageTextEncoder(Protocol):
    """What the multimodal metrics need: texts and images into one space, rows L2-normalised."""

    name: str  # identifies the model in signatures
    proxy: str  # "" for the real thing, else what it is instead (shown in every signature)
    libraries: tuple[str, ...]  # distributions that did the computing, for the signature's version field

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), D) float32, each row L2-normalised."""
        ...

    def encode_images(self, images: Sequence[StickerImage]) -> np.ndarray:
        """(len(images), D) float32, each row L2-normalised."""
        ...

    def signature_fields(self) -> dict[str, str]:
        """The encoder's part of a metric signature."""
        ...


def _normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


def resolve_image(path: str, image_root: Path | None) -> Path:
    """The image file of a sample path: absolute as given, else under ``image_root``."""
    candidate = Path(path)
    if not candidate.is_absolute():
        if image_root is None:
            raise EncoderError(
                f"sticker image {path!r} is relative and no image root is set; give the folder the sample "
                "paths are relative to (--image-root: the SER30K Images folder or the sticker library folder)"
            )
        candidate = image_root / path
    if not candidate.is_file():
        raise EncoderError(f"sticker image {candidate} does not exist (sample path {path!r}); check --image-root")
    return candidate


def _load_rgb(path: Path):
    """The image over white: stickers are transparent PNGs shown on a light chat background."""
    from PIL import Image

    with Image.open(path) as image:
        rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


class ClipEncoder:
    """CLIP through transformers: projected, L2-normalised text and image embeddings (§6.6)."""

    proxy = ""
    libraries = ("transformers", "torch")

    def __init__(
        self,
        model: str = DEFAULT_CLIP,
        image_root: Path | str | None = None,
        device: str = "cpu",
        batch_size: int = 32,
    ) -> None:
        import torch
        from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

        try:
            self._model = CLIPModel.from_pretrained(model).to(device).eval()
            self._tokenizer = AutoTokenizer.from_pretrained(model)
            self._images = AutoImageProcessor.from_pretrained(model)
        except OSError as exc:
            raise EncoderError(
                f"could not load CLIP model {model!r}: {exc}. No CLIP weights install offline: download them "
                f"where there is network (`hf download {model}`) and pass the folder, or use the labelled "
                "offline proxy (encoder 'proxy')"
            ) from exc
        self._torch, self.device, self.batch_size = torch, device, batch_size
        self.image_root = Path(image_root) if image_root is not None else None
        local = Path(model)
        self.name = f"clip:{local.name if local.is_dir() else model}"
        self.dim = int(self._model.config.projection_dim)
        self.max_tokens = min(CLIP_MAX_TOKENS, int(self._model.config.text_config.max_position_embeddings))

    def signature_fields(self) -> dict[str, str]:
        return {"encoder": self.name, "proxy": "no", "trunc": str(self.max_tokens)}

    @staticmethod
    def _pooled(output) -> object:
        """Projected features: a tensor in transformers 4, ``pooler_output`` of an output in 5."""
        return output if hasattr(output, "shape") else output.pooler_output

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            batch = list(texts[start : start + self.batch_size])
            inputs = self._tokenizer(
                batch, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt"
            ).to(self.device)  # input_ids, attention_mask: (B, L <= 77)
            with self._torch.inference_mode():
                features = self._pooled(self._model.get_text_features(**inputs))  # (B, D)
            out[start : start + len(batch)] = features.float().cpu().numpy()
        return _normalise(out)

    def encode_images(self, images: Sequence[StickerImage]) -> np.ndarray:
        out = np.empty((len(images), self.dim), dtype=np.float32)
        for start in range(0, len(images), self.batch_size):
            batch = [_load_rgb(resolve_image(i.path, self.image_root)) for i in images[start : start + self.batch_size]]
            pixels = self._images(images=batch, return_tensors="pt")["pixel_values"].to(self.device)  # (B, 3, H, W)
            with self._torch.inference_mode():
                features = self._pooled(self._model.get_image_features(pixel_values=pixels))  # (B, D)
            out[start : start + len(batch)] = features.float().cpu().numpy()
        return _normalise(out)


class StickerTextProxyEncoder:
    """Offline stand-in for CLIP, and labelled as one: a sticker is its annotated text, embedded
    with the text embedder. Annotation comes from the sample's sticker metadata or, failing that,
    from a sticker library looked up by image path or id."""

    def __init__(self, embedder: Embedder | None = None, library: StickerLibrary | None = None) -> None:
        self._embedder = embedder or load_embedder("minilm")
        self._resolver = StickerResolver(library) if library is not None else None
        short = "minilm" if "minilm" in self._embedder.name else self._embedder.name
        self.name = f"proxy:{self._embedder.name}"
        self.proxy = f"{short} over sticker text, not CLIP"
        self.libraries = ("onnxruntime",) if "onnx" in self._embedder.name else ("sentence-transformers",)
        self.dim = self._embedder.dim

    def signature_fields(self) -> dict[str, str]:
        return {"encoder": self.name, "proxy": self.proxy, "image": "description+emotion"}

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.empty((0, self.dim), dtype=np.float32)
        return _normalise(np.asarray(self._embedder.embed(list(texts)), dtype=np.float32))  # (N, D)

    def encode_images(self, images: Sequence[StickerImage]) -> np.ndarray:
        return self.encode_texts([self._text(image) for image in images])  # (N, D)

    def _text(self, image: StickerImage) -> str:
        if image.text:
            return image.text
        found = self._resolver.find(image.path) if self._resolver is not None else None
        if found is not None and (found.description.strip() or found.emotion.strip()):
            return StickerImage(image.path, found.description, found.emotion).text
        raise EncoderError(
            f"the proxy encoder represents a sticker by its annotated text, but sticker {image.path!r} has no "
            "description or emotion in the sample (pred_image_metadata / response_image_metadata) and no "
            "sticker library knows it; pass the library the stickers come from"
        )


def load_encoder(
    spec: str,
    image_root: Path | str | None = None,
    library: StickerLibrary | None = None,
    device: str = "cpu",
) -> ImageTextEncoder:
    """``clip`` (ViT-B/32), ``clip:NAME_OR_FOLDER``, or ``proxy`` / ``proxy:EMBEDDER`` (offline)."""
    kind, _, arg = spec.partition(":")
    if kind == "clip":
        return ClipEncoder(arg or DEFAULT_CLIP, image_root=image_root, device=device)
    if kind == "proxy":
        return StickerTextProxyEncoder(load_embedder(arg or "minilm"), library=library)
    raise EncoderError(f"unknown encoder {spec!r}; use 'clip', 'clip:MODEL_OR_FOLDER', 'proxy' or 'proxy:EMBEDDER'")
