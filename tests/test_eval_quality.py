"""Quality figures on hand-built conversations whose answers are known."""

import json

import pytest

from stickerconv.evaluate.quality.metrics import QualityAccumulator, dataset_quality
from stickerconv.evaluate.quality.report import write_quality


def _sticker(label, sid):
    return {
        "seq_num": 1,
        "image": f"img/{sid}.png",
        "description": "d",
        "emotion": "e",
        "recommendation": "r",
        "origin_anno": label,
    }


def _record(turns, meta=None):
    record = {
        "conversation": [
            {"turn": i, "user_message": u, "system_message": s, "user_sticker": us, "system_sticker": ss}
            for i, (u, s, us, ss) in enumerate(turns, 1)
        ],
        "user_persona": "p",
        "user_status": "s",
    }
    return record | ({"meta": meta} if meta else {})


REPEATING = _record(
    [
        ("I lost my job today.", "That is hard news.", None, None),
        ("I lost my job today.", "That is hard news.", None, None),
    ],
    meta={"end_reason": "repetition", "persona_label": "Sadness"},
)
SAD_WITH_HAPPY_STICKER = _record(
    [("I am so sad and miserable, I cried all night.", "I am here for you.", _sticker("Happiness", "h1"), None)],
    meta={"end_reason": "max_turns", "persona_label": "Sadness"},
)
RISING = _record(
    [
        ("I feel terrible and hopeless.", "I'm sorry you feel this way.", None, _sticker("Neutral", "n1")),
        ("It is a bit better now.", "Good to hear.", None, None),
        ("Thank you, I feel great and happy now!", "Wonderful!", _sticker("Happiness", "h1"), None),
    ]
)


def test_each_figure_on_known_conversations():
    acc = QualityAccumulator()
    for record in (REPEATING, SAD_WITH_HAPPY_STICKER, RISING, {"not": "a session"}):
        acc.add(record)
    result = acc.result()
    assert (result["sessions"], result["skipped"]) == (3, 1)
    rep = result["repetition"]
    assert rep["exact_repeat_share"] == pytest.approx(2 / 12)  # 12 utterances; the second turn repeats the first
    assert rep["sessions_ended_by_repetition"] == pytest.approx(1 / 2)  # two sessions carry run metadata
    stickers = result["stickers"]
    assert stickers["per_session"] == pytest.approx(3 / 3) and stickers["unique"] == 2
    assert stickers["top10_share"] == 1.0 and stickers["turn_share"]["user"] == pytest.approx(2 / 6)
    user = result["emotion_agreement"]["user"]
    assert user["stickers"] == 2 and user["decided"] == 2
    assert user["polarity_conflict"] == pytest.approx(1 / 2)  # the sad message with a happy sticker
    assert user["label_match"] == pytest.approx(1 / 2)  # "happy" message + Happiness sticker agrees
    rising = result["user_sentiment_by_turn"]["negative"]  # RISING has no metadata: its first message is negative
    assert rising[0] < 0 < rising[2]
    assert result["diversity"]["distinct_openings"] == pytest.approx(3 / 3)
    assert 0 < result["diversity"]["user_dist1_corpus"] <= 1


def test_report_has_one_column_per_file(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("".join(json.dumps(r) + "\n" for r in (REPEATING, RISING)))
    b.write_text(json.dumps(SAD_WITH_HAPPY_STICKER) + "\n" + '{"conversation": [{"tu\n')
    results = [dataset_quality(a), dataset_quality(b)]
    assert results[1]["skipped"] == 1
    report = write_quality(results, ["ours", "published"], tmp_path / "q")
    text = report.read_text()
    assert "| | ours | published |" in text and "| sessions | 2 | 1 |" in text
    assert (tmp_path / "q" / "sentiment_by_turn.png").stat().st_size > 1000
    assert set(json.loads((tmp_path / "q" / "quality.json").read_text())) == {"ours", "published"}


def test_fast_self_bleu_equals_nltk_on_real_sentences():
    from nltk.translate.bleu_score import SmoothingFunction, corpus_bleu

    from stickerconv.evaluate.quality.metrics import _words, self_bleu

    from helpers.paths import fixture_file

    profiles = [
        json.loads(line)
        for line in fixture_file("stickerconv", "profiles", "train_profile_excerpt.jsonl").read_text().splitlines()[:40]
    ]
    tokens = [_words(s) for p in profiles for s in p["situation"].split(". ")][:60]
    tokens += [tokens[0], ["short"]]  # a duplicate (clipping by the second count) and a one-word sentence
    refs = [[t for j, t in enumerate(tokens) if j != i] for i in range(len(tokens))]
    expected = corpus_bleu(refs, tokens, smoothing_function=SmoothingFunction().method1)
    assert self_bleu(tokens) == pytest.approx(expected, abs=1e-12, rel=0)


def test_cli_quality_with_a_judge_on_a_sample(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from stickerconv.cli import app

    from helpers.fake_openai_server import FakeOpenAIServer

    data = tmp_path / "run.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in (REPEATING, SAD_WITH_HAPPY_STICKER, RISING)))
    with FakeOpenAIServer() as server:  # schema-valid {reason, score} answers
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "test")
        args = ["data", "quality", str(data), "--out", str(tmp_path / "q"), "--judge-llm", "openai:fake-model"]
        result = CliRunner().invoke(app, [*args, "--judge-items", "4", "--judge-n", "1"])
        assert result.exit_code == 0, result.output
    judges = json.loads((tmp_path / "q" / "quality.json").read_text())["run"]["judges"]
    assert judges["empathy_mean"]["n_items"] == 4 and 1 <= judges["empathy_mean"]["score"] <= 5
    assert "consistency_mean" in judges
    text = (tmp_path / "q" / "quality.md").read_text()
    assert "| judge: empathy of the assistant (1-5) |" in text and "judges (`run`)" in text
