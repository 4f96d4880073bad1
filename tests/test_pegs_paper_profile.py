"""`--profile paper` on `pegs train` and `eval predict` (issue 20): every setting the paper's profile changes is
listed here, with ours beside it, and the outputs (checkpoints, results, --json, predictions) carry the profile."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from typer.testing import CliRunner

from stickerconv.cli import app
from stickerconv.pegs.config import SendFit
from stickerconv.pegs.model import STATE_FILE, PegsModel
from stickerconv.pegs.sequence import sample_example
from stickerconv.pipelines.evaluation import PredictOptions, ScoreOptions, predict, score
from stickerconv.pipelines.pegs_training import PegsTrainingOptions, PegsTrainingResult, stage_settings, train_pegs
from stickerconv.responders import build_responder

from helpers.fake_openai_server import FakeOpenAIServer
from helpers.pegs import dialogue_samples, tiny_model

EXAMPLES = 1000  # a stage's examples: the paper profile runs the table's epochs over them

# the §5.4 table as `pegs train --profile paper` takes it: (stage, joint variant) -> settings and epochs; the
# alignment stages train on sticker captions, so generation takes its sticker row (3), not its LAION row (2)
PAPER = {
    ("perception", "gen"): ({"lr": 1e-4, "betas": (0.9, 0.999), "weight_decay": 0.05, "warmup_steps": 2000}, 32, 1, 4),
    ("retrieval", "gen"): ({"lr": 3e-5, "betas": (0.9, 0.95), "weight_decay": 0.05, "warmup_steps": 2000}, 36, 1, 4),
    ("generation", "gen"): ({"lr": 5e-5, "betas": (0.9, 0.999), "weight_decay": 0.05, "warmup_steps": 200}, 28, 1, 4),
    ("joint", "gen"): ({"lr": 1e-4, "betas": (0.9, 0.95), "weight_decay": 0.05, "warmup_steps": 1000}, 6, 1, 4),
    ("joint", "rag"): ({"lr": 3e-6, "betas": (0.9, 0.999), "weight_decay": 1e-4, "warmup_steps": 2000}, 3, 36, 10),
}
# the table's max length, for the joint rows; the alignment rows keep the model's (their 64/77 counted caption
# text, while our caption sequences also hold the [IMG] block, which a cut at 77 would drop)
PAPER_MAX_LENGTH = {("joint", "gen"): 1024, ("joint", "rag"): 768}
COMMON = {"eps": 1e-6, "clip_grad": 1.0, "seed": 42}  # §5.4's common settings: AdamW eps, clipping, seed


def options(**fields) -> PegsTrainingOptions:
    return PegsTrainingOptions(preset="tiny", stickers="pack", out="run", **fields)


@pytest.mark.parametrize(("stage", "variant"), list(PAPER))
def test_the_paper_profile_trains_each_stage_with_its_row_of_the_table(stage, variant):
    optimiser, batch, accum, epochs = PAPER[(stage, variant)]
    cfg = stage_settings(options(profile="paper"), stage, EXAMPLES, variant=variant)
    assert cfg.model_dump(include=set(optimiser) | set(COMMON)) == optimiser | COMMON
    assert (cfg.batch_size, cfg.grad_accum, cfg.max_length) == (batch, accum, PAPER_MAX_LENGTH.get((stage, variant)))
    assert cfg.max_steps == epochs * (EXAMPLES // (batch * accum))  # the table's epochs over the stage's data
    two = stage_settings(options(profile="paper"), stage, EXAMPLES, processes=2, variant=variant)
    assert two.max_steps == epochs * (EXAMPLES // (2 * batch * accum))  # a global batch per step


@pytest.mark.parametrize("stage", ["perception", "retrieval", "generation", "joint"])
def test_the_default_profile_keeps_our_short_runs(stage):
    cfg = stage_settings(options(), stage, EXAMPLES, variant="rag")
    assert options().profile == "default"
    assert (cfg.lr, cfg.betas, cfg.weight_decay, cfg.eps, cfg.clip_grad) == (1e-4, (0.9, 0.999), 0.05, 1e-6, 1.0)
    loop = (cfg.batch_size, cfg.grad_accum, cfg.max_steps, cfg.warmup_steps, cfg.checkpoint_every)
    assert loop == (8, 1, 200, 20, 50) and cfg.max_length is None


def test_a_stages_max_length_caps_the_training_sequences(small_index):
    model = tiny_model()
    cfg = model.config  # max_length 512
    sample = dialogue_samples(small_index.library, 1)[-1]  # the third turn: the longest context
    example = sample_example(sample, small_index.library.root, cfg.style, cfg.system_prompt)
    full = model.collator(train=True)([example]).input_ids.shape[1]
    capped = model.collator(train=True, max_length=full - 5)([example]).input_ids.shape[1]
    assert full > 21 and capped <= full - 5
    assert model.collator(max_length=10 * full).max_length == model.config.max_length  # never above the model's


def test_flags_given_win_under_either_profile():
    given = {"steps": 12, "joint_steps": 7, "batch_size": 2, "grad_accum": 3, "lr": 1e-3, "head_lr": 2e-3}
    for profile in ("default", "paper"):
        cfg = stage_settings(options(profile=profile, **given), "joint", EXAMPLES, variant="rag")
        assert (cfg.max_steps, cfg.batch_size, cfg.grad_accum, cfg.lr, cfg.head_lr) == (7, 2, 3, 1e-3, 2e-3)
    paper = stage_settings(options(profile="paper", steps=12), "retrieval", EXAMPLES)
    assert (paper.max_steps, paper.warmup_steps, paper.betas) == (12, 2000, (0.9, 0.95))  # the rest stays the paper's


def test_a_paper_run_records_its_profile_in_checkpoints_and_results(small_pack, tmp_path):
    run = tmp_path / "run"
    wanted = PegsTrainingOptions(
        preset="tiny", stickers=small_pack, out=run, stages=("perception",), profile="paper", steps=1, batch_size=4
    )
    result = train_pegs(wanted)
    assert result.profile == "paper" and result.to_dict()["profile"] == "paper"
    settings = result.to_dict()["stages"]["perception"]["settings"]
    assert (settings["lr"], settings["warmup_steps"], settings["batch_size"]) == (1e-4, 2000, 4)
    for folder in (run / "01-perception", run / "final"):
        assert json.loads((folder / STATE_FILE).read_text())["profile"] == "paper"
        assert PegsModel.from_pretrained(folder).profile == "paper"
    older = tmp_path / "older"
    tiny_model().save_pretrained(older)
    state = json.loads((older / STATE_FILE).read_text())
    (older / STATE_FILE).write_text(json.dumps({k: v for k, v in state.items() if k != "profile"}))
    assert PegsModel.from_pretrained(older).profile == "default"  # written before profiles: ours


def test_pegs_train_profile_reaches_the_pipeline_and_its_json(monkeypatch, tmp_path):
    heard = []

    def fake(wanted, **_):
        heard.append(wanted)
        return PegsTrainingResult(wanted.out, wanted.profile)

    monkeypatch.setattr("stickerconv.cli.pegs.train_pegs", fake)
    args = ["pegs", "train", "--preset", "tiny", "--stickers", str(tmp_path), "--out", str(tmp_path / "run"), "--json"]
    for extra, profile in (([], "default"), (["--profile", "paper"], "paper")):
        result = CliRunner().invoke(app, [*args, *extra])
        assert result.exit_code == 0, result.output
        assert heard[-1].profile == profile and json.loads(result.output)["profile"] == profile
    given = CliRunner().invoke(app, [*args, "--profile", "paper", "--grad-accum", "4", "--batch-size", "3"])
    assert given.exit_code == 0 and (heard[-1].grad_accum, heard[-1].batch_size) == (4, 3)


# ---------------------------------------------------------------------------------------------- eval predict
def test_reply_budgets_under_each_profile():
    """PEGS: the checkpoint's budget (64) under ours, 512 under the paper's (§5.6); the LLM baselines keep the
    paper's 200 for them (§7) under both; --max-new-tokens wins for every responder."""
    for responder in ("pegs-ret", "pegs-gen", "pegs-rag", "text", "tool"):
        base = PredictOptions(responder=responder, data="d", out="o.json")
        assert base.profile == "default" and base.reply_budget() is None
        paper = PredictOptions(responder=responder, data="d", out="o.json", profile="paper")
        assert paper.reply_budget() == (512 if responder.startswith("pegs-") else None)
        given = PredictOptions(responder=responder, data="d", out="o.json", profile="paper", max_new_tokens=32)
        assert given.reply_budget() == 32
    assert tiny_model().config.decoding.max_new_tokens == 64


