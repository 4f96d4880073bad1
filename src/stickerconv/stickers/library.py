"""A sticker library on disk: a folder of images plus ``stickers.jsonl`` (one Sticker a line).

Image paths inside ``stickers.jsonl`` are relative to the library folder, so a library can be
moved or copied as a whole (method reference §9 item 20).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from stickerconv.jsonl import RecordError, iter_jsonl, write_jsonl_atomic
from stickerconv.schema import EmotionLabel, Sticker

STICKERS_FILE = "stickers.jsonl"


class LibraryError(ValueError):
    """A library folder that cannot be used as it is."""


@dataclass
class StickerLibrary:
    root: Path
    stickers: list[Sticker] = field(default_factory=list)

    @property
    def jsonl_path(self) -> Path:
        return self.root / STICKERS_FILE

    @classmethod
    def load(cls, root: Path | str) -> StickerLibrary:
        """Read ``root/stickers.jsonl``; a malformed line raises with file and line number."""
        root = Path(root)
        path = root / STICKERS_FILE
        if not root.is_dir():
            raise LibraryError(f"sticker library folder {root} does not exist")
        if not path.is_file():
            raise LibraryError(
                f"{root} is not a sticker library: {STICKERS_FILE} is missing "
                "(create one with `stickerconv stickers build-default` or `stickerconv stickers ingest`)"
            )
        stickers: list[Sticker] = []
        seen: dict[str, int] = {}
        for line, sticker in iter_jsonl(path, Sticker):
            if sticker.id in seen:
                first = seen[sticker.id]
                raise RecordError(path, line, f"duplicate sticker id {sticker.id!r} (first on line {first})", "id")
            seen[sticker.id] = line
            stickers.append(sticker)
        return cls(root, stickers)

    def save(self) -> None:
        write_jsonl_atomic(self.jsonl_path, self.stickers)

    def __len__(self) -> int:
        return len(self.stickers)

    def __iter__(self) -> Iterator[Sticker]:
        return iter(self.stickers)

    def by_id(self) -> dict[str, Sticker]:
        return {s.id: s for s in self.stickers}

    def image_path(self, sticker: Sticker) -> Path:
        return self.root / sticker.image

    def missing_images(self) -> list[Sticker]:
        return [s for s in self.stickers if not self.image_path(s).is_file()]

    def label_counts(self) -> Counter[str]:
        return Counter(s.label.value if s.label else "unlabelled" for s in self.stickers)

    def digest(self) -> str:
        """Content hash of ``stickers.jsonl``: the index records it to notice a changed library."""
        return "sha256:" + hashlib.sha256(self.jsonl_path.read_bytes()).hexdigest()

    def filter(self, labels: Iterable[EmotionLabel | str] | None = None) -> list[Sticker]:
        if labels is None:
            return list(self.stickers)
        wanted = {EmotionLabel(label) for label in labels}
        return [s for s in self.stickers if s.label in wanted]
