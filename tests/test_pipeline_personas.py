"""pipelines.personas without the CLI: self-instruct generation (scripted, and through an OpenAI-compatible
server with the options' own LLM config) and the label check."""

import json
import random

from stickerconv.agent4sc.personas import load_personas
from stickerconv.llm import LLMConfig, LLMFactory
from stickerconv.pipelines.personas import PersonaOptions, check_personas, generate_personas
from stickerconv.schema import EMOTION_LABELS

from helpers.fake_openai_server import FakeOpenAIServer
from helpers.llm_fakes import ScriptedBackend
from helpers.paths import fixture_file


def _draft(i: int) -> str:
    rng = random.Random(i)
    situation = " ".join(f"w{rng.randrange(10**6)}" for _ in range(30))
    persona = f"You are person number {i}, kind and calm."
    return json.dumps({"emotion": EMOTION_LABELS[i % 7], "persona": persona, "situation": situation})


def _factory(tmp_path, backend):
    factory = LLMFactory(LLMConfig(store=tmp_path / "llm.sqlite"))
    factory.register_backend("local", backend)
    return factory


def test_generate_personas_writes_resumes_and_reports(tmp_path):
    out = tmp_path / "people" / "personas.jsonl"
    backend = ScriptedBackend(default=lambda r: _draft(int(r.settings.seed)))
    result = generate_personas(PersonaOptions(3, out), llm_factory=_factory(tmp_path, backend))
    assert result.complete and [p.id for p in load_personas(out)] == ["gen-000001", "gen-000002", "gen-000003"]
    assert len(result.candidates.read_text().splitlines()) == 3
    summary = result.to_dict()
    assert (summary["accepted"], summary["new"], summary["target"]) == (3, 3, 3) and sum(
        summary["emotions"].values()
    ) == 3

    again = generate_personas(PersonaOptions(4, out), llm_factory=_factory(tmp_path, backend))
    assert (again.report.accepted, again.report.new) == (4, 1) and len(load_personas(out)) == 4


def test_generate_personas_stops_short_without_raising(tmp_path):
    out = tmp_path / "personas.jsonl"
    backend = ScriptedBackend(default=_draft(7))  # the same situation every time: all but one are duplicates
    result = generate_personas(PersonaOptions(2, out, seed=1), llm_factory=_factory(tmp_path, backend))
    assert not result.complete and result.report.accepted == 1 and result.report.rejected_similar > 0


def test_generate_personas_resolves_its_llm_config_with_the_cache_beside_the_profiles(tmp_path, monkeypatch):
    counter = iter(range(10**6))
    with FakeOpenAIServer(reply=lambda body: _draft(next(counter))) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "test")
        options = PersonaOptions(2, tmp_path / "personas.jsonl", llm="openai:fake-model")
        result = generate_personas(options)
    assert result.complete and options.store_path == tmp_path / "personas.llm.sqlite"
    assert options.store_path.is_file() and len(load_personas(tmp_path / "personas.jsonl")) == 2


def test_check_personas_maps_emotions_and_lists_unknown_ones(tmp_path):
    check = check_personas(fixture_file("stickerconv", "profiles", "train_profile_excerpt.jsonl"))
    assert check.profiles == 306 and check.unknown == []
    assert sum(e.count for e in check.emotions) == 306
    labels = {e.raw: e.label for e in check.emotions}
    assert (labels["Joy"], labels["Love"], labels["Confusion"], labels["Fear"]) == (
        "Happiness",
        "Happiness",
        "Surprise",
        "Fear",
    )
    assert check.emotions[0].raw == "Sadness" and check.emotions[0].count == 73  # most frequent first
    bad = tmp_path / "bad.jsonl"
    lines = [
        '{"emotion": "Boredom", "persona": "p", "situation": "s"}',
        '{"emotion": "Joy", "persona": "q", "situation": "t"}',
    ]
    bad.write_text("\n".join(lines) + "\n")
    check = check_personas(bad)
    assert check.unknown == ["Boredom"] and check.to_dict()["emotions"][1] == {
        "raw": "Joy",
        "count": 1,
        "label": "Happiness",
    }