def test_pegs_predictions_decode_the_profiles_budget_and_record_it(small_index, tmp_path, monkeypatch):
    library = small_index.library
    data = tmp_path / "samples.json"
    data.write_text(json.dumps([s.model_dump(mode="json") for s in dialogue_samples(library, 1)]))
    checkpoint = tmp_path / "checkpoint"
    model = tiny_model()
    fit = SendFit(threshold=-2.0, target="share", turns=8, gold_share=0.5, share=0.5, precision=1, recall=1, f1=1)
    model.config = model.config.model_copy(update={"send": model.config.send.model_copy(update={"fit": fit})})
    model.save_pretrained(checkpoint)
    budgets: list[int | None] = []
    decodings: list[tuple] = []
    real = PegsModel.draft

    def draft(self, prompts, max_new_tokens=None):
        budgets.append(max_new_tokens)
        decoding, send = self.config.decoding, self.config.send
        decodings.append((decoding.repetition_penalty, decoding.no_repeat_ngram_size, send.decision))
        return real(self, prompts, 4)  # a random tiny model would write the whole budget: keep the test short

    monkeypatch.setattr(PegsModel, "draft", draft)
    common = {"responder": "pegs-ret", "data": data, "stickers": library.root, "checkpoint": checkpoint, "limit": 2}
    ours = ("threshold -2.0000", "greedy, repetition_penalty 1.1, no_repeat_ngram_size 4", (1.1, 4, "threshold"))
    paper = ("greedy", "greedy, repetition_penalty 1, no_repeat_ngram_size 6", (1.0, 6, "greedy"))  # §5.6
    for profile, budget, recorded, (send, decoding, used) in (
        ("default", None, "64", ours),
        ("paper", 512, "512", paper),
    ):
        out = tmp_path / f"{profile}.json"
        budgets.clear(), decodings.clear()
        result = predict(PredictOptions(out=out, profile=profile, **common))
        assert budgets == [budget, budget] and decodings == [used, used]
        meta = {"profile": profile, "max_new_tokens": recorded, "trained_profile": "default"}
        meta |= {"send_decision": send, "decoding": decoding}
        assert result.provenance.items() >= meta.items()
        assert all(record["pred_meta"].items() >= meta.items() for record in json.loads(out.read_text()))
    direct = build_responder("pegs-ret", index=small_index, checkpoint=checkpoint, max_new_tokens=100)
    assert direct.describe()["max_new_tokens"] == "100"
    # The scores of each file carry its profile in every signature, before the version field.
    files = (tmp_path / "default.json", tmp_path / "paper.json")
    options = ScoreOptions(preds=files, out=tmp_path / "scores", names=("ours", "paper"), metrics=("dist",))
    scored = score(replace(options, encoder="none", bootstrap=0))
    for name, profile in (("ours", "default"), ("paper", "paper")):
        for result in scored.scores[name].values():
            assert f"|profile:{profile}|version:" in result.signature_text, result.signature_text
    on_file = json.loads((tmp_path / "scores" / "scores.json").read_text())
    assert "profile:paper" in on_file["paper"]["dist1_intra"]["signature_text"]


