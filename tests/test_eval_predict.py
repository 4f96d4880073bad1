"""End to end: a small generated test split, predictions from both baselines, scores and the report."""

import asyncio
import json
import os

import pytest
from typer.testing import CliRunner

from stickerconv.agent4sc.runner import run_generation
from stickerconv.cli import app
from stickerconv.data.convert import convert
from stickerconv.evaluate.predict import PRED_TEXT, load_items, load_predictions, pred_text, predict
from stickerconv.evaluate.report import write_report
from stickerconv.evaluate.score import score_predictions
from stickerconv.evaluate.text.scorer import TextScorer
from stickerconv.llm import ChatModel
from stickerconv.responders import StickerToolResponder, TextOnlyResponder
from stickerconv.runfiles import CONVERSATIONS

from helpers.agent4sc import PERSONAS, llm_factory, scripted_world
from helpers.fake_openai_server import FakeOpenAIServer, schema_instance
from helpers.llm_fakes import ScriptedBackend


@pytest.fixture(scope="module")
def generated_split(tmp_path_factory, small_index):
    out = tmp_path_factory.mktemp("gen")
    asyncio.run(run_generation(PERSONAS[:3], small_index, llm_factory(out, scripted_world()), out / "run"))
    return out / "run" / CONVERSATIONS


def _baseline_model():
    def reply(request):
        last = request.messages[-1].text
        if request.json_schema is not None:
            return json.dumps({"text": f"That sounds hard: {last[:20]}", "tool": "send_sticker", "query": "sad tears"})
        return f"I am here for you, {len(request.messages)} messages in."

    return ChatModel(ScriptedBackend(default=reply), cache="off")


def test_both_baselines_are_predicted_scored_and_reported(generated_split, small_index, tmp_path):
    items = load_items(generated_split)
    turns = sum(len(json.loads(x)["conversation"]) for x in generated_split.read_text().splitlines())
    assert len(items) == turns > 0
    preds = {}
    for name, responder in (
        ("text", TextOnlyResponder(_baseline_model())),
        ("tool", StickerToolResponder(_baseline_model(), small_index)),
    ):
        path = tmp_path / f"{name}.json"
        assert asyncio.run(predict(responder, items, path)) == turns
        records = load_predictions(path)
        assert [r["item_id"] for r in records] == [i.item_id for i in items]  # test-set order
        assert all(r["query"] == i.context.user_message for r, i in zip(records, items, strict=True))
        preds[name] = records
    assert all(r["pred_image"] == [] and r["pred_image_metadata"] is None for r in preds["text"])
    assert all(len(r["pred_image"]) == 1 and r["pred_image_metadata"]["origin_anno"] for r in preds["tool"])
    scorer = TextScorer()
    scores = {n: score_predictions(r, scorer, ["bleu", "rouge", "dist"], bootstrap=50) for n, r in preds.items()}
    assert scores["text"]["bleu1"].n_items == turns and scores["tool"]["rouge1"].ci is not None
    assert "sticker_fit" not in scores["text"] and scores["tool"]["sticker_fit"].n_items == turns  # labels only
    report = write_report(scores, tmp_path / "report")
    text = report.read_text()
    assert "| metric | text | tool |" in text and "| bleu4 |" in text and "## Signatures" in text
    assert "| sticker_fit | - |" in text and "`sticker_fit`: the share of predicted stickers" in text
    assert (tmp_path / "report" / "metrics.png").stat().st_size > 1000
    assert set(json.loads((tmp_path / "report" / "scores.json").read_text())) == {"text", "tool"}


def test_a_samples_file_gives_the_same_items_as_its_conversations(generated_split, tmp_path):
    samples = tmp_path / "samples.json"
    convert(generated_split, "samples", samples)
    from_samples, from_conversations = load_items(samples), load_items(generated_split)
    assert len(from_samples) == len(from_conversations)
    for a, b in zip(from_samples, from_conversations, strict=True):
        assert a.sample == b.sample
        assert a.context.user_message == b.context.user_message and a.context.user_sticker == b.context.user_sticker
        assert [t.user_message for t in a.context.history] == [t.user_message for t in b.context.history]


class Flaky(TextOnlyResponder):
    """Fails after ``budget`` replies, as a crash would."""

    def __init__(self, model, budget):
        super().__init__(model)
        self.budget = budget

    async def respond(self, context):
        if self.budget == 0:
            raise RuntimeError("crash")
        self.budget -= 1
        return await super().respond(context)


