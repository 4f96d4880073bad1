"""What an operator sets when serving: auth, CORS, limits on what a request may carry, concurrency.

Every limit has a default that a chat client never meets and that keeps a single request cheap:
the body is read whole (up to ``max_body_bytes``) before it is parsed, and an image is measured
from its header before a pixel is decoded.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

MIB = 1024 * 1024


class ServeSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_name: str | None = None  # the one model /v1/models lists; default "stickerconv-<responder>"
    api_key: str | None = None  # when set, /v1/* needs "Authorization: Bearer <api_key>"
    cors_origins: list[str] = []  # CORS is off unless origins are listed ("*" allows any)
    public_url: str | None = None  # base of the sticker URLs in replies; default: the URL the request came to
    generated_dir: Path | None = None  # library folder a responder adds stickers to (PEGS-Gen/RAG); served too
    uploads_dir: Path | None = None  # library folder users' images are kept in; None: a temporary one per server
    max_body_bytes: int = Field(8 * MIB, ge=1024)  # a larger request body is refused with 413
    max_image_bytes: int = Field(2 * MIB, ge=1)  # one decoded image; larger: 413
    max_image_side: int = Field(4096, ge=1)  # pixels, width or height; larger: 413
    max_image_pixels: int = Field(16_000_000, ge=1)  # width x height; larger: 413
    max_messages: int = Field(64, ge=1)  # messages in one request; more: 400
    max_images: int = Field(16, ge=1)  # image parts in one request; more: 400
    max_text_chars: int = Field(16_000, ge=1)  # characters in one message's text; more: 400
    max_search_k: int = Field(60, ge=1)  # largest k of /v1/stickers/search
    concurrency: int = Field(4, ge=1)  # responder calls running at once
    max_queue: int = Field(64, ge=0)  # requests waiting for a slot; beyond that: 429 with Retry-After

    @model_validator(mode="after")
    def _own_uploads_folder(self) -> ServeSettings:
        """Uploads and painted stickers each have one writer (the server, the responder); sharing a folder would
        make two writers of one stickers.jsonl."""
        if self.uploads_dir is not None and self.generated_dir is not None:
            if self.uploads_dir.resolve() == self.generated_dir.resolve():
                raise ValueError("uploads_dir and generated_dir must be different folders")
        return self
