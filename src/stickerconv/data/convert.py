"""``data convert``: conversations into training data (per-turn samples, chat examples, an HF dataset).

All three targets name sticker images the same way (:class:`ImageLocator`): a sticker found in the
given library takes its library-relative path (and that library's file); any other takes its path
relative to the image root (a configurable prefix, else the SER30K ``Images/`` folder), and its file
is looked up under ``image_dir``. Input is read on the strict path, so a broken record stops the
conversion with its location instead of producing a silently shorter dataset. Samples and chat
examples are written in the layout the output's extension names (``.jsonl``, ``.json``, ``.parquet``);
an unknown extension and an input that is not conversations are refused before anything is read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from stickerconv.data.chat import to_chat
from stickerconv.data.hf import export_hf
from stickerconv.data.io import DataSource, Progress, load_conversations, output_layout, write_records
from stickerconv.data.resolve import StickerResolver, sample_image_path
from stickerconv.data.samples import Style, render_samples, write_samples
from stickerconv.schema import Conversation, Sticker

Target = Literal["samples", "chat", "hf"]
TARGETS: tuple[str, ...] = ("samples", "chat", "hf")


@dataclass
class ImageLocator:
    """Names a sticker's image for training data and finds its file."""

    resolver: StickerResolver | None = None
    image_root: str | None = None
    image_dir: Path | None = None

    def _library_sticker(self, sticker: Sticker) -> Sticker | None:
        return self.resolver.find(sticker.image, sticker.id) if self.resolver is not None else None

    def path(self, sticker: Sticker) -> str:
        found = self._library_sticker(sticker)
        return found.image if found is not None else sample_image_path(sticker.image, self.image_root)

    def file(self, sticker: Sticker) -> Path | None:
        found = self._library_sticker(sticker)
        if found is not None:
            return self.resolver.image_file(found) if self.resolver is not None else None
        if self.image_dir is not None:
            candidate = self.image_dir / sample_image_path(sticker.image, self.image_root)
            if candidate.is_file():
                return candidate
        direct = Path(sticker.image)
        return direct if direct.is_absolute() and direct.is_file() else None

    def unknown(self, conversations: list[Conversation]) -> int | None:
        """Stickers the library does not hold (None without a library)."""
        if self.resolver is None:
            return None
        return sum(self._library_sticker(s) is None for c in conversations for s in c.stickers)


@dataclass
class ConvertReport:
    target: str
    out: Path
    sessions: int
    turns: int
    written: int  # samples, chat examples or dataset rows
    stickers: int
    unknown_stickers: int | None = None  # not in the given library
    images: int | None = None  # hf: image cells filled
    unresolved_images: int | None = None  # hf: stickers whose file was not found


def convert(
    path: Path | str | DataSource,
    target: Target,
    out: Path | str,
    *,
    style: Style = "v1.5",
    locator: ImageLocator | None = None,
    system_prompt: str | None = None,
    require_images: bool = False,
    on_progress: Progress = None,
) -> ConvertReport:
    """Convert the conversations behind ``path`` into ``target`` at ``out``; bad names fail before reading."""
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; choose from {', '.join(TARGETS)}")
    if target != "hf":
        output_layout(out)
    locator = locator or ImageLocator()
    out = Path(out)
    conversations = load_conversations(path, on_progress)
    report = ConvertReport(
        target,
        out,
        sessions=len(conversations),
        turns=sum(len(c.conversation) for c in conversations),
        written=0,
        stickers=sum(len(c.stickers) for c in conversations),
        unknown_stickers=locator.unknown(conversations),
    )
    if target == "samples":
        samples = (s for c in conversations for s in render_samples(c, style, locator.path))
        report.written = write_samples(out, samples)
    elif target == "chat":
        report.written = write_records(out, (to_chat(c, locator.path, system_prompt) for c in conversations))
    else:
        hf = export_hf(
            conversations,
            out,
            style=style,
            image_path=locator.path,
            image_file=locator.file,
            require_images=require_images,
        )
        report.written, report.images, report.unresolved_images = hf.rows, hf.images, hf.unresolved
    return report
