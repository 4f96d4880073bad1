"""Finding the library sticker a conversation names, and the image path a training sample uses.

Published StickerConv records carry the authors' absolute SER30K paths
(``.../SER_Dataset/Images/<theme>/sticker_<n>.jpg``, which resolve nowhere else), our own runs carry
library-relative paths (``images/noto/1f622.png``). A sticker is found in a library by its image
path or, failing that, by the portable id both forms share (``theme/sticker_n``,
:func:`~stickerconv.schema.sticker_id_from_path`), which is also the id ``stickers ingest`` gives a
SER30K folder. The images themselves may be missing (SER30K is obtained separately), so whether a
file exists is a separate question, asked once per image.
"""

from __future__ import annotations

from pathlib import Path

from stickerconv.schema import Sticker, sticker_id_from_path
from stickerconv.stickers.library import StickerLibrary

SER30K_ROOT = "Images/"  # the SER30K folder sample paths are relative to (method reference §4.4)


def sample_image_path(image: str, image_root: str | None = None) -> str:
    """A sticker's image path relative to the image root, as training samples store it (§4.4, §9 item 20).

    ``image_root`` (a path prefix) is cut off when the path starts with it; otherwise everything up to
    and including the SER30K ``Images/`` folder is; a path that has neither (a library-relative path
    of our own stickers) is kept as it is.
    """
    path = image.replace("\\", "/")
    if image_root:
        root = image_root.replace("\\", "/").rstrip("/") + "/"
        if path.startswith(root):
            return path[len(root) :]
    cut = path.rfind("/" + SER30K_ROOT)
    if cut >= 0:
        return path[cut + len(SER30K_ROOT) + 1 :]
    return path[len(SER30K_ROOT) :] if path.startswith(SER30K_ROOT) else path


class StickerResolver:
    """Looks up conversation stickers in one library, by image path, then by id."""

    def __init__(self, library: StickerLibrary):
        self.library = library
        self._by_image = {s.image: s for s in library}
        self._by_id = {sticker_id_from_path(s.image): s for s in library} | {s.id: s for s in library}
        self._exists: dict[str, Path | None] = {}

    @property
    def root(self) -> Path:
        return self.library.root

    def find(self, image: str, sticker_id: str | None = None) -> Sticker | None:
        """The library sticker with this image path, or with this id (given or derived from the path)."""
        found = self._by_image.get(image)
        if found is None and sticker_id:
            found = self._by_id.get(sticker_id)
        return found if found is not None else self._by_id.get(sticker_id_from_path(image))

    def image_file(self, sticker: Sticker) -> Path | None:
        """The sticker's image file in the library, or None when it is not on disk."""
        if sticker.image not in self._exists:
            path = self.library.image_path(sticker)
            self._exists[sticker.image] = path if path.is_file() else None
        return self._exists[sticker.image]
