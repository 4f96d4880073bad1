"""pipelines.generation without the CLI: the local executor over the scripted world writes the run folder,
resumes, and the options carry the choices and the LLM overlay both executors share."""

import json

import pytest

from stickerconv.agent4sc.manager import MANAGER_RULES
from stickerconv.agent4sc.pattern import CALL_PATTERNS
from stickerconv.pipelines import PipelineError
from stickerconv.pipelines.generation import GenerationOptions, generate
from stickerconv.runfiles import CONVERSATIONS, SUMMARY

from helpers.agent4sc import PERSONAS, llm_factory, scripted_world


@pytest.fixture
def personas(tmp_path):
    path = tmp_path / "personas.jsonl"
    path.write_text("".join(p.model_dump_json() + "\n" for p in PERSONAS[:3]))
    return path


def test_local_generation_writes_the_run_folder_and_resumes(tmp_path, personas, small_index):
    out = tmp_path / "run"
    options = GenerationOptions(personas, small_index.library.root, out, max_turns=4, limit=2, concurrency=2)
    factory = llm_factory(tmp_path, scripted_world())
    result = generate(options, llm_factory=factory)
    assert result.report.kept + result.report.rejected == 2 and result.report.skipped_done == 0
    sessions = [json.loads(line) for line in (out / CONVERSATIONS).read_text().splitlines()]
    assert len(sessions) == result.report.kept and all(len(s["conversation"]) == 4 for s in sessions)
    assert result.summary == json.loads((out / SUMMARY).read_text()) and result.summary["kept"] == result.report.kept
    assert result.quality == out / "quality" / "quality.md" and (out / "quality" / "quality.json").is_file()
    assert result.to_dict()["conversations"] == str(out / CONVERSATIONS)

    rest = generate(GenerationOptions(personas, small_index.library.root, out, max_turns=4), llm_factory=factory)
    assert rest.report.skipped_done == 2 and rest.report.kept + rest.report.rejected == 1


def test_options_check_choices_from_the_registries(tmp_path):
    where = (tmp_path / "p.jsonl", tmp_path / "lib", tmp_path / "out")
    with pytest.raises(PipelineError, match="--executor 'dask': choose from local, ray"):
        GenerationOptions(*where, executor="dask")
    with pytest.raises(PipelineError, match="--call-pattern 'fast': choose from lean, original"):
        GenerationOptions(*where, call_pattern="fast")
    with pytest.raises(PipelineError, match="--manager-rules 'x': choose from default, original"):
        GenerationOptions(*where, manager_rules="x")
    given = GenerationOptions(*where, call_pattern=CALL_PATTERNS["original"], manager_rules="original")
    runner = given.runner_options(lambda done, total: None)
    assert runner["call_pattern"] == CALL_PATTERNS["original"] and runner["manager_config"] == MANAGER_RULES["original"]


def test_llm_config_keeps_the_cache_in_the_run_folder_and_lifts_the_call_limit(tmp_path):
    where = (tmp_path / "p.jsonl", tmp_path / "lib", tmp_path / "out")
    config = GenerationOptions(*where, concurrency=9, cache="refresh").llm_config()
    assert config.store == tmp_path / "out" / "llm.sqlite" and config.cache == "refresh"
    assert config.limits.concurrency == 9
    capped = tmp_path / "llm.toml"
    capped.write_text('llm = "openai:m"\n[limits]\nconcurrency = 2\n')
    config = GenerationOptions(*where, config=capped, concurrency=9).llm_config()
    assert config.limits.concurrency == 2 and config.llm == "openai:m"  # the file's cap wins over the sessions
    assert config.local_prefix_cache  # the embedded model reuses each agent's prefix in a run ...
    plain = tmp_path / "plain.toml"
    plain.write_text("local_prefix_cache = false\n")
    assert not GenerationOptions(*where, config=plain).llm_config().local_prefix_cache  # ... unless told not to


def test_a_factory_cannot_travel_to_ray(tmp_path, personas, small_index):
    options = GenerationOptions(personas, small_index.library.root, tmp_path / "out", executor="ray")
    with pytest.raises(PipelineError, match="executor='local'"):
        generate(options, llm_factory=llm_factory(tmp_path, scripted_world()))
