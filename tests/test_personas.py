import asyncio
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
from rouge_score import rouge_scorer

from stickerconv.agent4sc.personas import PersonaGenerator, RougeLIndex, load_personas, seed_personas
from stickerconv.jsonl import RecordError
from stickerconv.llm import ChatModel
from stickerconv.llm.store import LLMStore
from stickerconv.schema import EMOTION_LABELS

from helpers.llm_fakes import ScriptedBackend
from helpers.paths import fixture_file

WORDS = "you are a teacher who lost the final exam and your dog ran away from the old house by the sea".split()


def _draft(i: int, situation: str | None = None) -> str:
    rng = random.Random(i)
    text = situation or " ".join(rng.choice(WORDS) for _ in range(30)) + f" case {i} " + " ".join(
        f"w{rng.randrange(10**6)}" for _ in range(25)
    )
    return json.dumps(
        {"emotion": EMOTION_LABELS[i % 7], "persona": f"You are person number {i}, kind and calm.", "situation": text}
    )


def test_published_profiles_load_in_both_formats(tmp_path):
    jsonl = fixture_file("stickerconv", "profiles", "profile_sample.jsonl")
    personas = load_personas(jsonl)
    assert [p.emotion for p in personas] == ["Sadness", "Joy", "Sadness", "Fear", "Anger"]
    array = tmp_path / "profiles.json"
    array.write_text(json.dumps([p.model_dump(exclude_none=True) for p in personas]))
    assert load_personas(array) == personas
    array.write_text(json.dumps([{"emotion": "Joy", "persona": "x"}]))
    with pytest.raises(RecordError, match="record 1"):
        load_personas(array)


def test_shipped_seeds_cover_every_label():
    seeds = seed_personas()
    assert len(seeds) >= 7 and {p.label.value for p in seeds} == set(EMOTION_LABELS)


def test_rouge_l_index_matches_rouge_score():
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    rng = random.Random(0)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randrange(5, 40))) for _ in range(40)]
    index = RougeLIndex()
    for text in texts[:30]:
        index.add(text)
    for query in texts[30:]:
        expected = max(scorer.score(t, query)["rougeL"].fmeasure for t in texts[:30])
        assert index.max_f1(query) == pytest.approx(expected, abs=1e-12)


def test_generation_dedupes_logs_and_resumes(tmp_path):
    out = tmp_path / "personas.jsonl"
    seeds = seed_personas()
    duplicate = _draft(99, seeds[0].situation)  # a copy of a seed's situation must be rejected
    backend = ScriptedBackend(
        replies=[_draft(1), duplicate, _draft(2), "not json", _draft(3)],
        default=lambda r: _draft(int(r.settings.seed) % 10_000 + 10),
    )
    model = ChatModel(backend, store=LLMStore(tmp_path / "llm.sqlite"))
    report = asyncio.run(PersonaGenerator(model, seeds, threshold=0.7).generate(3, out))
    assert (report.accepted, report.new, report.rejected_similar) == (3, 3, 1)
    generated = load_personas(out)
    assert [p.id for p in generated] == ["gen-000001", "gen-000002", "gen-000003"]
    log = [json.loads(line) for line in out.with_suffix(".candidates.jsonl").read_text().splitlines()]
    assert [e["accepted"] for e in log] == [True, False, True, True] and log[1]["max_rouge_l"] == 1.0
    prompt = backend.requests[0].messages[-1].text
    assert prompt.count('"situation"') == 5 and prompt.rstrip().endswith("6.")  # 5 seed examples, then "6. "

    with out.open("a") as fh:
        fh.write('{"emotion": "Joy", "pers')  # a crash mid-write
    report = asyncio.run(PersonaGenerator(model, seeds).generate(5, out))
    assert (report.accepted, report.new) == (5, 2)
    assert [p.id for p in load_personas(out)] == [f"gen-00000{i}" for i in range(1, 6)]
    second_prompt = backend.requests[-1].messages[-1].text
    assert "person number" in second_prompt  # machine-written examples join the prompt


def test_cli_generate_and_check(tmp_path):
    script = Path(sys.executable).parent / "stickerconv"
    check = subprocess.run(
        [str(script), "personas", "check", str(fixture_file("stickerconv", "profiles", "train_profile_excerpt.jsonl"))],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0, check.stderr
    assert "Confusion" in check.stdout and "306 profiles" in check.stdout
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"emotion": "Boredom", "persona": "p", "situation": "s"}\n')
    result = subprocess.run([str(script), "personas", "check", str(bad)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Boredom" in result.stderr


def test_cli_generate_with_the_embedded_model(tmp_path):
    script = Path(sys.executable).parent / "stickerconv"
    out = tmp_path / "gen" / "personas.jsonl"
    args = [str(script), "personas", "generate", "--n-personas", "1", "--out", str(out)]
    result = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    (persona,) = load_personas(out)
    assert persona.label.value in EMOTION_LABELS and persona.id == "gen-000001"
    assert (tmp_path / "gen" / "personas.llm.sqlite").is_file()  # the cache that makes a rerun free
    again = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "(0 new" in again.stdout
