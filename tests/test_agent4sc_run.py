import asyncio
import json
import os
import subprocess
import sys
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import pytest

from stickerconv.agent4sc.manager import ManagerConfig
from stickerconv.agent4sc.pattern import CallPattern
from stickerconv.agent4sc.runner import run_generation
from stickerconv.llm import LLMConfig, LLMFactory
from stickerconv.llm.policy import RetryPolicy
from stickerconv.llm.types import RetryBudgetExhausted
from stickerconv.runfiles import CONVERSATIONS, REJECTED, SUMMARY
from stickerconv.schema import Conversation
from stickerconv.text import clean_utterance, fresh_lines

from helpers.agent4sc import PERSONAS, farewell, llm_factory, scripted_utterance, scripted_world
from helpers.fake_openai_server import FakeOpenAIServer, dialogue_reply


def test_clean_utterance():
    assert clean_utterance("B: Hey! I failed again.\nSecond line") == "I failed again."
    assert clean_utterance('  "A: That sounds hard."  ') == "That sounds hard."
    assert clean_utterance("A: I'm here to listen, I'm there to listen. Tell me what") == "I'm here to listen."
    assert clean_utterance("B: [2/4] I got 3/4 right.") == "I got 3/4 right."  # the prompt's turn counter goes
    assert clean_utterance("2/4 B is my friend.") == "B is my friend."
    assert clean_utterance("3/4 of my friends came.") == "3/4 of my friends came."


def test_fresh_lines_skip_what_the_prompt_showed():
    prompt = "You are B\nInnate traits: You are shy and kind.\nB: I failed my exam again today.\nA: Oh no.\n"
    answer = (
        "B: I failed my exam again today.\n"  # the history copied
        "Innate traits: You are shy and kind.\n"  # the profile block copied
        "A: Oh no.\n"  # a short line that is a whole line of the prompt
        "B: I failed my exam again today. I don't know what to do, I don't know what to do.\n"
        "Oh no, I'm so tired"
    )
    assert fresh_lines(answer, prompt) == ("I don't know what to do.", "Oh no.")


def test_a_copied_first_line_gives_way_to_a_fresh_one_unless_the_papers_rules_apply(tmp_path, small_index):
    """The small model copies its previous message, then writes a new one on the next line."""

    def copy_then_say(request):
        name = request.messages[0].text.splitlines()[0].removeprefix("You are ")
        own = [ln for ln in request.messages[-1].text.splitlines() if ln.startswith(f"{name}: ") and ln[3:].strip()]
        fresh = scripted_utterance(request).removeprefix("B: ")
        return f"{own[-1]}\n{name}: {fresh}" if own else fresh

    default, original = tmp_path / "default", tmp_path / "original"
    backend = scripted_world(utterance=copy_then_say)
    asyncio.run(run_generation(PERSONAS[:1], small_index, llm_factory(tmp_path / "d", backend), default))
    conv = Conversation.model_validate_json((default / CONVERSATIONS).read_text())
    assert len(conv.conversation) == 6 and conv.meta["end_reason"] == "max_turns"
    assert any(d["event"] == "fresh_line" for d in conv.meta["decisions"])
    backend = scripted_world(utterance=copy_then_say)
    rules = ManagerConfig.original()
    factory = llm_factory(tmp_path / "o", backend)
    asyncio.run(run_generation(PERSONAS[:1], small_index, factory, original, manager_config=rules))
    record = json.loads(
        ((original / CONVERSATIONS) if (original / CONVERSATIONS).exists() else original / REJECTED).read_text()
    )
    assert len(record["conversation"]) == 1 and record["meta"]["end_reason"] == "repetition"
    assert record["meta"]["manager_rules"]["fresh_lines"] is False


