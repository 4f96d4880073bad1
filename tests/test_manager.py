import asyncio

import pytest

from stickerconv.agent4sc.manager import (
    MANAGER_RULES,
    Manager,
    ManagerConfig,
    closure_cue,
    closure_due,
    keep,
    polarity_conflict,
    repeats,
    system_may_attempt,
    system_repeats,
    user_may_attempt,
    user_repeats,
)
from stickerconv.llm import ChatModel
from stickerconv.schema import Conversation, Sticker, Turn

from helpers.llm_fakes import ScriptedBackend

STICKER = Sticker(image="images/noto/1f600.png", emotion="The sticker conveys joy.", label="Happiness")


@pytest.mark.parametrize(
    ("answer", "dropped"),
    [('{"inconsistent": true, "reason": "happy vs sad"}', True), ('{"inconsistent": false, "reason": "fits"}', False)],
)
def test_review_polarity_drops_iff_inconsistent(answer, dropped):
    backend = ScriptedBackend(replies=[answer])
    review = asyncio.run(Manager(ChatModel(backend, cache="off")).review("My dog died today.", STICKER))
    assert review.inconsistent is dropped
    prompt = backend.requests[0].messages[-1].text
    assert "CLEAR INCONSISTENCY" in prompt and "inconsistent = true" in prompt and STICKER.emotion in prompt
    assert backend.requests[0].json_schema["properties"]["inconsistent"]["type"] == "boolean"


def test_drop_needs_the_judge_and_a_polarity_conflict():
    sad = "My dog died today and I am devastated."
    judge = ScriptedBackend(default='{"reason": "x", "inconsistent": true}')
    manager = Manager(ChatModel(judge, cache="off"))
    assert polarity_conflict(sad, STICKER) and not polarity_conflict("See you at five.", STICKER)
    assert asyncio.run(manager.drop(sad, STICKER))[0] is True
    assert asyncio.run(manager.drop("See you at five.", STICKER))[0] is False  # the judge alone is not enough
    original = Manager(ChatModel(judge, cache="off"), ManagerConfig(review_needs_polarity_conflict=False))
    assert asyncio.run(original.drop("See you at five.", STICKER))[0] is True
    consistent = Manager(ChatModel(ScriptedBackend(default='{"reason": "ok", "inconsistent": false}'), cache="off"))
    assert asyncio.run(consistent.drop(sad, STICKER))[0] is False


def test_closure_decision():
    backend = ScriptedBackend(replies=['{"decision": "FINI"}'])
    assert asyncio.run(Manager(ChatModel(backend, cache="off")).closure("B: thanks, bye!\nA: take care")) == "FINI"


def test_closure_is_due_at_turn_four_of_six_only():
    config = ManagerConfig()
    assert [t for t in range(1, 7) if closure_due(t, config)] == [4]
    assert [t for t in range(1, 9) if closure_due(t, ManagerConfig(max_turns=8))] == [6]
    assert [t for t in range(1, 7) if closure_due(t, ManagerConfig(closure_even_turns_only=False))] == [4, 5]


@pytest.mark.parametrize(
    ("user_message", "system_message", "cue"),
    [
        ("Thanks, that really helped.", "Anytime.", True),  # the user's thanks wrap up
        ("I should sleep now. Good night!", "Sleep well.", True),
        ("Maybe tomorrow.", "Take care, see you soon!", True),  # a farewell from either side
        ("I failed my exam.", "Thank you for sharing that with me.", False),  # the assistant's thanks do not
        ("Why does this keep happening?", "That sounds so frustrating.", False),
        ("I went to Byers last week.", "How was the goodbyes party?", False),  # whole words only
    ],
)
def test_closure_cue(user_message, system_message, cue):
    assert closure_cue(user_message, system_message) is cue


def test_the_papers_rules_stay_reachable():
    """``original()`` is the method reference's manager: the judges alone decide, the first line or nothing."""
    paper = ManagerConfig.original()
    assert MANAGER_RULES["original"] == paper and MANAGER_RULES["default"] == ManagerConfig()
    assert not (paper.review_needs_polarity_conflict or paper.closure_needs_cue or paper.fresh_lines)
    assert (paper.max_turns, paper.max_regenerations, paper.summary_token_limit) == (6, 3, 2000)
    assert [t for t in range(1, 7) if closure_due(t, paper)] == [4]  # the closure turn is the paper's either way
    assert ManagerConfig.original(max_turns=8).max_turns == 8


def test_repetition_checks():
    assert repeats("  Hello   THERE ", ["hello there"])
    assert user_repeats("I'm fine", past_user=["hi"], past_system=["I'm fine"])
    assert not user_repeats("new", past_user=["hi"], past_system=["ok"])
    assert system_repeats("I failed", "I failed", past_user=[], past_system=[])  # echoing the user
    assert system_repeats("so sorry", "x", past_user=["so sorry"], past_system=[])
    assert not system_repeats("so sorry", "x", past_user=["y"], past_system=["z"])


def test_frequency_rules():
    assert user_may_attempt(None, None)
    assert not user_may_attempt(STICKER, None) and not user_may_attempt(None, STICKER)
    assert system_may_attempt(None) and not system_may_attempt(STICKER)


def test_keep_only_dialogues_with_a_sticker():
    turn = Turn(turn=1, user_message="hi", system_message="hello")
    bare = Conversation(conversation=[turn], user_persona="p", user_status="s")
    assert not keep(bare)
    with_sticker = bare.model_copy(update={"conversation": [turn.model_copy(update={"user_sticker": STICKER})]})
    assert keep(with_sticker)
