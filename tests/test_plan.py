import asyncio
import json

import pytest
from pydantic import ValidationError

from stickerconv.agent4sc.plan import BRIEF_WORDS, COMPACT_EXAMPLE_WORDS, Intent, IntentAnswer, StickerTool
from stickerconv.llm import ChatModel
from stickerconv.llm.policy import RetryPolicy
from stickerconv.schema import EmotionLabel

from helpers.llm_fakes import ScriptedBackend

FAST = RetryPolicy(max_attempts=2, base_delay=0.0, max_delay=0.0, timeout=2)


def _tool(small_index, replies):
    backend = ScriptedBackend(replies=replies)
    return StickerTool(small_index, ChatModel(backend, cache="off", retry=FAST), seed=1), backend


def _plan(tool, message="I failed my exam again"):
    return asyncio.run(tool.plan("B", "You are B.\nYour status: student", message))


def test_full_plan_selects_a_retrieved_sticker(small_index):
    replies = [
        '{"intention": "Emotional Expression"}',
        '{"query": "emotion: Sadness, emotion describe: The sticker conveys sadness, crying and tears."}',
        '{"idx": 2}',
    ]
    tool, backend = _tool(small_index, replies)
    outcome = _plan(tool)
    assert outcome.intent is Intent.EXPRESSION and outcome.failure is None
    assert len(outcome.candidates) == 10 and outcome.selected is outcome.candidates[2].sticker
    assert outcome.selected.label is EmotionLabel.SADNESS
    query_prompt = backend.requests[1].messages[-1].text
    assert query_prompt.count("- emotion: ") == 7  # one indexed example per label
    assert '"Emotional Expression"' in query_prompt  # the intent string, not a dict
    select_prompt = backend.requests[2].messages[-1].text
    assert select_prompt.count("idx: ") == 10 and "=" * 20 in select_prompt
    meta = outcome.to_meta()
    assert meta["selected"] == outcome.selected.id and len(meta["candidates"]) == 10


@pytest.mark.parametrize("intent", ["Other", "None"])
def test_intent_gate_stops_without_a_sticker(small_index, intent):
    tool, backend = _tool(small_index, [json.dumps({"intention": intent})])
    outcome = _plan(tool)
    assert outcome.intent == Intent(intent) and outcome.selected is None and outcome.failure is None
    assert len(backend.requests) == 1


def test_intent_matching_is_lenient_only_for_near_misses():
    assert IntentAnswer.model_validate({"intention": "Enhancing Emoathy"}).intention is Intent.EMPATHY
    assert IntentAnswer.model_validate({"intention": "emotional expression"}).intention is Intent.EXPRESSION
    with pytest.raises(ValidationError):
        IntentAnswer.model_validate({"intention": "Sarcasm"})


def test_garbage_selection_is_a_counted_failure_not_a_crash(small_index):
    replies = ['{"intention": "Reaction Intensity"}', '{"query": "so happy, party time"}', "idx: two", "???"]
    tool, _ = _tool(small_index, replies)
    outcome = _plan(tool, "We won!")
    assert outcome.selected is None and outcome.failure.startswith("select:")
    assert len(outcome.candidates) == 10 and outcome.query == "so happy, party time"


def test_out_of_range_selection_is_reported(small_index):
    tool, _ = _tool(small_index, ['{"intention": "Enhancing Empathy"}', '{"query": "a comforting hug"}', '{"idx": 7}'])
    tool.k = 5
    outcome = _plan(tool)
    assert outcome.selected is None and outcome.failure == "select: index 7 out of range 0..4"


def test_failed_intent_call_is_reported(small_index):
    tool, _ = _tool(small_index, ["no json", "still no json"])
    outcome = _plan(tool)
    assert outcome.intent is None and outcome.failure.startswith("intent:")
    with pytest.raises(ValueError, match="k must be between 1 and 10"):
        StickerTool(small_index, ChatModel(ScriptedBackend()), k=20)


def test_a_drafted_intent_and_query_skip_their_calls(small_index):
    tool, backend = _tool(small_index, ['{"idx": 1}'])
    draft = (Intent.EMPATHY, "emotion: Sadness, emotion describe: The sticker conveys sadness and comfort.")
    outcome = asyncio.run(tool.plan("A", "You are A.", "That sounds so hard.", draft))
    assert len(backend.requests) == 1 and backend.requests[0].json_schema["title"] == "SelectAnswer"
    assert outcome.query == draft[1] and outcome.selected is outcome.candidates[1].sticker


def test_a_draft_without_a_query_asks_for_one_and_a_none_draft_stops(small_index):
    tool, backend = _tool(small_index, ['{"query": "a sad crying face"}', '{"idx": 0}'])
    outcome = asyncio.run(tool.plan("B", "You are B.", "I failed.", (Intent.EXPRESSION, "  ")))
    assert [r.json_schema["title"] for r in backend.requests] == ["QueryAnswer", "SelectAnswer"]
    assert outcome.query == "a sad crying face" and outcome.selected is not None
    tool, backend = _tool(small_index, [])
    outcome = asyncio.run(tool.plan("B", "You are B.", "ok.", (Intent.NONE, "")))
    assert backend.requests == [] and outcome.selected is None and outcome.failure is None


def test_compact_prompts_shorten_examples_and_candidates(small_index):
    backend = ScriptedBackend(replies=['{"intention": "Emotional Expression"}', '{"query": "sad face"}', '{"idx": 0}'])
    tool = StickerTool(small_index, ChatModel(backend, cache="off", retry=FAST), seed=1, compact=True)
    outcome = _plan(tool)
    examples = tool.examples().splitlines()
    assert len(examples) == 7 and all(len(e.split()) <= 1 + COMPACT_EXAMPLE_WORDS + 1 for e in examples)
    select = backend.requests[2]
    assert "recommendation:" not in select.messages[-1].text and "You are B" not in select.messages[0].text
    listing = select.messages[-1].text.split("\n0. ")[1].splitlines()
    assert len(listing) == len(outcome.candidates)
    first = outcome.candidates[0].sticker
    # the candidates by their briefs: the label, then the description without the pack's shared phrases
    assert listing[0] == tool.briefs(first) and listing[0].startswith(f"[{first.label.value}] ")
    assert "The sticker shows" not in select.messages[-1].text and "Emoji style" not in select.messages[-1].text
    assert all(len(line.split()) <= 2 + BRIEF_WORDS for line in listing[1:])  # "i." and "[Label]", then the words


def test_an_over_long_query_is_clipped_not_failed():
    from stickerconv.agent4sc.plan import MAX_QUERY_CHARS, DraftedMessage, QueryAnswer

    assert len(QueryAnswer.model_validate({"query": "x" * 2000}).query) == MAX_QUERY_CHARS
    drafted = DraftedMessage.model_validate(
        {"message": "hi there", "intention": "enhancing empathy", "query": "y" * 900}
    )
    assert drafted.draft == (Intent.EMPATHY, "y" * MAX_QUERY_CHARS)