def test_eval_predict_cli_passes_the_budget_to_the_baselines(small_index, tmp_path, monkeypatch):
    samples = tmp_path / "samples.json"
    samples.write_text(json.dumps([s.model_dump(mode="json") for s in dialogue_samples(small_index.library, 1)]))
    with FakeOpenAIServer() as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "test")
        base = ["eval", "predict", "--responder", "text", "--data", str(samples), "--llm", "openai:fake", "--json"]
        for extra, tokens in ((["--profile", "paper"], 200), (["--max-new-tokens", "32"], 32)):
            out = tmp_path / f"{tokens}.json"
            result = CliRunner().invoke(app, [*base, "--limit", "1", "--out", str(out), "--cache", "off", *extra])
            assert result.exit_code == 0, result.output
            assert server.requests[-1]["max_tokens"] == tokens
            profile = "paper" if "--profile" in extra else "default"
            assert json.loads(result.output)["provenance"]["profile"] == profile
            assert json.loads(out.read_text())[0]["pred_meta"]["max_new_tokens"] == str(tokens)


def test_checkpoints_fall_evenly_through_a_stage_the_last_at_its_end():
    every = [stage_settings(options(steps=25, checkpoints=n), "joint", EXAMPLES).checkpoint_every for n in (1, 4, 25)]
    assert every == [25, 7, 1]  # 1: only at the end (the demo's); 4: steps 7, 14, 21 and the end, 25
