"""Predictions of a responder for every assistant turn of a test set, in the per-turn sample format
(method reference §4.4) with the prediction keys added: ``pred_text_response``, ``pred_image`` (0 or 1
path) and ``pred_image_metadata`` (the predicted sticker's dict, or null); the record model is
:class:`stickerconv.schema.Prediction`.

Input is conversations (the contexts are exact, with every earlier sticker) or samples written by
``stickerconv data convert --to samples`` (the contexts are rebuilt from their ``history`` pairs, whose
earlier stickers survive only as ``<IMG>`` placeholders, and their current user sticker), told apart
by the records' keys in any layout (:mod:`stickerconv.data.io`).

Predictions are appended to ``OUT.partial.jsonl`` as they finish (fsynced), so a crashed or
interrupted run resumes where it stopped; ``OUT`` is written at the end in test-set order, in the
layout its extension names (``.json``: one JSON array, the §4.4 file form; ``.jsonl``; ``.parquet``).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stickerconv.data.io import DataSource, open_source, output_layout, parse_conversation, write_records
from stickerconv.data.resolve import sample_image_path
from stickerconv.data.samples import DEFAULT_STYLE, Style, load_sample_records, parse_sample, render_samples
from stickerconv.jsonl import drop_torn_tail, iter_jsonl
from stickerconv.responders.base import Responder
from stickerconv.schema import (
    IMG,
    PRED_TEXT,
    PRED_TEXT_KEYS,
    PRED_TEXT_MISSPELT,
    DialogueContext,
    Prediction,
    PredictionRecord,
    Reply,
    Sample,
    Sticker,
    Turn,
    prediction_fields,
)


@dataclass
class EvalItem:
    item_id: str  # "<session>:<turn>", stable across reruns
    sample: Sample  # the gold answer
    context: DialogueContext

    def prediction(self, reply: Reply, provenance: dict[str, Any], image_root: str | None = None) -> Prediction:
        """The item's sample with ``reply`` added; the sticker's path as :func:`sample_image_path` writes it."""
        sticker = reply.sticker
        return Prediction(
            **vars(self.sample),
            item_id=self.item_id,
            pred_text_response=reply.text,
            pred_image=[sample_image_path(sticker.image, image_root)] if sticker else [],
            pred_image_metadata=sticker.to_published() if sticker else None,
            pred_meta=provenance,
        )


def context_from_sample(sample: Sample) -> DialogueContext:
    """A context from a §4.4 sample: earlier turns from ``history`` (their stickers are lost to
    ``<IMG>`` placeholders, which are removed), the current user sticker from its metadata."""
    history = [
        Turn(turn=i, user_message=u.replace(IMG, "").strip(), system_message=s.replace(IMG, "").strip())
        for i, (u, s) in enumerate(sample.history, 1)
    ]
    sticker = sample.input_image_metadata
    return DialogueContext(
        history=history,
        user_message=sample.query,
        user_sticker=Sticker.model_validate(sticker) if sticker else None,
        user_persona=sample.user_persona,
        user_status=sample.user_status,
    )


def load_items(
    path: Path | str | DataSource, *, style: Style = DEFAULT_STYLE, image_root: str | None = None
) -> list[EvalItem]:
    """Every assistant turn of a test set (conversations or samples), as a sample (the gold answer) and
    the responder's context. Any other kind of file is refused before a record is read."""
    items = []
    for number, (record, kind) in enumerate(open_source(path, ("conversations", "samples")).checked()):
        if kind == "samples":
            sample = parse_sample(record)
            items.append(EvalItem(f"s{number}", sample, context_from_sample(sample)))
            continue
        conversation = parse_conversation(record)
        samples = render_samples(conversation, style, lambda s: sample_image_path(s.image, image_root))
        for turn, rendered in zip(conversation.conversation, samples, strict=True):
            context = DialogueContext(
                history=conversation.conversation[: turn.turn - 1],
                user_message=turn.user_message,
                user_sticker=turn.user_sticker,
                user_persona=conversation.user_persona,
                user_status=conversation.user_status,
            )
            items.append(EvalItem(f"{number}:{turn.turn}", rendered, context))
    return items


def pred_text(record: PredictionRecord) -> str:
    """The predicted text under either key spelling."""
    fields = prediction_fields(record)
    for key in PRED_TEXT_KEYS:
        if key in fields:
            return fields[key]
    raise KeyError(f"no {PRED_TEXT} (or {PRED_TEXT_MISSPELT}) in the record")


def _partial(out: Path) -> Path:
    return out.with_name(out.name + ".partial.jsonl")


def _done(partial: Path) -> dict[str, Prediction]:
    """The predictions an earlier run finished; a bad line stops here, named by file, line and field."""
    drop_torn_tail(partial)
    if not partial.is_file():
        return {}
    return {p.item_id: p for _, p in iter_jsonl(partial, Prediction) if p.item_id is not None}


def _dump(prediction: Prediction) -> dict[str, Any]:
    """The JSON record: every field, nulls included, in the model's order (the format since the start)."""
    return prediction.model_dump(mode="json")


def _iter_in_order(items: list[EvalItem], done: dict[str, Prediction]) -> Iterator[dict[str, Any]]:
    for item in items:
        yield _dump(done[item.item_id])


async def predict(
    responder: Responder,
    items: list[EvalItem],
    out: Path | str,
    *,
    concurrency: int = 4,
    image_root: str | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    provenance: dict[str, Any] | None = None,
) -> int:
    """Answer every item with ``responder``, resumably; write ``out`` in the layout its extension names
    (checked before any answer); return its size. ``provenance``: each prediction's ``pred_meta`` (default:
    the responder's own description); the caller adds what the responder cannot know, such as the profile."""
    output_layout(out)
    out = Path(out)
    partial = _partial(out)
    done = _done(partial)
    todo = [item for item in items if item.item_id not in done]
    semaphore = asyncio.Semaphore(concurrency)
    finished = len(items) - len(todo)
    provenance = provenance if provenance is not None else responder.describe()
    partial.parent.mkdir(parents=True, exist_ok=True)

    async def one(item: EvalItem) -> None:
        nonlocal finished
        async with semaphore:
            reply = await responder.respond(item.context)
        prediction = item.prediction(reply, provenance, image_root)
        with partial.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(_dump(prediction), ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        done[item.item_id] = prediction
        finished += 1
        if on_progress:
            on_progress(finished, len(items))

    await asyncio.gather(*(one(item) for item in todo))
    count = write_records(out, _iter_in_order(items, done))
    partial.unlink()
    return count


def load_predictions(path: Path | str | DataSource) -> list[dict[str, Any]]:
    """A predictions file in any layout, every record validated as a :class:`Prediction` and kept as the
    plain JSON dict it was (what the scorers and ``--json`` take); samples, conversations or anything else
    are refused, naming what the file holds."""
    return load_sample_records(path, ("predictions",))
