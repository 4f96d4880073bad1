"""Predictions of a responder for every assistant turn of a test set, in the per-turn sample format
(method reference §4.4) with the prediction keys added: ``pred_text_response``, ``pred_image`` (0 or 1
path) and ``pred_image_metadata`` (the predicted sticker's dict, or null).

Input is either conversations (JSONL / JSON / parquet / a run folder: the contexts are exact, with
every earlier sticker) or a samples file written by ``stickerconv data convert --to samples`` (the
contexts are rebuilt from its ``history`` pairs, whose earlier stickers survive only as ``<IMG>``
placeholders, and its current user sticker).

Predictions are appended to ``OUT.partial.jsonl`` as they finish (fsynced), so a crashed or
interrupted run resumes where it stopped; the JSON array ``OUT`` is written at the end in test-set
order.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stickerconv.data.io import DataInputError, atomic_text, data_files, iter_conversations
from stickerconv.data.resolve import sample_image_path
from stickerconv.data.samples import DEFAULT_STYLE, IMG, Style, render_samples
from stickerconv.jsonl import drop_torn_tail
from stickerconv.responders.base import Responder
from stickerconv.schema import DialogueContext, Sticker, Turn

PRED_TEXT, PRED_TEXT_MISSPELT = "pred_text_response", "pred_text_reponse"  # the original wrote the latter


@dataclass
class EvalItem:
    item_id: str  # "<session>:<turn>", stable across reruns
    sample: dict[str, Any]
    context: DialogueContext


def _is_samples_file(path: Path) -> bool:
    if path.is_dir() or path.suffix.lower() != ".json":
        return False
    with path.open(encoding="utf-8") as fh:
        head = fh.read(4096).lstrip()
    return head.startswith("[") and '"input_text"' in head


def context_from_sample(sample: dict[str, Any]) -> DialogueContext:
    """A context from a §4.4 sample: earlier turns from ``history`` (their stickers are lost to
    ``<IMG>`` placeholders, which are removed), the current user sticker from its metadata."""
    history = [
        Turn(turn=i, user_message=u.replace(IMG, "").strip(), system_message=s.replace(IMG, "").strip())
        for i, (u, s) in enumerate(sample["history"], 1)
    ]
    sticker = sample.get("input_image_metadata")
    return DialogueContext(
        history=history,
        user_message=sample["query"],
        user_sticker=Sticker.model_validate(sticker) if sticker else None,
        user_persona=sample.get("user_persona"),
        user_status=sample.get("user_status"),
    )


def load_items(path: Path | str, *, style: Style = DEFAULT_STYLE, image_root: str | None = None) -> list[EvalItem]:
    """Every assistant turn of a test set, as a sample (the gold answer) and the responder's context."""
    path = Path(path)
    files = data_files(path)
    if len(files) == 1 and _is_samples_file(files[0]):
        samples = json.loads(files[0].read_text(encoding="utf-8"))
        if not isinstance(samples, list):
            raise DataInputError(f"{files[0]}: a samples file must hold one JSON array")
        items = []
        for i, sample in enumerate(samples):
            if not isinstance(sample, dict) or not {"query", "history", "response_text"} <= sample.keys():
                raise DataInputError(f"{files[0]}: element {i} is not a §4.4 sample (query, history, response_text)")
            items.append(EvalItem(f"s{i}", sample, context_from_sample(sample)))
        return items
    items = []
    for session, (_, conversation) in enumerate(iter_conversations(path)):
        samples = render_samples(conversation, style, lambda s: sample_image_path(s.image, image_root))
        for turn, sample in zip(conversation.conversation, samples, strict=True):
            context = DialogueContext(
                history=conversation.conversation[: turn.turn - 1],
                user_message=turn.user_message,
                user_sticker=turn.user_sticker,
                user_persona=conversation.user_persona,
                user_status=conversation.user_status,
            )
            items.append(EvalItem(f"{session}:{turn.turn}", sample.model_dump(mode="json"), context))
    return items


def pred_text(record: dict[str, Any]) -> str:
    """The predicted text under either key spelling."""
    if PRED_TEXT in record:
        return record[PRED_TEXT]
    if PRED_TEXT_MISSPELT in record:
        return record[PRED_TEXT_MISSPELT]
    raise KeyError(f"no {PRED_TEXT} (or {PRED_TEXT_MISSPELT}) in the record")


def _partial(out: Path) -> Path:
    return out.with_name(out.name + ".partial.jsonl")


def _done(partial: Path) -> dict[str, dict[str, Any]]:
    drop_torn_tail(partial)
    if not partial.is_file():
        return {}
    records = (json.loads(line) for line in partial.read_text(encoding="utf-8").splitlines() if line.strip())
    return {r["item_id"]: r for r in records}


def _iter_in_order(items: list[EvalItem], done: dict[str, dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for item in items:
        yield done[item.item_id]


async def predict(
    responder: Responder,
    items: list[EvalItem],
    out: Path | str,
    *,
    concurrency: int = 4,
    image_root: str | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> int:
    """Answer every item with ``responder``, resumably; write ``out`` (a JSON array); return its size."""
    out = Path(out)
    partial = _partial(out)
    done = _done(partial)
    todo = [item for item in items if item.item_id not in done]
    semaphore = asyncio.Semaphore(concurrency)
    finished = len(items) - len(todo)
    provenance = responder.describe()
    partial.parent.mkdir(parents=True, exist_ok=True)

    async def one(item: EvalItem) -> None:
        nonlocal finished
        async with semaphore:
            reply = await responder.respond(item.context)
        sticker = reply.sticker
        record = item.sample | {
            "item_id": item.item_id,
            PRED_TEXT: reply.text,
            "pred_image": [sample_image_path(sticker.image, image_root)] if sticker else [],
            "pred_image_metadata": sticker.to_published() if sticker else None,
            "pred_meta": provenance,
        }
        with partial.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        done[item.item_id] = record
        finished += 1
        if on_progress:
            on_progress(finished, len(items))

    await asyncio.gather(*(one(item) for item in todo))
    count = write_array(out, _iter_in_order(items, done))
    partial.unlink()
    return count


def write_array(path: Path | str, records: Iterable[dict[str, Any]]) -> int:
    """One JSON array, one record per line inside it (the §4.4 file form), written atomically."""
    count = 0
    with atomic_text(path) as fh:
        fh.write("[")
        for record in records:
            fh.write(("\n" if count == 0 else ",\n") + json.dumps(record, ensure_ascii=False))
            count += 1
        fh.write("\n]\n")
    return count


def load_predictions(path: Path | str) -> list[dict[str, Any]]:
    """A predictions file (JSON array or JSON Lines); every record must carry a predicted text."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    try:
        records = (
            json.loads(text)
            if text.lstrip().startswith("[")
            else [json.loads(x) for x in text.splitlines() if x.strip()]
        )
    except json.JSONDecodeError as exc:
        raise DataInputError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from None
    for i, record in enumerate(records):
        if not isinstance(record, dict) or not ({PRED_TEXT, PRED_TEXT_MISSPELT} & record.keys()):
            raise DataInputError(f"{path}: record {i} has no {PRED_TEXT} (is this a predictions file?)")
        if "response_text" not in record:
            raise DataInputError(f"{path}: record {i} has no gold response_text")
    return records
