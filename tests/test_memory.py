import asyncio
import json

import pytest

from stickerconv.agent4sc.memory import MEMORY_SYSTEM, MemoryConfig, MemoryLog, MemoryStream, remember_turn
from stickerconv.llm import ChatModel

from helpers.embedding import HashEmbedder
from helpers.llm_fakes import ScriptedBackend


def _memory_llm(score=5, scores=None):
    def reply(request):
        title = request.json_schema["title"]
        if title == "_Scores":
            n = request.messages[-1].text.count("\n")  # one line per memory, then the instruction
            return json.dumps({"scores": scores if scores is not None else [score] * n})
        if title == "_Questions":
            return json.dumps({"questions": ["What worries B?"]})
        return json.dumps({"insights": ["B is anxious about exams", "A is supportive"]})

    return ChatModel(ScriptedBackend(default=reply))


def _dialogue(stream: MemoryStream, turns: int = 6) -> list[int]:
    fired = []

    async def run():
        for t in range(1, turns + 1):
            await stream.add([f"B said: turn {t} exam worries", f"A reply: turn {t} kind words"])
            if stream.should_reflect:
                await stream.reflect()
                fired.append(t)

    asyncio.run(run())
    return fired


def test_reflection_fires_within_a_six_turn_dialogue_by_default():
    stream = MemoryStream("B", _memory_llm(score=5), HashEmbedder())
    fired = _dialogue(stream)
    assert fired == [4]  # 2 memories x 0.5 per turn: 4.0 > 3.0 after turn 4
    reflections = [r for r in stream.records if r.kind == "reflection"]
    assert [r.text for r in reflections] == ["B is anxious about exams", "A is supportive"]
    assert stream.reflections == 1 and stream.accumulated == pytest.approx(2 * 2 * 0.5)


def test_original_parameters_never_reflect_in_six_turns():
    stream = MemoryStream("B", _memory_llm(score=10), HashEmbedder(), MemoryConfig.original())
    assert _dialogue(stream) == []
    assert stream.accumulated == pytest.approx(12 * 10 * 0.015)  # 1.8 < 2.0 even at maximal importance


def test_importance_scores_are_clamped_and_aligned():
    stream = MemoryStream("B", _memory_llm(scores=[42, -3]), HashEmbedder())
    records = asyncio.run(stream.add(["one", "two", "three"]))
    assert [r.importance for r in records] == pytest.approx([1.0, 0.1, 0.5])  # 10, 1, and 5 for the missing one


def test_retrieval_ranks_by_relevance_then_recency():
    stream = MemoryStream("B", _memory_llm(), HashEmbedder(), MemoryConfig(k=2))
    asyncio.run(stream.add(["cats are great", "the exam was hard", "cats are great"]))
    query = HashEmbedder().embed(["cats are great"])[0]
    first, second = stream.retrieve(query)
    assert first.text == second.text == "cats are great" and first.created == 3  # newer first on a tie
    assert all(r.last_access == stream.clock for r in (first, second))
    assert MemoryStream("x", _memory_llm(), HashEmbedder()).retrieve(query) == []


def test_original_pattern_rates_each_memory_in_its_own_call():
    model = _memory_llm(score=4)
    stream = MemoryStream("B", model, HashEmbedder(), MemoryConfig.original())
    asyncio.run(stream.add(["one", "two", "three"]))
    assert len(model.backend.requests) == 3
    lean = MemoryStream("B", _memory_llm(score=4), HashEmbedder())
    asyncio.run(lean.add(["one", "two", "three"]))
    assert len(lean.model.backend.requests) == 1


def test_a_turn_is_rated_once_for_both_agents():
    model = _memory_llm(scores=[2, 9, 7])
    user_mem, system_mem = MemoryStream("B", model, HashEmbedder()), MemoryStream("A", model, HashEmbedder())
    entries = [
        (user_mem, ["B said: hi", "A said: hello", "B use a sticker"]),
        (system_mem, ["A said: hello", "B said: hi"]),
    ]
    asyncio.run(remember_turn(entries))
    (request,) = model.backend.requests  # one call for the three distinct texts
    assert "memories of B and A" in request.messages[0].text and "Give exactly 3 scores" in request.messages[-1].text
    assert [r.importance for r in user_mem.records] == pytest.approx([0.2, 0.9, 0.7])
    assert [(r.text, r.importance) for r in system_mem.records] == [("A said: hello", 0.9), ("B said: hi", 0.2)]