def test_an_interrupted_prediction_run_resumes_without_repeating(generated_split, tmp_path):
    items = load_items(generated_split)
    out = tmp_path / "pred.json"
    with pytest.raises(RuntimeError):
        asyncio.run(predict(Flaky(_baseline_model(), 3), items, out, concurrency=1))
    partial = tmp_path / "pred.json.partial.jsonl"
    assert len(partial.read_text().splitlines()) == 3 and not out.exists()
    rerun = Flaky(_baseline_model(), len(items) - 3)  # exactly enough for the rest
    assert asyncio.run(predict(rerun, items, out, concurrency=1)) == len(items)
    assert not partial.exists() and [r["item_id"] for r in load_predictions(out)] == [i.item_id for i in items]


def test_misspelt_prediction_key_is_read_and_bad_files_are_named(tmp_path):
    assert pred_text({"pred_text_reponse": "old spelling"}) == "old spelling"
    bad = tmp_path / "bad.json"
    bad.write_text('[{"response_text": "x"}]')  # a sample's key and no predicted text: not a predictions file
    with pytest.raises(ValueError, match="bad.json: found samples \\(JSON array\\), expected predictions"):
        load_predictions(bad)


def test_cli_predict_and_score(generated_split, small_index, tmp_path, monkeypatch):
    runner = CliRunner()
    with FakeOpenAIServer() as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "test")
        out = tmp_path / "text.json"
        args = ["eval", "predict", "--responder", "text", "--data", str(generated_split), "--out", str(out)]
        result = runner.invoke(app, [*args, "--llm", "openai:fake-model", "--limit", "4"])
        assert result.exit_code == 0, result.output
    records = load_predictions(out)
    assert len(records) == 4 and all(r[PRED_TEXT] == r["query"] for r in records)  # "echo: <query>", prefix cut
    result = runner.invoke(
        app,
        [
            "eval",
            "score",
            "--pred",
            str(out),
            "--pred",
            str(out),
            "--name",
            "a",
            "--name",
            "b",
            "--out",
            str(tmp_path / "r"),
            "--metrics",
            "bleu,dist",
            "--bootstrap",
            "20",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "| metric | a | b |" in (tmp_path / "r" / "report.md").read_text()
    assert os.path.exists(tmp_path / "r" / "scores.json")


def test_cli_scores_stickers_judges_and_retrieval(generated_split, small_index, tmp_path, monkeypatch):
    items = load_items(generated_split)
    paths = []
    for name, responder in (
        ("text", TextOnlyResponder(_baseline_model())),
        ("tool", StickerToolResponder(_baseline_model(), small_index)),
    ):
        paths.append(tmp_path / f"{name}.json")
        asyncio.run(predict(responder, items, paths[-1]))
    runner = CliRunner()
    lib = str(small_index.library.root)

    def judge_reply(body):
        schema = body["response_format"]["json_schema"]["schema"]
        if schema.get("title") == "RankingAnswer":
            return json.dumps({"ranking": {"A": 2, "B": 1}})
        return json.dumps(schema_instance(schema))

    with FakeOpenAIServer(reply=judge_reply) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "test")
        args = ["eval", "score", "--pred", str(paths[0]), "--pred", str(paths[1]), "--out", str(tmp_path / "r")]
        args += ["--metrics", "bleu", "--stickers", lib, "--bootstrap", "20"]
        args += ["--judge-llm", "openai:fake-model", "--judge-items", "3", "--judge-n", "1"]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
    scores = json.loads((tmp_path / "r" / "scores.json").read_text())
    assert scores["text"]["sticker_frequency"]["score"] == 0.0 and scores["tool"]["sticker_frequency"]["score"] == 1.0
    assert "mm_relevance_f_proxy" in scores["tool"] and "send_f1" in scores["tool"]
    assert scores["tool"]["empathy_mean"]["n_items"] <= 3 and "consistency_mean" in scores["text"]
    assert "proxy:minilm" in scores["tool"]["mm_relevance_f_proxy"]["signature_text"]
    samples = tmp_path / "samples.json"
    convert(generated_split, "samples", samples)
    out = tmp_path / "retrieval.json"
    result = runner.invoke(app, ["eval", "retrieval", "--data", str(samples), "--stickers", lib, "--out", str(out)])
    assert result.exit_code == 0, result.output
    retrieved = json.loads(out.read_text())["all"]
    with_gold = sum(bool(s["response_image"]) for s in json.loads(samples.read_text()))
    assert with_gold > 0 and retrieved["r10@1"]["n_items"] == with_gold and "pool_r@10" in retrieved
    assert "rank" in scores["text"] and 1.0 <= scores["text"]["rank"]["score"] <= 2.0  # 2 systems, shuffled
