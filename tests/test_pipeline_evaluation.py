"""The evaluation pipelines run from Python, without the CLI: predictions, scores and retrieval files written,
and the results they return agree with the files and with the library functions they stand on."""

from __future__ import annotations

import json
from contextlib import contextmanager

import pytest

from stickerconv.data.convert import convert
from stickerconv.evaluate.predict import load_predictions
from stickerconv.evaluate.retrieval.protocols import IndexScorer, RetrievalConfig, score_retrieval, score_unseen_split
from stickerconv.pipelines import PipelineError
from stickerconv.pipelines.evaluation import (
    PredictOptions,
    RetrievalOptions,
    ScoreOptions,
    predict,
    retrieval,
    score,
)
from stickerconv.schema import PRED_TEXT
from stickerconv.stickers.index import StickerIndex
from stickerconv.stickers.library import StickerLibrary

from helpers.data import make_library, published_sessions, published_stickers, write_jsonl
from helpers.fake_openai_server import FakeOpenAIServer


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, embedder):
    """Published sessions, their library (indexed) and samples: train from the first five, test from the rest."""
    root = tmp_path_factory.mktemp("eval")
    library = make_library(root / "library", published_stickers())
    StickerIndex.build(StickerLibrary.load(library), embedder)[0].save()
    sessions = published_sessions()
    files = {"conversations": write_jsonl(root / "test.jsonl", sessions[5:])}
    for name, part in (("train", sessions[:5]), ("test", sessions[5:])):
        files[name] = root / f"{name}-samples.json"
        convert(write_jsonl(root / f"{name}-conversations.jsonl", part), "samples", files[name])
    return library, files


class Bars:
    """A progress factory that remembers what it was asked to show."""

    def __init__(self) -> None:
        self.opened: list[str] = []

    @contextmanager
    def __call__(self, description: str):
        self.opened.append(description)
        yield lambda done, total: None


@pytest.fixture()
def fake_llm(monkeypatch):
    with FakeOpenAIServer() as server:  # echoes the last message: "echo: <query>"
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "test")
        yield "openai:fake-model"


def test_predict_then_score_writes_the_predictions_and_the_report(dataset, tmp_path, fake_llm):
    _, files = dataset
    out, bars = tmp_path / "text.json", Bars()
    options = PredictOptions(responder="text", data=files["conversations"], out=out, llm=fake_llm, limit=4)
    result = predict(options, progress=bars)
    records = load_predictions(out)
    assert result.predictions == len(records) == 4 and result.out == out
    assert all(r[PRED_TEXT] == r["query"] for r in records)  # the fake model echoes the query
    assert "5 conversations" in result.source and bars.opened == ["predicting (text)"]
    assert (tmp_path / "text.json.llm.sqlite").is_file()  # the store's default place, beside the predictions

    report = tmp_path / "report"
    options = ScoreOptions(preds=(out, out), out=report, names=("a", "b"), metrics=("bleu", "dist"), encoder="none")
    scored = score(options)
    assert scored.report == report / "report.md" and "| metric | a | b |" in scored.report.read_text()
    assert scored.samples == {"a": 4, "b": 4}
    assert scored.scores["a"]["bleu1"].n_items == 4 and "sticker_frequency" not in scored.scores["a"]  # no encoder
    on_file = json.loads((report / "scores.json").read_text())
    assert on_file["a"]["bleu1"]["score"] == pytest.approx(scored.scores["a"]["bleu1"].score)


def test_bad_choices_name_the_option_the_value_and_what_works(dataset, tmp_path):
    _, files = dataset
    with pytest.raises(PipelineError, match="--responder 'pegs': choose from text, tool, pegs-ret"):
        predict(PredictOptions(responder="pegs", data=files["test"], out=tmp_path / "p.json"))
    with pytest.raises(PipelineError, match="--style 'v2': choose from v0, v1.5"):
        predict(PredictOptions(responder="text", data=files["test"], out=tmp_path / "p.json", style="v2"))
    with pytest.raises(PipelineError, match="1 --name for 2 --pred"):
        score(ScoreOptions(preds=(files["test"], files["test"]), out=tmp_path, names=("a",)))
    with pytest.raises(PipelineError, match="--encoder 'siglip': choose from proxy, clip, none"):
        score(ScoreOptions(preds=(files["test"],), out=tmp_path, encoder="siglip"))
    with pytest.raises(PipelineError, match="--scorer 'bm25': choose from index, tool"):
        retrieval(RetrievalOptions(data=files["test"], stickers=tmp_path, scorer="bm25"))
    assert not list(tmp_path.iterdir())  # refused before anything was written


def test_retrieval_writes_all_seen_and_unseen_as_the_library_scores_them(dataset, tmp_path):
    library, files = dataset
    out = tmp_path / "retrieval.json"
    options = RetrievalOptions(data=files["test"], stickers=library, out=out, train=files["train"], bootstrap=0)
    result = retrieval(options)
    assert "samples" in result.source and result.sent_share is None and result.out == out
    on_file = json.loads(out.read_text())
    assert set(on_file) == set(result.groups) == {"all", *{"seen", "unseen"} - set(result.empty_groups)}
    assert result.empty_groups != ["seen", "unseen"]  # the test stickers are not all of one kind

    test = json.loads(files["test"].read_text())
    scorer = IndexScorer(StickerIndex.load(library))
    config = RetrievalConfig(context=options.context, neg_seed=options.seed)
    direct = score_retrieval(test, scorer, scorer.pool, config, bootstrap=0)
    for name, metric in direct.items():
        assert on_file["all"][name]["score"] == pytest.approx(metric.score)
        assert result.groups["all"][name].score == pytest.approx(metric.score)
    split = score_unseen_split(files["train"], test, scorer, scorer.pool, config, bootstrap=0)
    assert on_file["all"]["unseen_share"]["score"] == pytest.approx(split["unseen_share"].score)
    for name, metric in split.items():
        group, _, inner = name.rpartition("/")
        if group:
            written = on_file[group][inner]
            assert written["name"] == name and written["score"] == pytest.approx(metric.score)
            assert written["signature"]["split"] == group and "per_item" not in written