def test_streams_with_their_own_models_or_the_original_pattern_rate_separately():
    a, b = _memory_llm(), _memory_llm()
    asyncio.run(
        remember_turn([(MemoryStream("B", a, HashEmbedder()), ["x"]), (MemoryStream("A", b, HashEmbedder()), ["x"])])
    )
    assert len(a.backend.requests) == len(b.backend.requests) == 1
    shared = _memory_llm()
    originals = [MemoryStream(n, shared, HashEmbedder(), MemoryConfig.original()) for n in "BA"]
    asyncio.run(remember_turn([(originals[0], ["x", "y"]), (originals[1], ["x"])]))
    assert len(shared.backend.requests) == 3


def test_a_rater_that_scores_everything_low_still_lets_reflection_fire():
    stream = MemoryStream("B", _memory_llm(score=1), HashEmbedder())
    assert _dialogue(stream) == [4]  # 8 memories by turn 4; their importance (0.8) alone would never reach 3.0
    assert stream.since_reflection == 4 and stream.accumulated == pytest.approx(0.4)
    assert _dialogue(MemoryStream("B", _memory_llm(score=1), HashEmbedder(), MemoryConfig(reflect_every=None))) == []


def test_a_shared_log_lists_each_memory_once_and_requests_name_them_by_number():
    model = _memory_llm(scores=[3, 8])
    log = MemoryLog()
    user_mem, system_mem = (MemoryStream(n, model, HashEmbedder(), log=log) for n in "BA")
    asyncio.run(
        remember_turn([(user_mem, ["B said: hi", "A said: hello"]), (system_mem, ["A said: hello", "B said: hi"])])
    )
    asyncio.run(user_mem.reflect())
    rating, questions, insights = model.backend.requests
    assert rating.messages[0].text == questions.messages[0].text == insights.messages[0].text == MEMORY_SYSTEM
    assert rating.messages[-1].text.startswith("Memories:\n1. B said: hi\n2. A said: hello\n\n")
    assert "Rate the likely poignancy of memories 1, 2 for B and A" in rating.messages[-1].text
    # each request continues the same list: a prefix cache computes only what follows it
    listed = "Memories:\n1. B said: hi\n2. A said: hello\n\n"
    assert (
        questions.messages[-1].text.startswith(listed)
        and "For B: given only memories 1, 2," in questions.messages[-1].text
    )
    assert (
        insights.messages[-1].text.startswith(listed) and "Statements about B: memories" in insights.messages[-1].text
    )
    assert log.texts == ["B said: hi", "A said: hello", "B is anxious about exams", "A is supportive"]
    assert [r.importance for r in system_mem.records] == pytest.approx([0.8, 0.3])


def test_a_log_past_its_size_drops_its_oldest_half_and_quotes_what_left_it():
    log = MemoryLog(max_chars=60)
    log.add([f"memory number {i}" for i in range(1, 7)])  # 21 characters each with its number: 3 fit
    assert log.start > 0 and sum(len(t) + 6 for t in log.texts[log.start :]) <= 60
    prompt = log.prompt("Rate them.")[-1].text
    assert "1. memory number 1" not in prompt and f"{len(log.texts)}. memory number 6" in prompt
    named = log.name(["memory number 1", "memory number 6"])
    assert named == 'memories 6 and "memory number 1"'
    wide = MemoryLog()
    wide.add([f"m{i}" for i in range(1, 9)])
    assert wide.name(["m7", "m1", "m2", "m3", "m5", "m6"]) == "memories 1-3, 5-7"  # runs of three or more
    assert wide.name(["m1", "m2", "m4"]) == "memories 1, 2, 4"
    start = log.start
    log.add(["memory number 6"])  # stored again: same number, nothing moves
    assert log.start == start and len(log.texts) == 6
