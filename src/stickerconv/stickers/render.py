"""Rendering emoji into square transparent PNG stickers, from a colour font or from SVG files.

Noto Color Emoji is a CBDT bitmap font that FreeType only opens at its native 109 px size
(offline-assets §5), so glyphs are drawn at that size, cropped to their ink and rescaled.
"""

from __future__ import annotations

import io
from functools import cached_property
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

NOTO_FONT_PATHS = (
    Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"),
    Path("/usr/share/fonts/noto/NotoColorEmoji.ttf"),
    Path("/usr/local/share/fonts/NotoColorEmoji.ttf"),
)
NOTO_NATIVE_SIZE = 109
STICKER_SIZE = 144  # px; the issue asks for 128-160
_MARGIN = 8  # px of transparent border so stickers do not touch the frame


class RenderError(RuntimeError):
    """An emoji that the chosen source cannot draw (missing glyph or file)."""


def _to_sticker(img: Image.Image, size: int) -> Image.Image:
    """Crop to the visible pixels, centre on a transparent square and scale to ``size``."""
    img = img.convert("RGBA")
    bbox = img.getchannel("A").getbbox()
    if bbox is None:
        raise RenderError("rendered image is empty")
    img = img.crop(bbox)
    inner = size - 2 * _MARGIN
    scale = inner / max(img.size)
    new = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    img = img.resize(new, Image.Resampling.LANCZOS)
    canvas = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    canvas.paste(img, ((size - new[0]) // 2, (size - new[1]) // 2), img)
    return canvas


def png_bytes(img: Image.Image) -> bytes:
    """PNG bytes with no timestamps or text chunks, so the same pixels give the same file."""
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def find_noto_font(explicit: Path | None = None) -> Path | None:
    candidates = (explicit,) if explicit else NOTO_FONT_PATHS
    return next((p for p in candidates if p is not None and p.is_file()), None)


class NotoRenderer:
    """Draws emoji with the Noto Color Emoji font."""

    def __init__(self, font_path: Path, size: int = STICKER_SIZE):
        self.font_path, self.size = font_path, size

    @cached_property
    def _font(self) -> ImageFont.FreeTypeFont:
        return ImageFont.truetype(str(self.font_path), NOTO_NATIVE_SIZE)

    def has_glyph(self, emoji: str) -> bool:
        """True when the font maps every code point to a real glyph (not .notdef)."""
        # A sequence the font lacks renders as several glyphs or tofu; compare its width with a
        # single glyph's, which is the same for every emoji in this monospaced colour font.
        bbox = self._font.getbbox(emoji)
        single = self._font.getbbox("\U0001f600")
        return bbox[2] - bbox[0] <= (single[2] - single[0]) * 1.2 and bbox[2] > bbox[0]

    def render(self, emoji: str) -> Image.Image:
        if not self.has_glyph(emoji):
            raise RenderError(f"Noto Color Emoji has no single glyph for {emoji!r}")
        canvas = Image.new("RGBA", (NOTO_NATIVE_SIZE * 3, NOTO_NATIVE_SIZE * 2), (0, 0, 0, 0))
        ImageDraw.Draw(canvas).text((4, 4), emoji, font=self._font, embedded_color=True)
        return _to_sticker(canvas, self.size)


class SvgRenderer:
    """Draws emoji from a folder of per-emoji SVG files (Twemoji, OpenMoji) with cairosvg."""

    def __init__(self, folder: Path, naming: str, size: int = STICKER_SIZE):
        if naming not in ("twemoji", "openmoji"):
            raise ValueError(f"unknown SVG naming scheme {naming!r}; expected 'twemoji' or 'openmoji'")
        self.folder, self.naming, self.size = folder, naming, size

    def svg_path(self, hexcode: str) -> Path | None:
        if self.naming == "openmoji":
            names = [hexcode.upper(), hexcode.upper().replace("-FE0F", "")]
        else:  # Twemoji drops FE0F from file names, except for a few sequences that keep it
            low = hexcode.lower()
            names = [low.replace("-fe0f", ""), low]
        return next((self.folder / f"{n}.svg" for n in names if (self.folder / f"{n}.svg").is_file()), None)

    def has_glyph(self, hexcode: str) -> bool:
        return self.svg_path(hexcode) is not None

    def render(self, hexcode: str) -> Image.Image:
        import cairosvg  # imported here: it needs the system cairo library only when SVG styles are used

        path = self.svg_path(hexcode)
        if path is None:
            raise RenderError(f"no SVG for {hexcode} in {self.folder}")
        side = self.size * 2  # draw large, then crop and downscale for clean edges
        data = cairosvg.svg2png(url=str(path), output_width=side, output_height=side)
        return _to_sticker(Image.open(io.BytesIO(data)), self.size)
