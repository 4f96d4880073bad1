"""The shared dialogue memory the manager owns (method reference §2.5, item 1): a buffer of
``B: …`` / ``A: …`` lines under a token limit (2,000 by default), whose oldest lines are folded
into an LLM-written running summary when the limit is passed. What it renders is the history both
agents see. Stickers never enter it; they are visible only through the observation line.

Why a token *estimate*: the limit only has to keep prompts inside the model's context, and the
agents may run on different models with different tokenizers. Four characters per token is the
usual estimate for English; pass ``count_tokens`` for an exact count with a known tokenizer.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from stickerconv.llm import ChatModel, Settings, system, user

DEFAULT_TOKEN_LIMIT = 2000


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


@dataclass
class DialogueMemory:
    model: ChatModel
    token_limit: int = DEFAULT_TOKEN_LIMIT
    summary_max_tokens: int = 200  # the running summary's answer budget (ManagerConfig.summary_max_tokens)
    count_tokens: Callable[[str], int] = estimate_tokens
    lines: list[str] = field(default_factory=list)
    summary: str = ""
    folds: int = 0

    def render(self, extra: list[str] | None = None) -> str:
        """The history prompt text: the running summary (if any), then the buffered lines (+ ``extra``)."""
        head = [f"Summary of the earlier conversation: {self.summary}"] if self.summary else []
        return "\n".join([*head, *self.lines, *(extra or [])])

    def tokens(self) -> int:
        return self.count_tokens(self.render())

    async def add(self, *lines: str) -> None:
        """Append lines; while over the limit, fold the oldest lines into the summary (one LLM call).

        The newest line always stays verbatim, so an agent sees at least what it is answering.
        """
        self.lines.extend(lines)
        if self.tokens() <= self.token_limit:
            return
        folded: list[str] = []
        while len(self.lines) > 1 and self.count_tokens("\n".join(self.lines)) > self.token_limit // 2:
            folded.append(self.lines.pop(0))
        await self._fold(folded)

    async def _fold(self, folded: list[str]) -> None:
        new_lines = "\n".join(folded)
        prompt = (
            "Progressively summarise the lines of conversation, adding to the previous summary and returning "
            f"a new summary of at most three sentences.\n\nCurrent summary:\n{self.summary or '(none)'}\n\n"
            f"New lines of conversation:\n{new_lines}\n\nNew summary:"
        )
        result = await self.model.complete(
            [
                system("You keep a running summary of a conversation between B (a user) and A (an assistant)."),
                user(prompt),
            ],
            settings=Settings(temperature=0.0, max_tokens=self.summary_max_tokens),
        )
        self.summary = " ".join(result.text.split())
        self.folds += 1
