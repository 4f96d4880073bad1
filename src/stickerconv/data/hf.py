"""A Hugging Face ``datasets.Dataset`` of per-turn samples with the sticker images embedded.

Rows are the §4.4 samples (so the same training code reads this and ``--to samples``) plus the session
index, the turn number and two ``Image`` columns: the current user sticker and the gold system
sticker. Image bytes are embedded, so the saved folder is self-contained and ``push_to_hub`` uploads
the pictures with the text. A sticker whose image cannot be found (SER30K is obtained separately) gets
None in its image column and is counted, never silently dropped with its row.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from stickerconv.data.samples import Style, render_samples
from stickerconv.schema import Conversation, Sticker

log = logging.getLogger(__name__)


@dataclass
class HfReport:
    rows: int = 0
    images: int = 0  # image cells filled
    unresolved: int = 0  # stickers whose image file was not found
    sessions: int = 0


def _features():
    from datasets import Features, Image, Sequence, Value

    sticker = {
        "seq_num": Value("int64"),
        "image": Value("string"),
        "description": Value("string"),
        "emotion": Value("string"),
        "recommendation": Value("string"),
        "origin_anno": Value("string"),
    }
    return Features(
        {
            "session": Value("int64"),
            "turn": Value("int64"),
            "input_text": Value("string"),
            "input_image": Sequence(Value("string")),
            "response_text": Value("string"),
            "response_image": Sequence(Value("string")),
            "user_persona": Value("string"),
            "user_status": Value("string"),
            "input_image_metadata": sticker,
            "response_image_metadata": sticker,
            "query": Value("string"),
            "history": Sequence(Sequence(Value("string"))),
            "user_sticker_image": Image(),
            "system_sticker_image": Image(),
        }
    )


def export_hf(
    conversations: Iterable[Conversation],
    out: Path | str,
    *,
    style: Style,
    image_path: Callable[[Sticker], str],
    image_file: Callable[[Sticker], Path | None],
    require_images: bool = False,
) -> HfReport:
    """Build the dataset and ``save_to_disk(out)``; ``image_file`` finds a sticker's image or None.

    With ``require_images``, a sticker whose image is not found raises before anything is written.
    """
    from datasets import Dataset

    report = HfReport()
    conversations = list(conversations)
    payloads: dict[Path, bytes] = {}  # each image file read once
    rows = []
    for session, conversation in enumerate(conversations):
        for turn, sample in zip(
            conversation.conversation, render_samples(conversation, style, image_path), strict=True
        ):
            row = {"session": session, "turn": turn.turn, **sample.model_dump()}
            row["history"] = [list(pair) for pair in sample.history]
            for column, sticker in (
                ("user_sticker_image", turn.user_sticker),
                ("system_sticker_image", turn.system_sticker),
            ):
                found = image_file(sticker) if sticker is not None else None
                if sticker is not None and found is None:
                    report.unresolved += 1
                if found is not None and found not in payloads:
                    payloads[found] = found.read_bytes()
                row[column] = {"bytes": payloads[found], "path": found.name} if found is not None else None
                report.images += found is not None
            rows.append(row)
    report.rows, report.sessions = len(rows), len(conversations)
    if require_images and report.unresolved:
        raise ValueError(f"{report.unresolved} sticker image(s) not found; nothing written to {out}")
    dataset = Dataset.from_list(rows, features=_features())
    dataset.save_to_disk(str(out))
    if report.unresolved:
        log.warning("%d sticker image(s) not found; their image cells are empty", report.unresolved)
    return report
