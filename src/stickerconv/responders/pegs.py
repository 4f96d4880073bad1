"""PEGS as a :class:`~stickerconv.responders.base.Responder`: PEGS-Ret, PEGS-Gen and PEGS-RAG (§5.5).

Why here and not in ``responders/``: the responder is a thin adapter over the PEGS model and its
diffusion side, and keeping it beside them keeps the heavy imports (torch, transformers,
diffusers) out of the baseline responders. It uses only the ``Responder`` interface from above.

* ``ret``: the retrieval embedding scores a precomputed sticker-embedding matrix of the library
  (cosine × 1/τ); the top-1 sticker is sent. Stateless by default (§9 item 32); ``no_repeat``
  keeps a per-dialogue set (keyed by the dialogue's first user message) of stickers already sent.
* ``gen``: the mapped ``prompt_embeds`` condition SD text-to-image.
* ``rag``: the top-1 sticker is restyled by SD img2img (strength 0.8) with those embeddings.

All three send on the same decision, the model's (:meth:`PegsModel.generate`, ``config.send``): the fitted
threshold on the send score at the end of the reply, or greedy [IMG1] where the checkpoint has no threshold.

Generated images are written into a sticker library folder with their provenance, so every sticker
a reply carries is a library sticker.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
from pathlib import Path
from typing import Literal

import torch
from PIL import Image

from stickerconv.data.samples import Sample, render_samples
from stickerconv.pegs.diffusion import StickerPainter, load_sd
from stickerconv.pegs.model import Generation, PegsModel
from stickerconv.pegs.sequence import Example, sample_example
from stickerconv.responders.base import Responder
from stickerconv.responders.sticker_folder import StickerFolder
from stickerconv.schema import Conversation, DialogueContext, Reply, Sticker, Turn
from stickerconv.stickers.library import StickerLibrary

log = logging.getLogger(__name__)

Mode = Literal["ret", "gen", "rag"]


@torch.no_grad()
def sticker_matrix(model: PegsModel, library: StickerLibrary, batch_size: int = 64) -> torch.Tensor:
    """(N, retrieval_dim) L2-normalised image-side embeddings of every library sticker, in library order."""
    if model.ret_heads is None:
        raise ValueError("this PEGS model has no retrieval tokens (n_ret_tokens = 0)")
    pooled = model.pooled_features([library.image_path(s) for s in library.stickers], batch_size)  # (N, P)
    return model.ret_heads.embed_image(pooled)


class GeneratedStickers(StickerFolder):
    """The library folder painted stickers are added to, each with its provenance in ``meta``; the server
    serves them from the same folder (``ServeSettings.generated_dir``)."""

    def add(self, image: Image.Image, description: str, source: str, meta: dict) -> Sticker:
        name = f"generated/{hashlib.sha256(image.tobytes()).hexdigest()[:16]}.png"
        encoded = io.BytesIO()
        image.save(encoded, "PNG")
        sticker = Sticker(id=name.removesuffix(".png"), image=name, description=description, source=source, meta=meta)
        return self.put(sticker, encoded.getvalue())


class PegsResponder(Responder):
    def __init__(
        self,
        model: PegsModel,
        library: StickerLibrary,
        mode: Mode = "ret",
        no_repeat: bool = False,
        generated_dir: Path | str | None = None,
        max_new_tokens: int | None = None,
        seed: int = 0,
        checkpoint: str = "",
    ):
        cfg = model.config
        if mode in ("ret", "rag") and model.ret_heads is None:
            raise ValueError(f"pegs-{mode} needs a model with retrieval tokens (n_ret_tokens > 0)")
        if mode in ("gen", "rag") and (model.gen_mapper is None or cfg.sd is None):
            raise ValueError(f"pegs-{mode} needs a generation mapper and an sd section in the PEGS config")
        if mode in ("gen", "rag") and generated_dir is None:
            raise ValueError(f"pegs-{mode} needs generated_dir, the sticker library folder for generated images")
        self.name = f"pegs-{mode}"
        self.model, self.library, self.mode = model.eval(), library, mode
        self.no_repeat, self.max_new_tokens, self.seed, self.checkpoint = no_repeat, max_new_tokens, seed, checkpoint
        self.matrix = sticker_matrix(model, library) if mode in ("ret", "rag") else None  # (N, dim)
        self.sent: dict[str, set[int]] = {}
        if cfg.send.decision == "threshold" and cfg.send.fit is None:
            log.warning(
                "%s: the checkpoint has no fitted send threshold, so it sends only when greedy decoding emits [IMG1] "
                "(rarely, for a briefly fine-tuned model); fit one with `stickerconv pegs fit-send`",
                checkpoint or self.name,
            )
        self.painter: StickerPainter | None = None
        self.store: GeneratedStickers | None = None
        if cfg.sd is not None and cfg.mapper is not None and generated_dir is not None and mode != "ret":
            device = next(model.parameters()).device
            self.painter = StickerPainter(load_sd(cfg.sd, cfg.mapper.out_dim, cfg.seed, device), cfg.sd)
            self.store = GeneratedStickers(generated_dir)

    def prompt(self, context: DialogueContext) -> Example:
        """The context rendered as a §4.4 sample in the model's style, without the response.

        Sticker images resolve against the library folder; a sticker from elsewhere (a user's upload, a
        sticker painted earlier, as the server hands them over) carries an absolute path, which stays as it
        is, so its pixels reach the vision encoder like a library sticker's."""
        turns = [t.model_copy(update={"turn": i + 1}) for i, t in enumerate(context.history)]
        turns.append(
            Turn(
                turn=len(turns) + 1,
                user_message=context.user_message,
                system_message="",
                user_sticker=context.user_sticker,
            )
        )
        conv = Conversation(
            conversation=turns, user_persona=context.user_persona or "", user_status=context.user_status or ""
        )
        sample: Sample = render_samples(conv, self.model.config.style, lambda s: s.image)[-1]
        cfg = self.model.config
        return sample_example(sample, self.library.root, cfg.style, cfg.system_prompt, with_response=False)

    def _retrieve(self, gen: Generation, dialogue: str) -> int:
        scores = self.matrix @ gen.ret_embedding / self.model.config.tau  # type: ignore[operator]  # (N,)
        seen = self.sent.setdefault(dialogue, set()) if self.no_repeat else set()
        if seen and len(seen) < scores.shape[0]:
            scores[list(seen)] = float("-inf")
        best = int(scores.argmax())
        seen.add(best)
        return best

    def _answer(self, context: DialogueContext) -> Reply:
        gen = self.model.generate(self.prompt(context), max_new_tokens=self.max_new_tokens)
        if not gen.send_sticker:
            return Reply(text=gen.text)
        dialogue = context.history[0].user_message if context.history else context.user_message
        base = self.library.stickers[self._retrieve(gen, dialogue)] if self.matrix is not None else None
        if self.mode == "ret":
            return Reply(text=gen.text, sticker=base)
        painter, store, embeds = self.painter, self.store, gen.gen_embeds
        assert painter is not None and store is not None and embeds is not None  # set up for gen/rag in __init__
        meta = {"responder": self.name, "checkpoint": self.checkpoint, "seed": self.seed, "reply_text": gen.text}
        meta.update(steps=painter.cfg.steps, guidance=painter.cfg.guidance)
        if base is None:
            image = painter.generate(embeds, self.seed)
        else:
            meta.update(strength=painter.cfg.strength, base_sticker=base.id)
            image = painter.restyle(_open_rgb(self.library.image_path(base)), embeds, self.seed)
        sticker = store.add(image, base.description if base else "", self.name, meta)
        return Reply(text=gen.text, sticker=sticker)

    async def respond(self, context: DialogueContext) -> Reply:
        return await asyncio.to_thread(self._answer, context)

    def describe(self) -> dict[str, str]:
        threshold = self.model.send_threshold
        return {
            "responder": self.name,
            "checkpoint": self.checkpoint,
            "no_repeat": str(self.no_repeat),
            "send_decision": "greedy" if threshold is None else f"threshold {threshold:.4f}",
            "max_new_tokens": str(self.max_new_tokens or self.model.config.decoding.max_new_tokens),
            "decoding": self.model.config.decoding.describe(),
            "trained_profile": self.model.profile,
        }


def _open_rgb(path: Path) -> Image.Image:
    with Image.open(path) as img:
        return img.convert("RGB")
