"""Responders by name, for the command line and the server."""

from __future__ import annotations

from pathlib import Path

from stickerconv.llm import LLMFactory
from stickerconv.profiles import DEFAULT_PROFILE, Profile
from stickerconv.responders.base import Responder, ResponderError
from stickerconv.responders.text_only import BASELINE_SETTINGS, TextOnlyResponder
from stickerconv.responders.tool import StickerToolResponder
from stickerconv.stickers.index import StickerIndex

RESPONDERS = {
    "text": "text-only LLM baseline",
    "tool": "LLM + sticker tool baseline (needs a sticker index)",
    "pegs-ret": "PEGS, retrieving its sticker from the library (needs a checkpoint and a library)",
    "pegs-gen": "PEGS, generating its sticker with Stable Diffusion (needs a checkpoint with an SD section)",
    "pegs-rag": "PEGS, retrieving then restyling with img2img (needs a checkpoint with both heads)",
}


def build_responder(
    name: str,
    factory: LLMFactory | None = None,
    index: StickerIndex | None = None,
    checkpoint: Path | None = None,
    generated_dir: Path | None = None,
    max_new_tokens: int | None = None,
    profile: Profile = DEFAULT_PROFILE,
) -> Responder:
    """``name`` is one of ``RESPONDERS``. The LLM baselines take their model from the factory's
    ``responder`` role; PEGS loads ``checkpoint`` and answers with stickers of the index's library
    (generated ones go to ``generated_dir``). ``max_new_tokens`` caps every responder's reply; None: each
    its own (the baselines' 200, the paper's for them; a PEGS checkpoint's decoding budget). Under the ``paper``
    profile PEGS decodes as the paper evaluated it (``PegsConfig.for_paper_inference``)."""
    if name not in RESPONDERS:
        raise ResponderError(f"unknown responder {name!r}; choose from {', '.join(RESPONDERS)}")
    if name.startswith("pegs-"):
        if checkpoint is None or index is None:
            raise ResponderError(
                f"{name} needs a trained checkpoint (--checkpoint DIR) and a sticker library (--stickers)"
            )
        from stickerconv.pegs.model import PegsModel
        from stickerconv.responders.pegs import PegsResponder

        model = PegsModel.from_pretrained(checkpoint)
        if profile == "paper":
            model.config = model.config.for_paper_inference()
        mode = name.removeprefix("pegs-")
        try:
            return PegsResponder(
                model,
                index.library,
                mode,
                generated_dir=generated_dir,
                max_new_tokens=max_new_tokens,
                checkpoint=str(checkpoint),
            )
        except ValueError as exc:
            raise ResponderError(f"{name}: {exc}") from None
    if factory is None:
        raise ResponderError(f"{name} needs an LLM")
    model = factory.chat_model("responder")
    settings = BASELINE_SETTINGS
    if max_new_tokens is not None:
        settings = settings.model_copy(update={"max_tokens": max_new_tokens})
    if name == "text":
        return TextOnlyResponder(model, settings=settings)
    if index is None:
        raise ResponderError("the tool responder needs an indexed sticker library (--stickers DIR)")
    return StickerToolResponder(model, index, settings=settings)
