"""The paper's per-turn training samples (method reference §4.4), rendered from structured turns.

Conversations stay structured; the prompt text is rendered here by one template function in either
style the original code used: ``v0`` (``### Human:``/``### Assistant:``, the data PEGS was trained
on) or ``v1.5`` (``USER:``/``ASSISTANT:``, the later default and ours). Every sample satisfies
``input_text.count("<IMG>") == len(input_image)``: the images are every earlier user and system
sticker plus the current user sticker, in placeholder order; the current system sticker is the target.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from stickerconv.data.io import atomic_text
from stickerconv.schema import Conversation, Sticker

IMG = "<IMG>"
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


class Sample(BaseModel):
    """One §4.4 sample: the dialogue so far and the gold system reply of one turn."""

    model_config = ConfigDict(extra="forbid")

    input_text: str
    input_image: list[str]
    response_text: str
    response_image: list[str]
    user_persona: str
    user_status: str
    input_image_metadata: dict[str, Any] | None
    response_image_metadata: dict[str, Any] | None
    query: str
    history: list[tuple[str, str]]

    def problems(self) -> list[tuple[str, str]]:
        """Broken invariants as (field, message); the placeholders must match the image lists."""
        out = []
        if self.input_text.count(IMG) != len(self.input_image):
            out.append(
                (
                    "input_image",
                    f"{len(self.input_image)} image(s) but input_text has {self.input_text.count(IMG)} {IMG}",
                )
            )
        if self.response_text.count(IMG) != len(self.response_image) or len(self.response_image) > 1:
            out.append(
                (
                    "response_image",
                    f"{len(self.response_image)} image(s) but response_text has {self.response_text.count(IMG)} "
                    f"{IMG} (at most one sticker per reply)",
                )
            )
        return out


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


def write_samples(path: Path | str, samples: Iterable[Sample]) -> int:
    """Write samples as one JSON array (the §4.4 file form), streaming and atomically."""
    count = 0
    with atomic_text(path) as fh:
        fh.write("[")
        for sample in samples:
            fh.write(("\n" if count == 0 else ",\n") + sample.model_dump_json())
            count += 1
        fh.write("\n]\n" if count else "]\n")
    return count
