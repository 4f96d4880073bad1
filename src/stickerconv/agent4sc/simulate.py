"""One simulated dialogue: the turn loop of the method reference (§2.9) with the manager's checks.

Returns the conversation in the StickerConv schema, with the manager's decisions, every plan
outcome (intent, query, candidates, selection) and the end reason under ``meta``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from stickerconv.agent4sc.agent import Agent, Utterance, observation
from stickerconv.agent4sc.dialogue import DialogueMemory
from stickerconv.agent4sc.manager import (
    Manager,
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


async def _guarded(
    agent: Agent,
    is_repeat,
    speak_args: tuple,
    sticker_allowed: bool,
    manager: Manager,
    rng: random.Random,
    log: list[dict],
) -> Utterance | None:
    """An utterance that repeats nothing said before, regenerated up to N times at a sampled temperature."""
    said = await agent.speak(*speak_args, sticker_allowed=sticker_allowed)
    tries = 0
    while is_repeat(said.text) or not _is_utterance(said.text):
        if tries >= manager.config.max_regenerations:
            log.append({"event": "repetition_unresolved", "speaker": agent.profile.name, "text": said.text})
            return None
        tries += 1
        temperature = rng.choice([t / 10 for t in range(1, 11)])  # seeded, as §9 item 13 asks
        log.append({"event": "regenerate", "speaker": agent.profile.name, "try": tries, "temperature": temperature})
        settings = agent.settings.model_copy(update={"temperature": temperature, "seed": rng.randrange(2**31)})
        said = await agent.speak(*speak_args, settings, sticker_allowed=sticker_allowed)
    return said


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
    """What both agents remember of turn t, then reflection when due and the even-turn self-summary."""
    entries = []
    for agent, own, other, sticker in ((user_agent, u, s, u_stk), (system_agent, s, u, s_stk)):
        name, other_name = agent.profile.name, ("A" if agent is user_agent else "B")
        notes = [f"{name} said: {own}", f"{other_name} said: {other}"]
        if sticker is not None:
            notes.append(f"{name} use a sticker, sticker's emotion: {sticker.emotion}")
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
    dialogue = DialogueMemory(manager.model, manager.config.summary_token_limit)
    decisions: list[dict] = []
    plans: list[dict] = []
    prev_u = prev_s = None
    end = "max_turns"
    for t in range(1, max_turns + 1):
        past_user = [x.user_message for x in turns]
        past_system = [x.system_message for x in turns]
        user_allowed = user_may_attempt(prev_u, prev_s)
        said_u = await _guarded(
            user_agent,
            partial(user_repeats, past_user=past_user, past_system=past_system),
            (dialogue.render(), observation("A", prev_s), t, max_turns),
            user_allowed,
            manager,
            rng,
            decisions,
        )
        if said_u is None:
            end = "repetition"
            break
        u, u_stk = said_u.text, None
        if user_allowed:
            u_stk, record = await _sticker(user_agent, said_u, manager, decisions)
            plans.append(record | {"turn": t})
        system_allowed = system_may_attempt(prev_s)
        said_s = await _guarded(
            system_agent,
            partial(system_repeats, user_message=u, past_user=past_user, past_system=past_system),
            (dialogue.render([f"B: {u}"]), observation("B", u_stk), t, max_turns),
            system_allowed,
            manager,
            rng,
            decisions,
        )
        if said_s is None:
            end = "repetition"
            break
        s, s_stk = said_s.text, None
        if system_allowed:
            s_stk, record = await _sticker(system_agent, said_s, manager, decisions)
            plans.append(record | {"turn": t})
        turns.append(Turn(turn=t, user_message=u, system_message=s, user_sticker=u_stk, system_sticker=s_stk))
        folds = dialogue.folds
        await dialogue.add(f"B: {u}", f"A: {s}")
        if dialogue.folds > folds:
            decisions.append({"event": "summary_fold", "turn": t, "summary": dialogue.summary})
        ending = t >= max_turns
        if not ending and closure_due(t, manager.config):
            verdict = await manager.closure(dialogue.render())
            decisions.append({"event": "closure", "turn": t, "decision": verdict})
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
