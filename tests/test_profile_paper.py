"""The ``paper`` profile restores every original setting on ``generate`` and ``stickers index`` (issue 20), the
default profile keeps ours, outputs record the profile, and a paper run makes the original's calls of §2 in order
(tests/data/agent4sc_paper_call_trace.json, written from the method reference, not recorded from the code)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stickerconv.agent4sc.manager import ManagerConfig
from stickerconv.agent4sc.memory import MemoryConfig
from stickerconv.agent4sc.pattern import CallPattern
from stickerconv.cli import app
from stickerconv.pipelines import PipelineError
from stickerconv.pipelines.generation import GenerationOptions, generate
from stickerconv.pipelines.stickers import IndexOptions, index_library
from stickerconv.runfiles import CONVERSATIONS, SUMMARY
from stickerconv.stickers.index import IndexSettings, StickerIndex

from helpers.agent4sc import PERSONAS, llm_factory, scripted_world

TRACE = Path(__file__).parent / "data" / "agent4sc_paper_call_trace.json"
AGENTS = {"user_agent": "user", "assistant_agent": "system", "manager": "manager"}
STEPS = {None: "utterance", "IntentAnswer": "intent", "QueryAnswer": "query", "SelectAnswer": "select"}
STEPS |= {"Review": "review", "Closure": "closure"}


def _step(role: str, schema: str | None, text: str) -> list[str]:
    """A recorded call as the trace names it: [whose, step]. An importance call belongs to the agent whose
    memory it rates (the memory model is shared; the memory's text opens with the agent's name)."""
    if role == "memory":
        assert schema == "_Scores", schema  # no reflection in this session: only importance ratings
        return [{"B": "user", "A": "system"}[text.removeprefix("Memories:\n1. ")[0]], "memory"]
    if schema is None and "core characteristics" in text:
        return [AGENTS[role], "self-summary"]
    return [AGENTS[role], STEPS[schema]]


@pytest.fixture(scope="module")
def paper_library(small_pack, tmp_path_factory) -> Path:
    """The small pack indexed under the paper profile (its own copy: the shared one keeps our index)."""
    lib = tmp_path_factory.mktemp("paper") / "lib"
    shutil.copytree(small_pack, lib, ignore=shutil.ignore_patterns("index"))
    result = index_library(IndexOptions(lib, profile="paper"))
    assert result.to_dict()["profile"] == "paper"
    return lib


@pytest.fixture
def personas(tmp_path) -> Path:
    path = tmp_path / "personas.jsonl"
    path.write_text(PERSONAS[0].model_dump_json() + "\n")
    return path


def test_stickers_index_profile_sets_the_papers_index_and_records_it(paper_library, small_index):
    paper, ours = IndexOptions(paper_library, profile="paper").settings(), IndexOptions(paper_library).settings()
    assert paper == IndexSettings(template="paper", emotion_weight=0.0)  # the original's text, pure similarity
    assert ours == IndexSettings(template="paper+subject", emotion_weight=0.1)
    assert IndexOptions(paper_library, template="paper+subject", profile="paper").settings().template == (
        "paper+subject"
    )  # an explicit flag wins
    meta = StickerIndex.read_meta(paper_library)
    assert (meta["profile"], meta["template"], meta["emotion_weight"]) == ("paper", "paper", 0.0)
    loaded = StickerIndex.load(paper_library)
    assert (loaded.profile, loaded.template, loaded.emotion_weight) == ("paper", "paper", 0.0)
    default = StickerIndex.read_meta(small_index.library.root)
    assert (default["profile"], default["template"], default["emotion_weight"]) == ("default", "paper+subject", 0.1)


def test_stickers_index_command_takes_the_profile(paper_library):
    result = CliRunner().invoke(app, ["stickers", "index", str(paper_library), "--profile", "paper", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["profile"] == "paper"


def _runner(options: GenerationOptions) -> dict:
    return options.runner_options(lambda done, total: None)


def test_generate_profile_sets_every_original_setting(tmp_path):
    where = (tmp_path / "p.jsonl", tmp_path / "lib", tmp_path / "out")
    paper = _runner(GenerationOptions(*where, profile="paper"))
    manager, memory, pattern = paper["manager_config"], paper["memory_config"], paper["call_pattern"]
    assert not manager.review_needs_polarity_conflict  # the judge alone drops a sticker: no VADER condition
    assert not (manager.closure_needs_cue or manager.fresh_lines)
    assert (manager.summary_max_tokens, manager.summary_token_limit, manager.max_regenerations) == (500, 2000, 3)
    assert memory.recency_decay == 1.0 and (memory.importance_scale, memory.reflection_threshold) == (0.015, 2.0)
    assert memory.reflect_every is None and not memory.batch_importance
    assert pattern == CallPattern(
        fuse_plan=False, batch_importance=False, compact_prompts=False, skip_final_memory=False, own_memories=True
    )
    assert (manager, memory, pattern) == (ManagerConfig.original(), MemoryConfig.original(), CallPattern.original())

    ours = _runner(GenerationOptions(*where))
    assert ours["manager_config"] == ManagerConfig() and ours["manager_config"].review_needs_polarity_conflict
    assert ours["manager_config"].summary_max_tokens == 200 and ours["memory_config"].recency_decay == 0.99
    assert ours["memory_config"] == MemoryConfig() and ours["call_pattern"] == CallPattern()

    lean = _runner(GenerationOptions(*where, profile="paper", call_pattern="lean"))
    assert lean["call_pattern"] == CallPattern() and lean["manager_config"] == ManagerConfig.original()  # flag wins
    alone = _runner(GenerationOptions(*where, call_pattern="original"))  # the pattern alone, as before
    assert alone["call_pattern"] == CallPattern.original() and alone["manager_config"] == ManagerConfig()


def test_generate_paper_refuses_an_index_built_with_our_settings(tmp_path, personas, small_index):
    options = GenerationOptions(personas, small_index.library.root, tmp_path / "run", profile="paper")
    with pytest.raises(PipelineError, match="--profile paper"):
        generate(options, llm_factory=llm_factory(tmp_path, scripted_world()))


def _call(request) -> tuple[str, str]:
    return request.json_schema.get("title") if request.json_schema else None, request.messages[-1].text


def test_generate_paper_reproduces_the_original_call_sequence(tmp_path, personas, paper_library):
    expected = json.loads(TRACE.read_text())
    backend, seen = scripted_world(), []
    factory = llm_factory(tmp_path, backend)
    make = factory.chat_model

    def chat_model(role: str = "default"):
        model = make(role)
        complete = model.complete

        async def recorded(messages, schema=None, **kwargs):
            seen.append((role, getattr(schema, "__name__", None), messages[-1].text))
            return await complete(messages, schema, **kwargs)

        model.complete = recorded
        return model

    factory.chat_model = chat_model
    out = tmp_path / "run"
    result = generate(GenerationOptions(personas, paper_library, out, profile="paper"), llm_factory=factory)
    assert result.report.kept == 1

    steps = [_step(role, schema, text) for role, schema, text in seen if role in AGENTS or role == "memory"]
    assert steps == expected["calls"]
    memories = [text for role, schema, text in seen if role == "memory"]
    assert all("Give exactly 1 scores" in text for text in memories)  # one importance call per memory
    assert sum("use a sticker, sticker's emotion:" in text for text in memories) == 6  # each kept sticker
    turns = expected["memory"]["self_summary_turns"]
    assert sum(step == ["user", "self-summary"] for step in steps) == len(turns)
    session = json.loads((out / CONVERSATIONS).read_text().splitlines()[0])
    assert not any(d["event"] == "reflection" for d in session["meta"]["decisions"])
    assert session["meta"]["profile"] == "paper" and json.loads((out / SUMMARY).read_text())["profile"] == "paper"
    assert (
        session["meta"]["manager_rules"]["summary_max_tokens"] == 500
        and session["meta"]["memory"]["recency_decay"] == 1
    )
