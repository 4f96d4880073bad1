"""Readable replies of the embedded model, run by hand:  .venv/bin/python bench/replies.py [--prompts 30]

The text baseline's call (the empathetic system prompt, one user message, temperature 0.5, at most
200 tokens; method reference §7) on a fixed set of messages, under a few decoding settings of
SmolLM2-135M-Instruct on llama.cpp. For each setting it prints a Markdown table row: the share of
replies ending mid-sentence, the share with a repeated sentence or clause, and the mean length in
words, each over the model's whole answers, their first lines (the text baseline's reply before
``readable``) and the baseline's reply now (``clean_utterance``: the first line made ``readable``,
src/stickerconv/text.py); then the share the token budget cut and the seconds per call.
Seeds are fixed, so a setting's figures change only with the model or llama.cpp; the run takes about
8 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

from stickerconv.llm import ChatModel, Settings, system, user
from stickerconv.llm.backends.local import LocalBackend
from stickerconv.responders.base import EMPATHETIC_SYSTEM_PROMPT
from stickerconv.text import clean_utterance, ends_mid_sentence, has_repeat

MESSAGES = [
    "I failed my driving test for the third time today.",
    "My best friend moved to another country and I miss her so much.",
    "I got the job I interviewed for last week!",
    "My dog has been sick all week and the vet doesn't know why.",
    "I can't sleep because I keep worrying about money.",
    "We just won the regional football final!",
    "My parents are getting divorced and I don't know how to feel.",
    "I finally finished my first marathon.",
    "My boss yelled at me in front of the whole team.",
    "I think my roommate has been reading my diary.",
    "My grandmother passed away last night.",
    "I was accepted into the university I wanted.",
    "Someone stole my bike from outside the library.",
    "I have a big presentation tomorrow and I'm terrified.",
    "My sister just had a baby girl!",
    "I feel lonely since I started working from home.",
    "My flight got cancelled and I'll miss my cousin's wedding.",
    "I burned the dinner I spent all afternoon cooking.",
    "My best friend forgot my birthday.",
    "I passed my exams with top marks.",
    "The neighbours have been playing loud music every night.",
    "I broke up with my boyfriend after five years.",
    "I found out my coworker takes credit for my work.",
    "I adopted a kitten today.",
    "My car broke down on the highway this morning.",
    "I'm nervous about moving to a new city alone.",
    "My team lost the game because of my mistake.",
    "I finally told my family that I'm changing careers.",
    "My phone fell into the lake and all my photos are gone.",
    "I got a surprise letter from an old friend.",
]

BASE = {"temperature": 0.5, "max_tokens": 200}
VARIANTS = {
    "no penalty (repeat 1.0)": {"repeat_penalty": 1.0},
    "repeat 1.15 (default)": {},
    "repeat 1.3": {"repeat_penalty": 1.3},
    "repeat 1.15 + frequency 0.5": {"frequency_penalty": 0.5},
    "repeat 1.15 + presence 0.5": {"presence_penalty": 0.5},
    "repeat 1.15, 60 tokens": {"max_tokens": 60},
}


def pct(flags: list[bool]) -> str:
    return f"{100 * sum(flags) / len(flags):.0f}%"


def figures(texts: list[str]) -> tuple[str, str, str]:
    """Share ending mid-sentence, share with a repeat, mean words."""
    mid = pct([ends_mid_sentence(t) for t in texts])
    repeat = pct([has_repeat(t) for t in texts])
    return mid, repeat, f"{statistics.mean(len(t.split()) for t in texts):.1f}"


async def run(prompts: int) -> None:
    model = ChatModel(LocalBackend(), cache="off")
    print(f"SmolLM2-135M-Instruct Q4_1, {prompts} messages, load average {os.getloadavg()[0]:.1f}")
    print("answer: the model's whole answer; line: its first line (the baseline's reply before readable);")
    print("reply: clean_utterance, the baseline's reply now (first line, readable). Each cell: answer / line / reply.")
    print("| setting | mid-sentence | repeated sentence or clause | mean words | cut by max_tokens | s/call |")
    print("|---|---|---|---|---:|---:|")
    for name, change in VARIANTS.items():
        settings = Settings(**(BASE | change))
        answers, cut, start = [], [], time.perf_counter()
        for i, message in enumerate(MESSAGES[:prompts]):
            messages = [system(EMPATHETIC_SYSTEM_PROMPT), user(message)]
            result = await model.complete(messages, settings=settings.model_copy(update={"seed": i}))
            answers.append(result.text)
            cut.append(result.usage.completion_tokens >= settings.max_tokens)
        elapsed = (time.perf_counter() - start) / len(answers)
        lines = [next((ln for ln in a.splitlines() if ln.strip()), "") for a in answers]
        columns = zip(figures(answers), figures(lines), figures([clean_utterance(a) for a in answers]), strict=True)
        cells = " | ".join(" / ".join(column) for column in columns)
        print(f"| {name} | {cells} | {pct(cut)} | {elapsed:.2f} |")
    await model.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=len(MESSAGES), help="how many of the fixed messages")
    args = parser.parse_args()
    asyncio.run(run(min(args.prompts, len(MESSAGES))))


if __name__ == "__main__":
    main()
