"""One simulated dialogue: the turn loop of the method reference (§2.9) with the manager's checks.

Returns the conversation in the StickerConv schema, with the manager's decisions, every plan
outcome (intent, query, candidates, selection) and the end reason under ``meta``. End reasons:
``max_turns``; ``closure`` (the judge said FINI); ``repetition`` (an utterance still repeated an earlier
one after the regenerations); ``no_utterance`` (still empty, one word or the prompt echoed back).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

from stickerconv.agent4sc.agent import Agent, Utterance
from stickerconv.agent4sc.dialogue import DialogueMemory
from stickerconv.agent4sc.manager import (
    Manager,
    closure_cue,
    closure_due,
    system_may_attempt,
    system_repeats,
    user_may_attempt,
    user_repeats,
)
from stickerconv.agent4sc.memory import remember_turn
from stickerconv.agent4sc.plan import PlanOutcome
from stickerconv.llm.types import RetryBudgetExhausted, StructuredOutputError
from stickerconv.schema import Conversation, Sticker, Turn

MIN_WORDS = 2


def _is_utterance(text: str) -> bool:
    """Not empty or a single word, and not the prompt's observation line echoed back."""
    return len(text.split()) >= MIN_WORDS and not text.startswith("Only speak") and "'s action:" not in text


@dataclass
class DialogueResult:
    conversation: Conversation | None  # None when not even the first turn was completed
    end_reason: str
    meta: dict[str, Any] = field(default_factory=dict)


def _pick(said: Utterance, is_repeat: Callable[[str], bool], fresh: bool) -> Utterance | None:
    """The utterance the guard accepts from one answer, or None: the first line (the method reference), or
    with ``fresh`` the first line not copied from the prompt that is an utterance and no repeat, else the
    first line as the method reference takes it (so the guard never refuses what the paper's accepts)."""
    candidates = (*said.fresh, said.text) if fresh else (said.text,)
    for text in candidates:
        if _is_utterance(text) and not is_repeat(text):
            return replace(said, text=text)
    return None


async def _guarded(
    agent: Agent,
    is_repeat: Callable[[str], bool],
    speak_args: tuple,
    sticker_allowed: bool,
    manager: Manager,
    rng: random.Random,
    log: list[dict],
) -> Utterance | str:
    """An utterance that repeats nothing said before, regenerated up to N times at a sampled temperature;
    or, when every try failed, why the last one did: "repetition" or "no_utterance" (empty, a single
    word, or the prompt's observation line echoed back)."""
    fresh = manager.config.fresh_lines
    said = await agent.speak(*speak_args, sticker_allowed=sticker_allowed)
    tries = 0
    while (picked := _pick(said, is_repeat, fresh)) is None:
        if tries >= manager.config.max_regenerations:
            reason = "repetition" if is_repeat(said.text) else "no_utterance"
            log.append({"event": f"{reason}_unresolved", "speaker": agent.profile.name, "text": said.text})
            return reason
        tries += 1
        temperature = rng.choice([t / 10 for t in range(1, 11)])  # seeded, as §9 item 13 asks
        log.append({"event": "regenerate", "speaker": agent.profile.name, "try": tries, "temperature": temperature})
        settings = agent.settings.model_copy(update={"temperature": temperature, "seed": rng.randrange(2**31)})
        said = await agent.speak(*speak_args, settings, sticker_allowed=sticker_allowed)
    if picked.text != said.text:
        log.append({"event": "fresh_line", "speaker": agent.profile.name, "first_line": said.text})
    return picked


async def _sticker(
    agent: Agent, said: Utterance, manager: Manager, decisions: list[dict]
) -> tuple[Sticker | None, dict]:
    message = said.text
    outcome: PlanOutcome = await agent.plan(message, said.draft)
    record = outcome.to_meta() | {"speaker": agent.profile.name}
    sticker = outcome.selected
    if sticker is not None:
        dropped, review = await manager.drop(message, sticker)
        record["review"] = {"inconsistent": review.inconsistent, "reason": review.reason, "dropped": dropped}
        if dropped:
            decisions.append({"event": "sticker_dropped", "speaker": agent.profile.name, "sticker": sticker.id})
            sticker = None
    return sticker, record


@dataclass
class _TurnContext:
    """What each side's half of turn ``t`` shares: the manager, the seeded RNG and the session's logs."""

    t: int
    manager: Manager
    rng: random.Random
    decisions: list[dict]
    plans: list[dict]


async def _take_turn(
    agent: Agent, is_repeat: Callable[[str], bool], speak_args: tuple, sticker_allowed: bool, turn: _TurnContext
) -> tuple[str, Sticker | None] | str:
    """One side's half of a turn: the guarded utterance, then, when the frequency rules allow, its sticker
    (plan and review); the end reason instead when no usable utterance came."""
    said = await _guarded(agent, is_repeat, speak_args, sticker_allowed, turn.manager, turn.rng, turn.decisions)
    if isinstance(said, str):
        return said
    await _remember_own_words(agent, turn.t, said.text)
    sticker = None
    if sticker_allowed:
        sticker, record = await _sticker(agent, said, turn.manager, turn.decisions)
        turn.plans.append(record | {"turn": turn.t})
    await _remember_own_sticker(agent, sticker)
    return said.text, sticker


