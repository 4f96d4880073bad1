"""Stickers over HTTP: library lookups by id, sticker URLs, and the images users send.

A user's image part is either a data URI (decoded and checked: size in bytes, then width and height
from the header, then a full decode) or the URL of a sticker on this server (``.../stickers/{id}``),
which is resolved by id and never fetched. A data URI whose bytes are exactly a library image
(SHA-256) becomes that sticker; any other image is an upload: written once, under a name derived from
its content, into the uploads folder (``ServeSettings.uploads_dir``, a ``StickerFolder`` like the one
PEGS-Gen/RAG paint into), so that it is served at ``/stickers/upload/{hash}``, resolves when it comes
back in the history (as the same data URI or as that URL), and is a real file a model can look at.

Sticker files are served only through the id tables (the library's, the painted stickers', the
uploads'), never through a path the client wrote. A sticker handed to a responder from outside its
library (painted or uploaded) carries an absolute image path, so that it resolves whatever folder the
responder resolves library images against.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import logging
import re
import shutil
import tempfile
import weakref
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from PIL import Image

from stickerconv.responders.sticker_folder import StickerFolder
from stickerconv.schema import EmotionLabel, Sticker
from stickerconv.serve.errors import APIError
from stickerconv.serve.openai_schema import StickerArgs, StickerHit
from stickerconv.serve.settings import ServeSettings
from stickerconv.stickers.index import StickerIndex

log = logging.getLogger("stickerconv.serve")

STICKER_ROUTE = "/stickers/"
UNKNOWN_IMAGE = "an image the library does not know"
IMAGE_FORMATS = {"PNG": ".png", "JPEG": ".jpg", "GIF": ".gif", "WEBP": ".webp"}  # accepted, with the suffix kept
UPLOAD_PREFIX = "upload/"  # the id of an upload: this and the first 16 hex digits of its SHA-256
MEDIA_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
}
_DATA_URI = re.compile(r"data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(?:;[\w.+-]+(?:=[\w.+-]+)?)*?);base64,", re.ASCII)


class StickerCatalog:
    """The stickers behind a server: ids, image hashes, URLs, search, uploads. Works without a library
    too (a text-only server): then every image is an upload and only upload URLs resolve."""

    def __init__(self, index: StickerIndex | None, settings: ServeSettings):
        self.index, self.settings = index, settings
        self.root: Path | None = index.library.root.resolve() if index is not None else None
        self.by_id: dict[str, Sticker] = index.library.by_id() if index is not None else {}
        if settings.uploads_dir is None:  # kept for the server's lifetime, removed with the catalog
            scratch = tempfile.mkdtemp(prefix="stickerconv-uploads-")
            weakref.finalize(self, shutil.rmtree, scratch, ignore_errors=True)
            self.uploads = StickerFolder(scratch)
        else:
            self.uploads = StickerFolder(settings.uploads_dir)
        # searched after the library, in this order: what a responder painted, then what users sent
        self.folders = [StickerFolder(settings.generated_dir)] if settings.generated_dir is not None else []
        self.folders.append(self.uploads)
        self.by_hash: dict[str, Sticker] = {}
        for sticker in self.by_id.values():
            path = self.image_file(sticker.id)
            if path is not None:
                self.by_hash.setdefault(hashlib.sha256(path.read_bytes()).hexdigest(), sticker)

    # ------------------------------------------------------------------ library
    def get(self, sticker_id: str) -> Sticker | None:
        """The sticker with this id, as a responder gets it: a library sticker as it is, a painted or
        uploaded one with its absolute image path (see the module docstring)."""
        found = self._lookup(sticker_id)
        if found is None:
            return None
        sticker, root = found
        return sticker if root == self.root else _located(sticker, root)

    def _lookup(self, sticker_id: str) -> tuple[Sticker, Path] | None:
        """The sticker and the folder its image path is relative to: the library, else a growing folder.
        ``.../stickers/noto/1f600.png`` names the same sticker as ``.../stickers/noto/1f600``."""
        stem, dot, ext = sticker_id.rpartition(".")
        names = [sticker_id, stem] if dot and f".{ext.lower()}" in MEDIA_TYPES else [sticker_id]
        for name in names:
            if name in self.by_id and self.root is not None:
                return self.by_id[name], self.root
            for folder in self.folders:
                added = folder.get(name)
                if added is not None:
                    return added, folder.root
        return None

    def image_file(self, sticker_id: str) -> Path | None:
        """The image of a known sticker, or None; a path outside its folder is never returned."""
        found = self._lookup(sticker_id)
        if found is None:
            return None
        sticker, root = found
        path = (root / sticker.image).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            return None
        return path

    @staticmethod
    def url(sticker: Sticker, base_url: str) -> str:
        return base_url.rstrip("/") + STICKER_ROUTE + quote(sticker.id, safe="/")

    def args(self, sticker: Sticker, base_url: str) -> StickerArgs:
        return StickerArgs(
            sticker_id=sticker.id,
            url=self.url(sticker, base_url),
            label=sticker.label.value if sticker.label else None,
            description=sticker.description,
            emotion=sticker.emotion,
        )

    def search(self, query: str, k: int, label: EmotionLabel | None, base_url: str) -> list[StickerHit]:
        """The k best stickers for ``query``; an empty query lists the first k (of ``label``)."""
        if self.index is None:
            raise APIError(404, "this server has no sticker library (start it with --stickers LIB_DIR)")
        labels = [label] if label is not None else None
        if not query.strip():
            stickers = [s for s in self.index.stickers if label is None or s.label is label][:k]
            return [StickerHit(**self.args(s, base_url).model_dump()) for s in stickers]
        hits = self.index.search(query, k, labels)
        return [StickerHit(**self.args(h.sticker, base_url).model_dump(), score=round(h.score, 4)) for h in hits]

    # ------------------------------------------------------------------ images users send
    def from_image_url(self, url: str, param: str) -> Sticker:
        """The sticker an ``image_url`` part names: a library sticker or an unknown upload."""
        if url[:5].lower() == "data:":
            return self._from_data_uri(url, param)
        parts = urlsplit(url)
        if parts.scheme in ("http", "https") or (not parts.scheme and url.startswith("/")):
            path = unquote(parts.path)
            at = path.find(STICKER_ROUTE)
            if at >= 0:
                sticker_id = path[at + len(STICKER_ROUTE) :]
                sticker = self.get(sticker_id)
                if sticker is None:
                    raise APIError(400, f"unknown sticker {sticker_id[:200]!r}", param=param, code="unknown_sticker")
                return sticker
        raise APIError(
            400,
            "an image must be a data URI (data:image/png;base64,...) or the URL of a sticker on this server "
            "(.../stickers/{id}); other URLs are never fetched",
            param=param,
            code="invalid_image_url",
        )

    def _from_data_uri(self, url: str, param: str) -> Sticker:
        head = _DATA_URI.match(url[:300])
        if head is None or not (head.group("mime") or "").lower().startswith("image/"):
            raise APIError(400, "an image data URI must look like data:image/png;base64,...", param, "invalid_image")
        encoded = url[head.end() :]
        limit = self.settings.max_image_bytes
        if len(encoded) * 3 // 4 > limit + 3:
            raise APIError(413, f"the image is larger than {limit} bytes", param=param, code="image_too_large")
        try:
            data = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise APIError(400, "the image data URI is not valid base64", param=param, code="invalid_image") from None
        if len(data) > limit:
            raise APIError(413, f"the image is larger than {limit} bytes", param=param, code="image_too_large")
        suffix = IMAGE_FORMATS[self.check_image(data, param)]
        digest = hashlib.sha256(data).hexdigest()
        known = self.by_hash.get(digest)
        if known is not None:
            return known
        name = f"{UPLOAD_PREFIX}{digest[:16]}"
        upload = Sticker(
            id=name, image=name + suffix, description=UNKNOWN_IMAGE, emotion="unknown", source="user upload"
        )
        try:
            stored = self.uploads.put(upload, data, replace=False)
        except OSError as exc:  # a full or read-only disk is the server's fault, not the client's
            log.error("cannot keep an upload in %s: %s", self.uploads.root, exc)
            raise APIError(503, "the server cannot store uploaded images now", param, "upload_failed") from None
        return _located(stored, self.uploads.root)

    def check_image(self, data: bytes, param: str) -> str:
        """The format (a key of ``IMAGE_FORMATS``) of a supported image within the pixel limits that decodes
        completely, or an APIError."""
        s = self.settings
        try:
            with Image.open(io.BytesIO(data)) as image:  # reads the header only
                width, height = image.size
                if image.format not in IMAGE_FORMATS:
                    raise APIError(
                        400,
                        f"unsupported image format {image.format}; send PNG, JPEG, GIF or WebP",
                        param=param,
                        code="invalid_image",
                    )
                if width > s.max_image_side or height > s.max_image_side or width * height > s.max_image_pixels:
                    raise APIError(
                        413,
                        f"the image is {width}x{height} pixels; at most {s.max_image_side} a side and "
                        f"{s.max_image_pixels} in all",
                        param=param,
                        code="image_too_large",
                    )
                image.load()
                return image.format
        except APIError:
            raise
        except Exception as exc:  # Pillow raises many types for broken files; all mean the same here
            raise APIError(
                400, f"not a readable image ({type(exc).__name__})", param=param, code="invalid_image"
            ) from None


def _located(sticker: Sticker, root: Path) -> Sticker:
    """The sticker with its image path made absolute, for a responder that resolves images elsewhere."""
    return sticker.model_copy(update={"image": str(root / sticker.image)})
