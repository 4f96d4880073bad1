"""Prefix-stable prompts: consecutive calls of one agent share their opening, so a server's prefix cache
(vLLM, llama.cpp, OpenAI's cached input tokens) reuses it; the original pattern's prompts stay as they were."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
from pathlib import Path

from stickerconv.agent4sc.manager import ManagerConfig
from stickerconv.agent4sc.pattern import CallPattern, PromptLog, uncached_prompt_tokens
from stickerconv.agent4sc.runner import run_generation

from helpers.agent4sc import PERSONAS, llm_factory, scripted_world

ORIGINAL_PROMPTS = Path(__file__).parent / "data" / "agent4sc_original_prompts.json"
AGENTS = {"user_agent", "assistant_agent"}


def farewell_by_text(request) -> str:
    """An utterance from the prompt's text alone (not the request's key, which holds model and settings), with a
    winding-down cue so the closure judge is asked too."""
    digest = hashlib.sha256("\n".join(m.text for m in request.messages).encode()).hexdigest()[:8]
    return f"B: message {digest} about the exam, thanks, I have to go now. Bye!"


def original_trace(folder: Path, index) -> list[dict]:
    """Every prompt of one scripted session of the original pattern: utterances, intent, query, select, review,
    closure, a summary fold, importance, reflection and self-summary calls."""
    backend = scripted_world(utterance=farewell_by_text)
    asyncio.run(
        run_generation(
            PERSONAS[:1],
            index,
            llm_factory(folder, backend),
            folder / "run",
            manager_config=ManagerConfig(summary_token_limit=120),
            call_pattern=CallPattern.original(),
        )
    )
    return [
        {"schema": (r.json_schema or {}).get("title"), "messages": [[m.role, m.text] for m in r.messages]}
        for r in backend.requests
    ]


def test_the_original_patterns_prompts_are_unchanged(tmp_path, small_index):
    assert original_trace(tmp_path, small_index) == json.loads(ORIGINAL_PROMPTS.read_text())


def _words(text: str) -> list[str]:
    """A tokenizer for the test: words and punctuation marks."""
    return re.findall(r"\w+|[^\w\s]", text)


def _lean_log(folder: Path, index) -> PromptLog:
    log = PromptLog()
    factory = log.watch(llm_factory(folder, scripted_world()))
    asyncio.run(run_generation(PERSONAS[:3], index, factory, folder / "run", concurrency=3))
    return log


def test_consecutive_calls_of_an_agent_share_its_whole_system_text_and_the_dialogue(tmp_path, small_index):
    log = _lean_log(tmp_path, small_index)
    chains: dict = {}
    for caller, prompt in log.calls:
        if caller[1] in AGENTS:
            chains.setdefault(caller, []).append(prompt)
    assert len(chains) == 6  # two agents in each of three sessions
    for (_, role), prompts in chains.items():
        system_text = prompts[0][: prompts[0].index("<|user|>")]
        assert "Innate traits: " in system_text and "- emotion: " in system_text  # profile, rules, examples
        for before, after in zip(prompts, prompts[1:], strict=False):
            shared = len(os.path.commonprefix([before, after]))
            assert shared >= len(system_text), role
        # The dialogue only grows: the last prompt repeats the first turn's history line where the first left it.
        assert prompts[-1].startswith(system_text + "<|user|>\nB: message ")


def test_lean_prompts_leave_little_uncached(tmp_path, small_index):
    """Measured with the order before (self-summary inside the profile block, the dialogue after the
    instructions, few-shot examples drawn afresh at the end): 0.86 of the sessions' prompt tokens uncached, 0.81
    of the agents' own calls; built for prefix reuse: 0.50 and 0.27; with the memory calls on one session log,
    the shorter utterance cues and stickers named by their briefs: 0.30 and 0.23 (the rest is new by nature:
    candidate stickers, memories to rate, the manager's review)."""
    log = _lean_log(tmp_path, small_index)
    counts = uncached_prompt_tokens(log.calls, _words)
    sessions = log.sessions(_words)
    share = sum(s.uncached_tokens for s in sessions) / sum(s.prompt_tokens for s in sessions)
    agents = [c for ((_, caller), _), c in zip(log.calls, counts, strict=True) if caller in AGENTS]
    agents_share = sum(c.uncached_tokens for c in agents) / sum(c.prompt_tokens for c in agents)
    assert len(sessions) == 3 and share < 0.4 and agents_share < 0.3, (share, agents_share)


def test_a_sessions_memory_calls_continue_one_growing_log(tmp_path, small_index):
    """Rating, reflection and self-summary calls open with the session's memory log: each call's list of
    memories is the previous call's list with the new memories after it, so only the request is new to a cache."""
    log = _lean_log(tmp_path, small_index)
    chains: dict = {}
    for caller, prompt in log.calls:
        if caller[1] == "memory":
            chains.setdefault(caller, []).append(prompt)
    assert len(chains) == 3
    for prompts in chains.values():
        steps = {"rate": 0, "reflect": 0, "summary": 0}
        for before, after in zip(prompts, prompts[1:], strict=False):
            listed = before[: before.rindex("\n\n")]  # the system text and the numbered memories
            assert after.startswith(listed), (before, after)
        for prompt in prompts:
            request = prompt[prompt.rindex("\n\n") + 2 :]
            steps["rate"] += request.startswith("Rate the likely poignancy of memories")
            steps["reflect"] += request.startswith(("For B: given only memories", "For A: given only memories"))
            steps["summary"] += "core characteristics" in request and request.startswith("From memories")
        assert steps["rate"] >= 2 and steps["summary"] >= 2 and steps["reflect"] >= 1, steps
