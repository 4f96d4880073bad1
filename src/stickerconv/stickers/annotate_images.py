"""Images for a vision model: the checks that reject unusable files, and the resized data URI.

The checks are ingest's (``ingest.check_image``: empty, not an image, truncated or corrupt, too
large, unsupported format or mode) plus one that only matters here: an animated image shows a
vision model a single frame, so its annotation would describe a moment, not the sticker.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

from PIL import Image

from stickerconv.llm import ImagePart
from stickerconv.llm.types import ImageURL
from stickerconv.stickers.ingest import check_image

MAX_FILE_SIDE = 4096  # the file limits of `stickers ingest` (its defaults)
MAX_FILE_PIXELS = 16_777_216
DEFAULT_MAX_SIDE = 768  # what is sent: enough for any VLM's encoder, small enough for every server's request limit
MIN_SIDE = 64  # some servers (Qwen-VL on vLLM) refuse images below 28 px a side, so tiny ones are enlarged
PNG_LIMIT = 1_500_000  # bytes; a larger PNG (a photo-like sticker) is sent as JPEG instead


def unusable_reason(path: Path, max_side: int = MAX_FILE_SIDE, max_pixels: int = MAX_FILE_PIXELS) -> str | None:
    """Why ``path`` cannot be shown to a vision model, or None."""
    if not path.is_file():
        return "image file is missing"
    if reason := check_image(path, max_side, max_pixels):
        return reason
    with Image.open(path) as img:
        frames = getattr(img, "n_frames", 1)
        if frames > 1 or getattr(img, "is_animated", False):
            return f"animated ({frames} frames): a vision model sees one frame; export a still image to annotate it"
    return None


def prepare_image(path: Path, max_side: int = DEFAULT_MAX_SIDE) -> tuple[bytes, str]:
    """The image flattened onto white (transparent stickers otherwise turn black in many VLMs) and
    scaled so that its longer side is at most ``max_side`` and its shorter side at least MIN_SIDE;
    returns the encoded bytes and their MIME type. Deterministic, so requests are cacheable."""
    with Image.open(path) as img:
        img.seek(0)
        rgba = img.convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    canvas.alpha_composite(rgba)
    flat = canvas.convert("RGB")
    width, height = flat.size
    scale = min(1.0, max_side / max(width, height))
    scale = max(scale, min(MIN_SIDE / min(width, height), max_side / max(width, height)))
    if scale != 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        flat = flat.resize(size, Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    flat.save(buffer, format="PNG", optimize=False)
    if buffer.tell() <= PNG_LIMIT:
        return buffer.getvalue(), "image/png"
    buffer = io.BytesIO()
    flat.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue(), "image/jpeg"


def image_part(path: Path, max_side: int = DEFAULT_MAX_SIDE) -> ImagePart:
    """An ``image_url`` part with a data URI, the form every OpenAI-compatible vision server accepts."""
    data, mime = prepare_image(path, max_side)
    url = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
    return ImagePart(image_url=ImageURL(url=url))
