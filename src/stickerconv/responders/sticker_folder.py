"""A sticker library folder that grows while a responder is serving.

Two kinds of stickers appear after a server has started: the ones PEGS-Gen/RAG paint, and the images
users upload. Both need what a library sticker has (an id, an image file, a ``stickers.jsonl`` entry)
so that they can be served by id, resolved when a client sends them back in the history, and read by
a model's vision encoder. ``StickerFolder`` is that one mechanism: image files are content-addressed
(a name is derived from the content, so the same image is written once), ``stickers.jsonl`` is rewritten
atomically after each addition, and a reader that is not the writer (the server reading what the
responder painted) sees new entries without a restart, because ``stickers.jsonl`` is read again
whenever its size or modification time changed.

Why in ``responders``: the PEGS responder writes painted stickers with it and the server (a layer above)
keeps uploads with it; ``responders`` is the lowest layer both may import that is theirs to extend.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from stickerconv.jsonl import RecordError
from stickerconv.schema import Sticker
from stickerconv.stickers.library import STICKERS_FILE, LibraryError, StickerLibrary

log = logging.getLogger(__name__)


class StickerFolder:
    """The stickers of ``root`` by id, re-read when ``stickers.jsonl`` changed; ``put`` adds one.

    Safe to share between threads (the server decodes uploads in worker threads). The folder is created
    on the first ``put``, so a reader may be built before anything was written."""

    def __init__(self, root: Path | str):
        self.root = Path(root).resolve()
        self._lock = threading.Lock()
        self._stickers: dict[str, Sticker] = {}
        self._stamp: tuple[int, int] | None = None

    def _refresh(self) -> None:
        """Read ``stickers.jsonl`` again if it changed since the last read (caller holds the lock)."""
        try:
            stat = (self.root / STICKERS_FILE).stat()
        except OSError:
            return
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return
        try:
            self._stickers = StickerLibrary.load(self.root).by_id()
        except (LibraryError, RecordError, ValueError) as exc:  # broken by hand: keep what was read before
            log.warning("cannot read the stickers in %s: %s", self.root, exc)
        else:
            self._stamp = stamp

    def get(self, sticker_id: str) -> Sticker | None:
        with self._lock:
            self._refresh()
            return self._stickers.get(sticker_id)

    def image_path(self, sticker: Sticker) -> Path:
        return self.root / sticker.image

    def put(self, sticker: Sticker, data: bytes, *, replace: bool = True) -> Sticker:
        """Store ``data`` as ``sticker.image`` (a content-derived name, so an existing file is left as it is)
        and record ``sticker``. An entry with the same id is replaced, or with ``replace=False`` kept and
        returned (the image is the same either way; only the entry's other fields can differ)."""
        with self._lock:
            self._refresh()
            known = self._stickers.get(sticker.id)
            path = self.image_path(sticker)
            if known is not None and not replace and self.image_path(known).is_file():
                return known
            if not path.is_file():
                path.parent.mkdir(parents=True, exist_ok=True)
                partial = path.with_name(f".{path.name}.part")
                partial.write_bytes(data)
                partial.replace(path)  # a reader never sees half an image
            self._stickers[sticker.id] = sticker
            StickerLibrary(self.root, list(self._stickers.values())).save()
            stat = (self.root / STICKERS_FILE).stat()
            self._stamp = (stat.st_mtime_ns, stat.st_size)
            log.debug("added %s to %s", sticker.id, self.root)
            return sticker