def test_generation_writes_valid_sessions_with_recorded_decisions(tmp_path, small_index):
    out = tmp_path / "run"
    report = asyncio.run(
        run_generation(PERSONAS[:2], small_index, llm_factory(tmp_path, scripted_world()), out, concurrency=2)
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
    asyncio.run(run_generation(PERSONAS[:1], small_index, llm_factory(tmp_path, scripted_world()), out))
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
            llm_factory(tmp_path, scripted_world(inconsistent=True)),
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
    backend = scripted_world(closure="FINI", utterance=farewell)
    asyncio.run(run_generation(PERSONAS[:1], small_index, llm_factory(tmp_path, backend), out))
    conv = Conversation.model_validate_json((out / CONVERSATIONS).read_text())
    assert len(conv.conversation) == 4 and conv.meta["end_reason"] == "closure"
    summary = json.loads((out / SUMMARY).read_text())
    assert summary["end_reasons"] == {"closure": 1} and summary["turns_per_simulated_session"] == 4


def test_without_a_closure_cue_the_judge_is_not_asked_unless_the_papers_rules_apply(tmp_path, small_index):
    """The 135M judge answers FINI to anything: under the default rules it decides only after a farewell or thanks."""
    default, original = scripted_world(closure="FINI"), scripted_world(closure="FINI")
    asyncio.run(run_generation(PERSONAS[:1], small_index, llm_factory(tmp_path / "d", default), tmp_path / "default"))
    conv = Conversation.model_validate_json((tmp_path / "default" / CONVERSATIONS).read_text())
    assert len(conv.conversation) == 6 and conv.meta["end_reason"] == "max_turns"
    closure = [d for d in conv.meta["decisions"] if d["event"] == "closure"]
    assert closure == [{"event": "closure", "turn": 4, "decision": "CONT", "judged": False}]
    assert _titles(default)["Closure"] == 0
    rules = ManagerConfig.original()
    factory = llm_factory(tmp_path / "o", original)
    asyncio.run(run_generation(PERSONAS[:1], small_index, factory, tmp_path / "orig", manager_config=rules))
    conv = Conversation.model_validate_json((tmp_path / "orig" / CONVERSATIONS).read_text())
    assert len(conv.conversation) == 4 and conv.meta["end_reason"] == "closure"  # as before: turn 4 of 6
    assert _titles(original)["Closure"] == 1


def test_generate_takes_the_papers_rules_and_prints_how_sessions_ended(tmp_path, small_index):
    """The CLI against an OpenAI-compatible fake whose closure judge answers FINI to anything."""
    personas = tmp_path / "personas.jsonl"
    personas.write_text("".join(p.model_dump_json() + "\n" for p in PERSONAS[:2]))
    script = str(Path(sys.executable).parent / "stickerconv")
    ended = {}
    with FakeOpenAIServer(reply=dialogue_reply) as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
        env |= {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "test"}
        for rules in ("default", "original"):
            out = tmp_path / rules
            args = ["generate", "--personas", str(personas), "--stickers", str(small_index.library.root)]
            args += ["--out", str(out), "--llm", "openai:fake-model", "--max-turns", "4", "--manager-rules", rules]
            result = subprocess.run([script, *args], env=env, capture_output=True, text=True, timeout=300)
            assert result.returncode == 0, result.stderr
            ended[rules] = (json.loads((out / SUMMARY).read_text())["end_reasons"], " ".join(result.stdout.split()))
    assert ended["default"][0] == {"max_turns": 2} and "ended by: max_turns 2; 4.0 turns each" in ended["default"][1]
    assert ended["original"][0] == {"closure": 2} and "ended by: closure 2; 2.0 turns each" in ended["original"][1]


def test_end_reasons_count_every_session_of_the_folder(tmp_path, small_index):
    """summary.json's end_reasons cover kept and rejected sessions, those of earlier invocations included."""
    out = tmp_path / "run"
    one_word = scripted_world(utterance=lambda request: "Okay")
    asyncio.run(run_generation(PERSONAS[:1], small_index, llm_factory(tmp_path / "a", one_word), out))
    record = json.loads((out / REJECTED).read_text())
    assert record["meta"]["end_reason"] == "no_utterance" and record["meta"]["reject_reason"].endswith("(no_utterance)")
    asyncio.run(run_generation(PERSONAS[:2], small_index, llm_factory(tmp_path / "b", scripted_world()), out))
    summary = json.loads((out / SUMMARY).read_text())
    assert summary["end_reasons"] == {"max_turns": 1, "no_utterance": 1} and summary["kept"] == 1
    assert summary["turns_per_simulated_session"] == 3.0  # (0 + 6) / 2


def test_repetition_regenerates_then_ends(tmp_path, small_index):
    backend = scripted_world(utterance=lambda request: "I failed.")
    out = tmp_path / "run"
    report = asyncio.run(run_generation(PERSONAS[:1], small_index, llm_factory(tmp_path, backend), out))
    record = json.loads(((out / CONVERSATIONS) if report.kept else (out / REJECTED)).read_text())
    assert record["meta"]["end_reason"] == "repetition"
    assert sum(d["event"] == "regenerate" for d in record["meta"]["decisions"]) == 3


def test_rerun_resumes_without_duplicates(tmp_path, small_index):
    out = tmp_path / "run"
    factory = llm_factory(tmp_path, scripted_world())
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
    asyncio.run(
        run_generation(PERSONAS, small_index, llm_factory(tmp_path / "a", scripted_world()), whole, concurrency=3)
    )
    factory = llm_factory(tmp_path / "b", scripted_world())
    asyncio.run(run_generation(PERSONAS, small_index, factory, parts, limit=1))
    asyncio.run(run_generation(PERSONAS, small_index, factory, parts, concurrency=2))
    assert _sessions(whole) == _sessions(parts) and len(_sessions(whole)) == 4


def test_long_history_folds_into_a_summary_the_agents_see(tmp_path, small_index):
    backend = scripted_world()
    out = tmp_path / "run"
    config = ManagerConfig(summary_token_limit=30)
    asyncio.run(run_generation(PERSONAS[:1], small_index, llm_factory(tmp_path, backend), out, manager_config=config))
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
    asyncio.run(run_generation(PERSONAS[:2], small_index, llm_factory(tmp_path / "l", lean_backend), tmp_path / "lean"))
    asyncio.run(
        run_generation(
            PERSONAS[:2],
            small_index,
            llm_factory(tmp_path / "o", original_backend),
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
    lean, original = (scripted_world(closure="FINI", utterance=farewell) for _ in range(2))
    asyncio.run(run_generation(PERSONAS[:1], small_index, llm_factory(tmp_path / "l", lean), tmp_path / "lean"))
    pattern = CallPattern.original()
    asyncio.run(
        run_generation(
            PERSONAS[:1], small_index, llm_factory(tmp_path / "o", original), tmp_path / "o", call_pattern=pattern
        )
    )
    assert _titles(lean)["_Scores"] == 3  # one rating per turn for turns 1-3; turn 4 ended the dialogue
    # each agent's own words each turn (and each kept sticker), each rated on its own, turn 4 included
    assert _titles(original)["_Scores"] >= 2 * 4


def _fast_factory(tmp_path, backend):
    factory = LLMFactory(LLMConfig(store=tmp_path / "llm.sqlite", retry=RetryPolicy(max_attempts=2, base_delay=0)))
    factory.register_backend("local", backend)
    return factory


def _garbage_for(title):
    backend = scripted_world(utterance=farewell)
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
