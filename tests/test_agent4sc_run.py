import asyncio
import hashlib
import json
from collections import Counter
from dataclasses import asdict

import pytest

from stickerconv.agent4sc.agent import clean_utterance
from stickerconv.agent4sc.manager import ManagerConfig
from stickerconv.agent4sc.pattern import CallPattern
from stickerconv.agent4sc.runner import CONVERSATIONS, REJECTED, SUMMARY, run_generation
from stickerconv.llm import LLMConfig, LLMFactory
from stickerconv.llm.policy import RetryPolicy
from stickerconv.llm.types import RetryBudgetExhausted
from stickerconv.schema import Conversation, Persona

from llm_fakes import ScriptedBackend


def _utterance(request):
    """A pure function of the prompt, so runs are reproducible in any call order."""
    digest = hashlib.sha256(request.key().encode()).hexdigest()[:8]
    return f"B: message {digest} about the exam"  # the prefix must be stripped


def scripted_world(select_idx=0, inconsistent=False, closure="CONT", utterance=_utterance):
    def reply(request):
        schema = (request.json_schema or {}).get("title")
        if schema is None:
            return utterance(request)
        if schema == "DraftedMessage":
            query = "emotion: Sadness, emotion describe: The sticker conveys sadness."
            return json.dumps({"message": utterance(request), "intention": "Emotional Expression", "query": query})
        n = request.messages[-1].text.count("\n")
        return json.dumps(
            {
                "_Scores": {"scores": [6] * n},
                "_Questions": {"questions": ["What happened?"]},
                "_Insights": {"insights": ["B feels let down"]},
                "IntentAnswer": {"intention": "Emotional Expression"},
                "QueryAnswer": {"query": "emotion: Sadness, emotion describe: The sticker conveys sadness."},
                "SelectAnswer": {"idx": select_idx},
                "Review": {"inconsistent": inconsistent, "reason": "checked"},
                "Closure": {"decision": closure},
            }[schema]
        )

    return ScriptedBackend(default=reply, model="scripted")


def _factory(tmp_path, backend):
    factory = LLMFactory(LLMConfig(store=tmp_path / "llm.sqlite"))
    factory.register_backend("local", backend)
    return factory


PERSONAS = [
    Persona(emotion="Sadness", persona=f"You are student {i}.", situation=f"You failed exam {i}.") for i in range(4)
]


def test_clean_utterance():
    assert clean_utterance("B: Hey! I failed again.\nSecond line") == "I failed again."
    assert clean_utterance('  "A: That sounds hard."  ') == "That sounds hard."


def test_generation_writes_valid_sessions_with_recorded_decisions(tmp_path, small_index):
    out = tmp_path / "run"
    report = asyncio.run(
        run_generation(PERSONAS[:2], small_index, _factory(tmp_path, scripted_world()), out, concurrency=2)
    )
    assert (report.kept, report.rejected) == (2, 0)
    lines = (out / CONVERSATIONS).read_text().splitlines()
    meta = json.loads(lines[0])["meta"]
    assert meta["persona_label"] == "Sadness" and meta["prompts"].startswith("sha256:")
    assert meta["call_pattern"] == asdict(CallPattern())
    for line in lines:
        conv = Conversation.model_validate_json(line)
        assert len(conv.conversation) in range(1, 7)
        assert all(t.user_message and t.system_message for t in conv.conversation)
        assert all("B:" not in t.user_message for t in conv.conversation)
        assert conv.stickers and conv.meta["persona_id"] in {"p000000", "p000001"}
        plans = conv.meta["plans"]
        assert plans and all(p["intent"] == "Emotional Expression" and len(p["candidates"]) == 10 for p in plans)
        assert any(d["event"] == "closure" for d in conv.meta["decisions"])
        assert any(d["event"] == "reflection" for d in conv.meta["decisions"])  # fires within 6 turns
    summary = json.loads((out / SUMMARY).read_text())
    assert summary["kept"] == 2 and {row["role"] for row in summary["llm"]} >= {"user_agent", "manager", "memory"}


def test_frequency_rules_hold_in_generated_sessions(tmp_path, small_index):
    out = tmp_path / "run"
    asyncio.run(run_generation(PERSONAS[:1], small_index, _factory(tmp_path, scripted_world()), out))
    conv = Conversation.model_validate_json((out / CONVERSATIONS).read_text().splitlines()[0])
    turns = conv.conversation
    for prev, cur in zip(turns, turns[1:], strict=False):
        if prev.user_sticker or prev.system_sticker:
            assert cur.user_sticker is None
        if prev.system_sticker:
            assert cur.system_sticker is None