async def _remember_own_words(agent: Agent, t: int, text: str) -> None:
    """The original's memory of an utterance, stored as it is said (method reference §2.5, §2.6)."""
    if agent.pattern.own_memories:
        name = agent.profile.name
        note = f"{name} engage in a casual chat, and said {text}" if t == 1 else f"{name} reply {text}"
        await agent.memory.add([note])


async def _remember_own_sticker(agent: Agent, sticker: Sticker | None) -> None:
    """The original's "use a sticker" memory, stored once the manager keeps the sticker (§2.7 step 5)."""
    if agent.pattern.own_memories and sticker is not None:
        name, emotion, description = agent.profile.name, sticker.emotion, sticker.description
        note = f"{name} use a sticker, sticker's emotion: {emotion}, sticker's description: {description}"
        await agent.memory.add([note])


async def _update_memories(
    user_agent: Agent,
    system_agent: Agent,
    t: int,
    u: str,
    s: str,
    u_stk: Sticker | None,
    s_stk: Sticker | None,
    decisions: list[dict],
) -> None:
    """What both agents remember of turn t (unless each remembered its own words as it spoke), then reflection
    when due and the even-turn self-summary."""
    if not user_agent.pattern.own_memories:
        entries = []
        for agent, own, other, sticker in ((user_agent, u, s, u_stk), (system_agent, s, u, s_stk)):
            name, other_name = agent.profile.name, ("A" if agent is user_agent else "B")
            notes = [f"{name} said: {own}", f"{other_name} said: {other}"]
            if sticker is not None:
                brief = agent.sticker_text(sticker)
                used = f"used a sticker: {brief}" if brief else f"use a sticker, sticker's emotion: {sticker.emotion}"
                notes.append(f"{name} {used}")
            entries.append((agent.memory, notes))
        await remember_turn(entries)
    for agent in (user_agent, system_agent):
        if agent.memory.should_reflect:
            try:
                await agent.memory.reflect()
                decisions.append({"event": "reflection", "speaker": agent.profile.name, "turn": t})
            except RetryBudgetExhausted as exc:
                if not isinstance(exc.last, StructuredOutputError):
                    raise  # the server is failing: stop, a rerun resumes
                agent.memory.skip_reflection()  # the model cannot answer the format: go on without it
                decisions.append({"event": "reflection_failed", "speaker": agent.profile.name, "turn": t})
        if t % 2 == 0:
            await agent.refresh_summary()


async def simulate(
    user_agent: Agent, system_agent: Agent, manager: Manager, *, persona: str, status: str, seed: int = 0
) -> DialogueResult:
    rng = random.Random(seed)
    max_turns = manager.config.max_turns
    turns: list[Turn] = []
    dialogue = DialogueMemory(manager.model, manager.config.summary_token_limit, manager.config.summary_max_tokens)
    decisions: list[dict] = []
    plans: list[dict] = []
    prev_u = prev_s = None
    end = "max_turns"
    for t in range(1, max_turns + 1):
        past_user = [x.user_message for x in turns]
        past_system = [x.system_message for x in turns]
        context = _TurnContext(t, manager, rng, decisions, plans)
        said_u = await _take_turn(
            user_agent,
            partial(user_repeats, past_user=past_user, past_system=past_system),
            (dialogue.render(), user_agent.observe("A", prev_s), t, max_turns),
            user_may_attempt(prev_u, prev_s),
            context,
        )
        if isinstance(said_u, str):
            end = said_u
            break
        u, u_stk = said_u
        said_s = await _take_turn(
            system_agent,
            partial(system_repeats, user_message=u, past_user=past_user, past_system=past_system),
            (dialogue.render([f"B: {u}"]), system_agent.observe("B", u_stk), t, max_turns),
            system_may_attempt(prev_s),
            context,
        )
        if isinstance(said_s, str):
            end = said_s
            break
        s, s_stk = said_s
        turns.append(Turn(turn=t, user_message=u, system_message=s, user_sticker=u_stk, system_sticker=s_stk))
        folds = dialogue.folds
        markers = manager.config.sticker_markers
        await dialogue.add(history_line("B", u, u_stk, markers), history_line("A", s, s_stk, markers))
        if dialogue.folds > folds:
            decisions.append({"event": "summary_fold", "turn": t, "summary": dialogue.summary})
        ending = t >= max_turns
        if not ending and closure_due(t, manager.config):
            if manager.config.closure_needs_cue and not closure_cue(u, s):
                decisions.append({"event": "closure", "turn": t, "decision": "CONT", "judged": False})
            else:
                verdict = await manager.closure(dialogue.render())
                decisions.append({"event": "closure", "turn": t, "decision": verdict, "judged": True})
                if verdict == "FINI":
                    end, ending = "closure", True
        if not (ending and user_agent.pattern.skip_final_memory):
            await _update_memories(user_agent, system_agent, t, u, s, u_stk, s_stk, decisions)
        if ending:
            break
        prev_u, prev_s = u_stk, s_stk
    meta = {"end_reason": end, "seed": seed, "decisions": decisions, "plans": plans}
    if not turns:
        return DialogueResult(None, end, meta)
    conversation = Conversation(conversation=turns, user_persona=persona, user_status=status, meta=meta)
    return DialogueResult(conversation, end, meta)


def history_line(speaker: str, text: str, sticker: Sticker | None, markers: bool) -> str:
    """One line of the shared history; with ``markers`` a sticker sent with it is named after the text."""
    line = f"{speaker}: {text}"
    return f"{line} [sticker: {sticker.description}]" if markers and sticker is not None else line
