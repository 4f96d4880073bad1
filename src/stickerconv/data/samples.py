"""The paper's per-turn training samples (method reference §4.4), rendered from structured turns.

Conversations stay structured; the prompt text is rendered here by one template function in either
style the original code used: ``v0`` (``### Human:``/``### Assistant:``, the data PEGS was trained
on) or ``v1.5`` (``USER:``/``ASSISTANT:``, the later default and ours). Every sample satisfies
``input_text.count("<IMG>") == len(input_image)``: the images are every earlier user and system
sticker plus the current user sticker, in placeholder order; the current system sticker is the target.

A prediction (what ``eval predict`` writes, ``eval score`` reads) is a sample with the responder's reply
added; both models live in :mod:`stickerconv.schema`, and here the readers that training and evaluation
share: a samples file, or conversations rendered into samples on the fly, whatever the file's layout.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from stickerconv.data.io import (
    DataSource,
    Kind,
    Progress,
    RawRecord,
    open_source,
    parse_conversation,
    parse_model,
    write_records,
)
from stickerconv.jsonl import RecordError
from stickerconv.schema import IMG, Conversation, Prediction, Sample, Sticker

Style = Literal["v0", "v1.5"]
DEFAULT_STYLE: Style = "v1.5"


@dataclass(frozen=True)
class PromptStyle:
    """One column of the §4.4 rendering table."""

    user_prefix: str
    assistant_marker: str
    user_sticker: str  # appended to the user message when the user sent a sticker
    system_sticker: str  # appended to the system message (history and response_text)
    between_turns: str
    after_marker: str  # between the assistant marker and the system message in the history


STYLES: dict[str, PromptStyle] = {
    "v0": PromptStyle("### Human: ", "### Assistant:", "\n" + IMG, "\n" + IMG + "\n", "\n", " "),
    "v1.5": PromptStyle("USER: ", "ASSISTANT:", IMG, IMG, "</s>\n", ""),
}


ImagePath = Callable[[Sticker], str]


def render_samples(conversation: Conversation, style: Style, image_path: ImagePath) -> list[Sample]:
    """One sample per turn, following the §4.4 rule.

    ``input_text_t = [H_{t-1} + between] + user_prefix + u_t[+sticker] + "\\n" + assistant_marker``
    and ``H_t = input_text_t + [after_marker] + s_t[+sticker]``. ``image_path`` names each sticker's
    image relative to the image root (see :func:`stickerconv.data.resolve.sample_image_path`).
    """
    fmt = STYLES[style]
    samples: list[Sample] = []
    history_text: str | None = None
    images: list[str] = []
    pairs: list[tuple[str, str]] = []
    for turn in conversation.conversation:
        user = turn.user_message
        if turn.user_sticker is not None:
            user += fmt.user_sticker
            images.append(image_path(turn.user_sticker))
        prefix = "" if history_text is None else history_text + fmt.between_turns
        input_text = prefix + fmt.user_prefix + user + "\n" + fmt.assistant_marker
        response = turn.system_message + (fmt.system_sticker if turn.system_sticker is not None else "")
        response_image = [image_path(turn.system_sticker)] if turn.system_sticker is not None else []
        samples.append(
            Sample(
                input_text=input_text,
                input_image=list(images),
                response_text=response,
                response_image=response_image,
                user_persona=conversation.user_persona,
                user_status=conversation.user_status,
                input_image_metadata=turn.user_sticker.to_published() if turn.user_sticker else None,
                response_image_metadata=turn.system_sticker.to_published() if turn.system_sticker else None,
                query=turn.user_message,
                history=list(pairs),
            )
        )
        history_text = input_text + fmt.after_marker + response
        images.extend(response_image)
        pairs.append((turn.user_message, response))
    return samples


def opening(sample: Sample, style: Style) -> Sample:
    """The sample's turn as the first message of a new chat: its user message (with the user's sticker, if
    any) and gold reply, without the dialogue before it. A served chat starts this way, and a model that
    only saw turns deep in a dialogue reads a lone message differently (its send score, its [IMG1] state)."""
    fmt = STYLES[style]
    closing = "\n" + fmt.assistant_marker
    with_sticker = bool(sample.input_image) and sample.input_text.endswith(fmt.user_sticker + closing)
    user = sample.query + (fmt.user_sticker if with_sticker else "")
    return sample.model_copy(
        update={
            "input_text": fmt.user_prefix + user + closing,
            "input_image": sample.input_image[-1:] if with_sticker else [],
            "history": [],
        }
    )


SAMPLE_MODELS: dict[Kind, type[Sample]] = {"samples": Sample, "predictions": Prediction}


def parse_sample(record: RawRecord, model: type[Sample] = Sample) -> Sample:
    """A sample (or prediction) whose ``<IMG>`` placeholders match its images, or a located :class:`RecordError`."""
    sample = parse_model(record, model)
    for field, message in sample.problems():
        raise RecordError(record.file, record.line, message, field)
    return sample


def write_samples(path: Path | str, samples: Iterable[Sample]) -> int:
    """Write samples in the layout ``path``'s extension names (``.json``: one JSON array, the §4.4 file
    form; ``.jsonl``; ``.parquet``), streaming where the layout allows and atomically."""
    return write_records(path, (sample.model_dump(mode="json") for sample in samples))


def load_samples(
    path: Path | str | DataSource, style: Style, image_path: ImagePath, on_progress: Progress = None
) -> list[Sample]:
    """The samples of a samples file, or of conversations rendered one per turn in ``style`` (image paths
    by ``image_path``): training takes either, so nobody has to convert first."""
    source = open_source(path, ("samples", "conversations"))
    samples: list[Sample] = []
    for record, kind in source.checked(on_progress):
        if kind == "samples":
            samples.append(parse_sample(record))
        else:
            samples.extend(render_samples(parse_conversation(record), style, image_path))
    return samples


def load_sample_records(
    path: Path | str | DataSource, accept: Sequence[Kind] = ("samples", "predictions")
) -> list[dict[str, Any]]:
    """Samples or predictions as plain dicts (what the evaluation code reads), each validated first so
    that a broken record stops here with its file, line and field rather than deep inside a metric."""
    source = open_source(path, accept)
    records = []
    for record, kind in source.checked():
        parse_sample(record, SAMPLE_MODELS[kind])
        records.append(record.data)
    return records