def test_inconsistent_stickers_are_dropped_and_sessions_rejected(tmp_path, small_index):
    out = tmp_path / "run"
    report = asyncio.run(
        run_generation(
            PERSONAS[:1],
            small_index,
            _factory(tmp_path, scripted_world(inconsistent=True)),
            out,
            manager_config=ManagerConfig(review_needs_polarity_conflict=False),  # the judge alone decides
        )
    )
    assert (report.kept, report.rejected) == (0, 1)
    record = json.loads((out / REJECTED).read_text())
    assert record["meta"]["reject_reason"] == "no sticker"
    assert any(d["event"] == "sticker_dropped" for d in record["meta"]["decisions"])


def test_closure_ends_the_dialogue_at_turn_four(tmp_path, small_index):
    out = tmp_path / "run"
    asyncio.run(run_generation(PERSONAS[:1], small_index, _factory(tmp_path, scripted_world(closure="FINI")), out))
    conv = Conversation.model_validate_json((out / CONVERSATIONS).read_text())
    assert len(conv.conversation) == 4 and conv.meta["end_reason"] == "closure"


def test_repetition_regenerates_then_ends(tmp_path, small_index):
    backend = scripted_world(utterance=lambda request: "I failed.")
    out = tmp_path / "run"
    report = asyncio.run(run_generation(PERSONAS[:1], small_index, _factory(tmp_path, backend), out))
    record = json.loads(((out / CONVERSATIONS) if report.kept else (out / REJECTED)).read_text())
    assert record["meta"]["end_reason"] == "repetition"
    assert sum(d["event"] == "regenerate" for d in record["meta"]["decisions"]) == 3


def test_rerun_resumes_without_duplicates(tmp_path, small_index):
    out = tmp_path / "run"
    factory = _factory(tmp_path, scripted_world())
    asyncio.run(run_generation(PERSONAS, small_index, factory, out, limit=2))
    with (out / CONVERSATIONS).open("a") as fh:
        fh.write('{"conversation": [{"tu')  # a crash mid-write
    report = asyncio.run(run_generation(PERSONAS, small_index, factory, out))
    assert report.skipped_done == 2 and report.kept == 2
    ids = [json.loads(line)["meta"]["persona_id"] for line in (out / CONVERSATIONS).read_text().splitlines()]
    assert sorted(ids) == ["p000000", "p000001", "p000002", "p000003"]


def _sessions(out):
    lines = (out / CONVERSATIONS).read_text().splitlines()
    return sorted(lines, key=lambda line: json.loads(line)["meta"]["persona_id"])


def test_resumed_run_equals_an_uninterrupted_one(tmp_path, small_index):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    asyncio.run(run_generation(PERSONAS, small_index, _factory(tmp_path / "a", scripted_world()), whole, concurrency=3))
    factory = _factory(tmp_path / "b", scripted_world())
    asyncio.run(run_generation(PERSONAS, small_index, factory, parts, limit=1))
    asyncio.run(run_generation(PERSONAS, small_index, factory, parts, concurrency=2))
    assert _sessions(whole) == _sessions(parts) and len(_sessions(whole)) == 4


def test_long_history_folds_into_a_summary_the_agents_see(tmp_path, small_index):
    backend = scripted_world()
    out = tmp_path / "run"
    config = ManagerConfig(summary_token_limit=30)
    asyncio.run(run_generation(PERSONAS[:1], small_index, _factory(tmp_path, backend), out, manager_config=config))
    conv = Conversation.model_validate_json((out / CONVERSATIONS).read_text())
    folds = [d for d in conv.meta["decisions"] if d["event"] == "summary_fold"]
    assert folds and all(d["summary"] for d in folds)
    speak_prompts = [r.messages[-1].text for r in backend.requests if r.json_schema is None]
    assert any("Summary of the earlier conversation: " in p for p in speak_prompts)
    assert any("Progressively summarise" in p for p in speak_prompts)  # the manager's folding call


def _titles(backend):
    return Counter((r.json_schema or {}).get("title", "utterance") for r in backend.requests)


