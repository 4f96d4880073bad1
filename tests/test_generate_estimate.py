"""``generate --estimate``: a few sessions simulated in a temporary folder, scaled to the persona file, with
calls, cached and uncached prompt tokens and cost; the run folder is left untouched."""

import json

import pytest
from typer.testing import CliRunner

from stickerconv.cli import app
from stickerconv.llm import Price
from stickerconv.llm.store import LEDGER_SUMS
from stickerconv.llm.types import Usage
from stickerconv.pipelines import PipelineError
from stickerconv.pipelines.generation import GenerationOptions, estimate
from stickerconv.schema import Persona

from helpers.agent4sc import llm_factory, scripted_world
from helpers.fake_openai_server import FakeOpenAIServer, dialogue_reply

PRICE = Price(input_per_mtok=2.0, output_per_mtok=8.0, cached_input_per_mtok=0.5)


@pytest.fixture
def personas(tmp_path):
    people = [
        Persona(emotion="Sadness", persona=f"You are student {i}.", situation=f"You failed {i}.") for i in range(6)
    ]
    path = tmp_path / "personas.jsonl"
    path.write_text("".join(p.model_dump_json() + "\n" for p in people))
    return path


def test_estimate_scales_the_sample_to_the_persona_file(tmp_path, personas, small_index):
    out = tmp_path / "run"
    options = GenerationOptions(personas, small_index.library.root, out, max_turns=3)
    expected = estimate(options, personas=2, llm_factory=llm_factory(tmp_path / "llm", scripted_world()))
    assert (expected.sessions, expected.sampled, expected.sample_kept) == (6, 2, 2)
    per, total = expected.per_session, expected.total
    assert per["calls"] > 0 and all(total[name] == round(per[name] * 6) for name in LEDGER_SUMS)
    assert expected.models == ["scripted:scripted"]
    assert expected.unpriced == expected.models and total["cost_usd"] is None  # no price for a scripted model
    assert not out.exists()
    limited = GenerationOptions(personas, small_index.library.root, out, max_turns=3, limit=4)
    assert estimate(limited, personas=1, llm_factory=llm_factory(tmp_path / "l", scripted_world())).sessions == 4
    with pytest.raises(PipelineError, match="at least one session"):
        estimate(options, personas=0)


def test_generate_estimate_against_a_server_with_a_prefix_cache(tmp_path, personas, small_index, monkeypatch):
    out = tmp_path / "run"
    config = tmp_path / "llm.toml"
    with FakeOpenAIServer(reply=dialogue_reply, prefix_cache=True) as server:
        config.write_text(
            f'base_url = "{server.base_url}"\n[prices."fake-model"]\ninput_per_mtok = 2.0\noutput_per_mtok = 8.0\n'
            "cached_input_per_mtok = 0.5\n"
        )
        monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
        args = ["generate", "--personas", str(personas), "--stickers", str(small_index.library.root)]
        args += ["--out", str(out), "--llm", "openai:fake-model", "--config", str(config), "--max-turns", "3"]
        args += ["--estimate", "--estimate-personas", "2"]
        result = CliRunner().invoke(app, [*args, "--json"])
        assert result.exit_code == 0, result.output
        expected = json.loads(result.output)
        text = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert text.exit_code == 0, text.output
    assert "estimate for 6 session(s), from 2 simulated" in text.output and "whole run:" in text.output
    assert (expected["sessions"], expected["sampled"], expected["models"]) == (6, 2, ["openai:fake-model"])
    per, total = expected["per_session"], expected["total"]
    assert 0 < per["cached_prompt_tokens"] < per["prompt_tokens"] and total["calls"] == round(per["calls"] * 6)
    usage = Usage(
        prompt_tokens=total["prompt_tokens"],
        cached_prompt_tokens=total["cached_prompt_tokens"],
        completion_tokens=total["completion_tokens"],
    )
    assert total["cost_usd"] == pytest.approx(PRICE.cost(usage), rel=1e-3)  # the cached price, not the input's
    assert total["cost_usd"] < Price(input_per_mtok=2.0, output_per_mtok=8.0).cost(usage)
    assert not out.exists()  # nothing written into the run folder
