"""PEGS sequence construction (method reference §5.2): from samples to padded tensors.

Why a separate step: building a batch is tokenisation and image loading (CPU work that belongs in a
data loader's collate function), while the model's forward only embeds and runs tensors. Each
training record becomes an :class:`Example`, a list of role-tagged segments:

* text -> its token ids, labelled with themselves when supervised, else -100;
* a **user** sticker -> ``<Img>`` + K perception slots + ``</Img>``, all labelled -100;
* a **system** sticker -> ``[IMG1..N]`` ids, labelled with the ids when supervised (the target);
* end of turn -> the tokenizer's EOS, supervised (§9 item 27: padding is masked by the attention
  mask, never by token id, so the model learns to stop).

Sequences are ``BOS + segments``, right-padded and truncated to ``max_length`` at piece
boundaries (a text piece is cut, an image or [IMG] block is never split).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from stickerconv.data.samples import IMG, STYLES, Sample, Style

IMG_START, IMG_END = "<Img>", "</Img>"
IGNORE = -100


def img_token(i: int) -> str:
    """The i-th output image token, 1-based: ``[IMG1]``."""
    return f"[IMG{i}]"


@dataclass
class Segment:
    kind: Literal["text", "user_image", "system_image", "eos"]
    text: str = ""
    image: Path | None = None
    supervised: bool = False


@dataclass
class Example:
    """One training or inference sequence; the supervised system sticker (if any) is its target."""

    segments: list[Segment]
    target_image: Path | None = None  # the sticker the supervised [IMG] block stands for (retrieval positive)
    caption: str | None = None  # SD prompt of that sticker (generation target)


@dataclass
class Batch:
    input_ids: torch.Tensor  # (B, T) long; perception slots hold the pad id
    attention_mask: torch.Tensor  # (B, T) long
    labels: torch.Tensor  # (B, T) long, -100 where unsupervised
    perception_mask: torch.Tensor  # (B, T) bool, True on perception slots (row-major order = pixels order)
    pixels: torch.Tensor  # (M, 3, S, S) user stickers in placeholder order
    block_start: torch.Tensor  # (B,) long: position of [IMG1] of the supervised block, -1 if none
    target_rows: torch.Tensor  # (Bt,) long: rows with a block and a target image
    target_pixels: torch.Tensor  # (Bt, 3, S', S') their target stickers (retrieval encoder's transform)
    caption_rows: torch.Tensor  # (Bg,) long: rows with a block and a caption
    captions: list[str] = field(default_factory=list)  # (Bg,) SD prompts

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """The batch on ``device``; ``non_blocking`` copies from pinned memory overlap the copy with compute."""
        moved: dict[str, Any] = {
            k: (v.to(device, non_blocking=non_blocking) if isinstance(v, torch.Tensor) else v)
            for k, v in self.__dict__.items()
        }
        return Batch(**moved)

    def pin_memory(self) -> Batch:
        """The batch in page-locked host memory: a DataLoader with ``pin_memory=True`` calls this on custom batch
        types, and only pinned tensors copy to a GPU asynchronously."""
        return Batch(**{k: (v.pin_memory() if isinstance(v, torch.Tensor) else v) for k, v in self.__dict__.items()})


def image_roles(input_text: str, style: Style) -> list[str]:
    """``"user"``/``"system"`` for each ``<IMG>`` of a rendered prompt: the role of the nearest
    preceding speaker marker of the style (the samples store roles only through the template)."""
    fmt = STYLES[style]
    roles, pos = [], input_text.find(IMG)
    while pos >= 0:
        head = input_text[:pos]
        roles.append("system" if head.rfind(fmt.assistant_marker) > head.rfind(fmt.user_prefix) else "user")
        pos = input_text.find(IMG, pos + len(IMG))
    return roles


def _split(text: str, images: Sequence[Path], roles: Sequence[str], supervised: bool) -> list[Segment]:
    parts = text.split(IMG)
    if len(parts) - 1 != len(images):
        raise ValueError(f"{len(parts) - 1} {IMG} placeholders but {len(images)} images")
    out: list[Segment] = []
    for i, part in enumerate(parts):
        if part:
            out.append(Segment("text", part, supervised=supervised))
        if i < len(images):
            kind = "user_image" if roles[i] == "user" else "system_image"
            out.append(Segment(kind, image=images[i], supervised=supervised and kind == "system_image"))
    return out


def sample_example(
    sample: Sample,
    image_root: Path,
    style: Style,
    system_prompt: str,
    caption_template: str = "{description}",
    with_response: bool = True,
) -> Example:
    """A §4.4 per-turn sample as an example: system prompt and dialogue unsupervised, the gold
    response (text, [IMG] block, EOS) supervised. ``with_response=False`` gives the inference prompt."""
    images = [image_root / p for p in sample.input_image]
    segments = [Segment("text", system_prompt + "\n")] if system_prompt else []
    segments += _split(sample.input_text, images, image_roles(sample.input_text, style), supervised=False)
    if not with_response:
        return Example(segments)
    target = [image_root / p for p in sample.response_image]
    segments += _split(sample.response_text, target, ["system"] * len(target), supervised=True)
    segments.append(Segment("eos", supervised=True))
    meta = sample.response_image_metadata
    caption = caption_template.format(**meta) if (meta and target) else None
    return Example(segments, target_image=target[0] if target else None, caption=caption)


def caption_example(image: Path, caption: str) -> Example:
    """Perception alignment: ``<Img>…</Img>`` + caption, the caption supervised."""
    return Example(
        [Segment("user_image", image=image), Segment("text", caption, supervised=True), Segment("eos", supervised=True)]
    )


def image_block_example(image: Path, caption: str) -> Example:
    """Retrieval / generation alignment: caption then the supervised [IMG] block for its sticker."""
    return Example(
        [Segment("text", caption), Segment("system_image", image=image, supervised=True)],
        target_image=image,
        caption=caption,
    )


@dataclass
class _Piece:
    ids: list[int]
    labels: list[int]
    image: Path | None = None  # a user sticker: its K perception slots sit between <Img> and </Img>
    block: bool = False  # the supervised [IMG] block
    splittable: bool = False  # text may be cut by truncation; images and [IMG] blocks never


class Collator:
    """Examples -> :class:`Batch`. ``transform``/``target_transform`` map an image path to pixels."""

    def __init__(
        self,
        tokenizer: Any,
        n_perception: int,
        n_img_tokens: int,
        max_length: int,
        transform: Callable[[Path], torch.Tensor],
        target_transform: Callable[[Path], torch.Tensor],
    ):
        self.tok, self.k, self.max_length = tokenizer, n_perception, max_length
        self.transform, self.target_transform = transform, target_transform
        ids = tokenizer.convert_tokens_to_ids([IMG_START, IMG_END] + [img_token(i + 1) for i in range(n_img_tokens)])
        self.img_start, self.img_end, self.img_ids = ids[0], ids[1], ids[2:]
        self.pad = tokenizer.pad_token_id

    def _pieces(self, ex: Example) -> list[_Piece]:
        pieces: list[_Piece] = []
        if self.tok.bos_token_id is not None:
            pieces.append(_Piece([self.tok.bos_token_id], [IGNORE], splittable=True))
        for seg in ex.segments:
            if seg.kind == "text":
                ids = self.tok(seg.text, add_special_tokens=False).input_ids
                pieces.append(_Piece(ids, ids if seg.supervised else [IGNORE] * len(ids), splittable=True))
            elif seg.kind == "eos":
                eos = self.tok.eos_token_id
                pieces.append(_Piece([eos], [eos if seg.supervised else IGNORE], splittable=True))
            elif seg.kind == "user_image":
                ids = [self.img_start] + [self.pad] * self.k + [self.img_end]
                pieces.append(_Piece(ids, [IGNORE] * len(ids), image=seg.image))
            else:
                ids = list(self.img_ids)
                pieces.append(_Piece(ids, ids if seg.supervised else [IGNORE] * len(ids), block=seg.supervised))
        return pieces

    def __call__(self, examples: Sequence[Example], seeds: Sequence[int] | None = None) -> Batch:
        """Pad and stack ``examples``. ``seeds`` (one per example) make each example's random image transforms
        a function of its own seed: the transform's generator (``rng``, as
        :class:`~stickerconv.pegs.vision.ImageTransform` has) is reseeded before the example's first image.
        Training passes them so that a crop depends neither on which DataLoader worker or process collates the
        example nor on its neighbours in the batch."""
        if seeds is not None and len(seeds) != len(examples):
            raise ValueError(f"{len(seeds)} seeds for {len(examples)} examples")
        rows: list[tuple[list[int], list[int], list[bool], int]] = []
        images: list[tuple[int, Path]] = []  # (row, path) in row order
        for row, ex in enumerate(examples):
            ids: list[int] = []
            labels: list[int] = []
            percept: list[bool] = []
            start = -1
            for piece in self._pieces(ex):
                room = self.max_length - len(ids)
                if len(piece.ids) > room:
                    if piece.splittable:
                        ids += piece.ids[:room]
                        labels += piece.labels[:room]
                        percept += [False] * room
                    break
                if piece.block:
                    start = len(ids)
                if piece.image is not None:
                    images.append((row, piece.image))
                    percept += [False] + [True] * self.k + [False]
                else:
                    percept += [False] * len(piece.ids)
                ids += piece.ids
                labels += piece.labels
            rows.append((ids, labels, percept, start))
        t = max(len(r[0]) for r in rows)
        b = len(rows)
        input_ids = torch.full((b, t), self.pad, dtype=torch.long)
        labels_t = torch.full((b, t), IGNORE, dtype=torch.long)
        attention = torch.zeros((b, t), dtype=torch.long)
        perception = torch.zeros((b, t), dtype=torch.bool)
        for i, (ids, labels, percept, _) in enumerate(rows):
            n = len(ids)
            input_ids[i, :n] = torch.tensor(ids)
            labels_t[i, :n] = torch.tensor(labels)
            attention[i, :n] = 1
            perception[i, :n] = torch.tensor(percept)
        block_start = torch.tensor([r[3] for r in rows], dtype=torch.long)
        target_rows = [i for i, ex in enumerate(examples) if rows[i][3] >= 0 and ex.target_image is not None]
        caption_rows = [i for i, ex in enumerate(examples) if rows[i][3] >= 0 and ex.caption is not None]
        return Batch(
            input_ids=input_ids,
            attention_mask=attention,
            labels=labels_t,
            perception_mask=perception,
            pixels=_stack(self._pixels(images, seeds)),
            block_start=block_start,
            target_rows=torch.tensor(target_rows, dtype=torch.long),
            target_pixels=_stack([self.target_transform(examples[i].target_image) for i in target_rows]),  # type: ignore[arg-type]
            caption_rows=torch.tensor(caption_rows, dtype=torch.long),
            captions=[examples[i].caption for i in caption_rows],  # type: ignore[misc]
        )

    def _pixels(self, images: list[tuple[int, Path]], seeds: Sequence[int] | None) -> list[torch.Tensor]:
        """The user stickers' pixels in row order; with ``seeds``, reseeded where a row's images begin."""
        out, seeded = [], -1
        for row, path in images:
            if seeds is not None and row != seeded:
                self.transform.rng.seed(seeds[row])  # type: ignore[attr-defined]
                seeded = row
            out.append(self.transform(path))
        return out


def _stack(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack(tensors) if tensors else torch.zeros(0, 3, 1, 1)