def test_lean_pattern_keeps_every_step_in_fewer_calls_than_the_original(tmp_path, small_index):
    lean_backend, original_backend = scripted_world(), scripted_world()
    asyncio.run(run_generation(PERSONAS[:2], small_index, _factory(tmp_path / "l", lean_backend), tmp_path / "lean"))
    asyncio.run(
        run_generation(
            PERSONAS[:2],
            small_index,
            _factory(tmp_path / "o", original_backend),
            tmp_path / "orig",
            call_pattern=CallPattern.original(),
        )
    )
    lean, original = _titles(lean_backend), _titles(original_backend)
    assert original["IntentAnswer"] == original["QueryAnswer"] > 0 and original["DraftedMessage"] == 0
    assert lean["DraftedMessage"] > 0 and lean["IntentAnswer"] == lean["QueryAnswer"] == 0
    assert lean["SelectAnswer"] > 0 and lean["Review"] > 0 and lean["_Scores"] > 0  # every step still runs
    assert original["_Scores"] > 2 * lean["_Scores"]  # one call per memory against one per turn
    assert sum(lean.values()) < 0.75 * sum(original.values())
    for out in (tmp_path / "lean", tmp_path / "orig"):
        for line in (out / CONVERSATIONS).read_text().splitlines():
            conv = Conversation.model_validate_json(line)
            assert conv.stickers and all(p["query"] for p in conv.meta["plans"] if p["selected"])


def test_an_unparsable_drafted_message_falls_back_to_a_plain_utterance(tmp_path, small_index):
    backend = scripted_world()
    world = backend.default

    def reply(request):
        if (request.json_schema or {}).get("title") == "DraftedMessage":
            return "Sure! Here is my message without any JSON."
        return world(request)

    backend.default = reply
    out = tmp_path / "run"
    factory = LLMFactory(LLMConfig(store=tmp_path / "llm.sqlite", retry=RetryPolicy(max_attempts=2, base_delay=0)))
    factory.register_backend("local", backend)
    report = asyncio.run(run_generation(PERSONAS[:1], small_index, factory, out))
    assert report.kept == 1
    titles = _titles(backend)
    assert titles["DraftedMessage"] > 0 and titles["IntentAnswer"] > 0 and titles["utterance"] > 0


def test_lean_pattern_skips_memory_work_after_the_last_turn(tmp_path, small_index):
    lean, original = scripted_world(closure="FINI"), scripted_world(closure="FINI")
    asyncio.run(run_generation(PERSONAS[:1], small_index, _factory(tmp_path / "l", lean), tmp_path / "lean"))
    pattern = CallPattern.original()
    asyncio.run(
        run_generation(
            PERSONAS[:1], small_index, _factory(tmp_path / "o", original), tmp_path / "o", call_pattern=pattern
        )
    )
    assert _titles(lean)["_Scores"] == 3  # one rating per turn for turns 1-3; turn 4 ended the dialogue
    assert _titles(original)["_Scores"] >= 4 * 4  # two memories per agent per turn, each rated, turn 4 included


def _fast_factory(tmp_path, backend):
    factory = LLMFactory(LLMConfig(store=tmp_path / "llm.sqlite", retry=RetryPolicy(max_attempts=2, base_delay=0)))
    factory.register_backend("local", backend)
    return factory


def _garbage_for(title):
    backend = scripted_world()
    world = backend.default
    backend.default = lambda r: "no json here" if (r.json_schema or {}).get("title") == title else world(r)
    return backend


def test_a_reflection_the_model_cannot_answer_is_skipped_not_fatal(tmp_path, small_index):
    out = tmp_path / "run"
    report = asyncio.run(
        run_generation(PERSONAS[:1], small_index, _fast_factory(tmp_path, _garbage_for("_Questions")), out)
    )
    assert report.kept == 1
    events = [d["event"] for d in json.loads((out / CONVERSATIONS).read_text())["meta"]["decisions"]]
    assert "reflection_failed" in events and "reflection" not in events


def test_a_session_the_model_cannot_finish_is_rejected_and_the_run_goes_on(tmp_path, small_index):
    out = tmp_path / "run"
    factory = _fast_factory(tmp_path, _garbage_for("Closure"))
    report = asyncio.run(run_generation(PERSONAS[:2], small_index, factory, out))
    assert (report.kept, report.rejected) == (0, 2)
    reasons = [json.loads(x)["meta"]["reject_reason"] for x in (out / REJECTED).read_text().splitlines()]
    assert all(r.startswith("unusable model output: ") and "Closure expected" in r for r in reasons)


def test_a_failing_server_stops_the_run_for_a_later_resume(tmp_path, small_index):
    from stickerconv.llm.types import TransientError

    backend = scripted_world()
    backend.default = lambda r: (_ for _ in ()).throw(TransientError("503 from the server"))
    with pytest.raises(RetryBudgetExhausted):
        asyncio.run(run_generation(PERSONAS[:1], small_index, _fast_factory(tmp_path, backend), tmp_path / "run"))
    assert not (tmp_path / "run" / REJECTED).exists()  # nothing recorded as done: a rerun will simulate it
