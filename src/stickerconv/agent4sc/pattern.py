"""How the method's steps map onto LLM calls. Both patterns run every step of the method reference
(utterance, importance, reflection, self-summary, intent, query, retrieve, select, review, closure);
the lean one, the default, spends far fewer tokens on them (figures: ``bench/agent4sc.py``):

* the sticker intent and query are drafted in the utterance call itself whenever the frequency rules
  allow a sticker, instead of two more calls repeating the agent's profile and the message;
* a turn's memories are rated for importance in one call per agent, not one call per memory;
* few-shot query examples are shortened to their first words, and stickers (selection candidates, the other's
  action, the review, the memory of a sticker) are named by their briefs: the label, then what the description
  says beyond the phrases the library's annotations share (``stickers.brief``);
* after the last turn the agents' memories are not updated (no rating, reflection or
  self-summary): no utterance would ever use them;
* both agents remember the whole turn ("B said: ...", "A said: ...") once it is over, rated together; the
  original's agents remember what they themselves said as they say it, and the sticker they used once the
  manager keeps it, one memory at a time (``own_memories``).

``CallPattern.original()`` reproduces the original's calls, for faithful reproduction and as the
baseline of the benchmark.

The lean prompts are also built for prefix caching (vLLM's and llama.cpp's prefix caches, OpenAI's cached input
tokens): each agent's utterance calls open with the same system text (profile, rules, fixed few-shot examples),
then the dialogue so far, which only grows, and end with what changes from call to call (the other's action, the
turn, the self-summary) and the question, kept last for a small model's sake (``Agent._compact_speech``). The
memory calls (rating, reflection, the self-summary) all open with one system text and the session's numbered
memory log, which only grows, and end with a request naming memories by number (``memory.MemoryLog``); the
review asks its question in the system text.
``uncached_prompt_tokens`` measures what a cache that keeps each caller's previous prompt saves; ``PromptLog``
records the prompts it needs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass

from stickerconv.llm import ChatModel, LLMFactory
from stickerconv.llm.types import Message
from stickerconv.profiles import Profile


@dataclass(frozen=True)
class CallPattern:
    fuse_plan: bool = True
    batch_importance: bool = True
    compact_prompts: bool = True
    skip_final_memory: bool = True
    own_memories: bool = False

    @classmethod
    def original(cls) -> CallPattern:
        return cls(
            fuse_plan=False, batch_importance=False, compact_prompts=False, skip_final_memory=False, own_memories=True
        )

    @classmethod
    def for_profile(cls, profile: Profile) -> CallPattern:
        """The calls of a profile: lean (``default``) or the original's (``paper``), candidate blocks with every
        metadata field (emotion, recommendation) and full few-shot examples included."""
        return cls.original() if profile == "paper" else cls()


CALL_PATTERNS = {"lean": CallPattern(), "original": CallPattern.original()}


TOOL_SCHEMAS = frozenset({"IntentAnswer", "QueryAnswer", "SelectAnswer"})  # the sticker plan's own calls


def render_prompt(messages: Sequence[Message]) -> str:
    """A call's prompt as a chat template lays it out: every message's role, then its text."""
    return "".join(f"<|{m.role}|>\n{m.text}\n" for m in messages)


@dataclass(frozen=True)
class PromptCount:
    prompt_tokens: int
    uncached_tokens: int  # the tokens after the longest common prefix with the caller's previous prompt


def uncached_prompt_tokens(
    calls: Iterable[tuple[Hashable, str]], tokenize: Callable[[str], Sequence[int]]
) -> list[PromptCount]:
    """Per call (``caller``, prompt), in order: its prompt tokens, and those a prefix cache holding the caller's
    previous prompt would still compute (a server keeps more than that, so this is an upper bound)."""
    previous: dict[Hashable, Sequence[int]] = {}
    counts = []
    for caller, prompt in calls:
        tokens = tokenize(prompt)
        before = previous.get(caller, ())
        shared = next((i for i, (a, b) in enumerate(zip(tokens, before, strict=False)) if a != b), None)
        shared = min(len(tokens), len(before)) if shared is None else shared
        counts.append(PromptCount(len(tokens), len(tokens) - shared))
        previous[caller] = tokens
    return counts


class PromptLog:
    """Every call's rendered prompt with its caller, for ``uncached_prompt_tokens``. The caller is the session
    (the asyncio task the runner runs it in) and the chat model's role (``user_agent``, ``assistant_agent``,
    ``memory``, ``manager``), with the sticker plan's calls kept apart as that agent's tool."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[asyncio.Task | None, str], str]] = []
        self.schemas: list[str | None] = []  # each call's answer schema (None: free text), beside ``calls``

    def watch(self, factory: LLMFactory) -> LLMFactory:
        """``factory``, its chat models now recording here each prompt they send."""
        make = factory.chat_model

        def chat_model(role: str = "default") -> ChatModel:
            model = make(role)
            complete = model.complete

            async def recorded(messages, schema=None, **kwargs):
                title = getattr(schema, "__name__", None)
                caller = f"{role} tool" if title in TOOL_SCHEMAS else role
                self.calls.append(((asyncio.current_task(), caller), render_prompt(messages)))
                self.schemas.append(title)
                return await complete(messages, schema, **kwargs)

            model.complete = recorded
            return model

        factory.chat_model = chat_model
        return factory

    def sessions(self, tokenize: Callable[[str], Sequence[int]]) -> list[PromptCount]:
        """Prompt and uncached prompt tokens per session, in the order the sessions started."""
        totals: dict[asyncio.Task | None, list[int]] = {}
        for ((session, _), _), count in zip(self.calls, uncached_prompt_tokens(self.calls, tokenize), strict=True):
            total = totals.setdefault(session, [0, 0])
            total[0] += count.prompt_tokens
            total[1] += count.uncached_tokens
        return [PromptCount(*total) for total in totals.values()]
