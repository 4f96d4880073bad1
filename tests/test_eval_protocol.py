"""The evaluation's shared contracts: every registered metric follows the metric protocol (one result, its
signature naming the metric and the version); the Prediction record round-trips the predictions file
byte for byte and is read by every scorer as a model or as its plain dict; one label/message polarity;
and the package face stays lazy."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from stickerconv.evaluate.protocol import (
    QUALITY,
    Metric,
    MetricError,
    prediction_metrics,
    quality_metrics,
)
from stickerconv.evaluate.quality.metrics import compound_polarity, label_polarity, message_polarity
from stickerconv.evaluate.signature import MetricResult, version_field
from stickerconv.evaluate.text.scorer import METRICS, TextMetricsConfig, TextScorer
from stickerconv.jsonl import RecordError
from stickerconv.llm import ChatModel
from stickerconv.schema import PRED_TEXT_MISSPELT, Prediction, prediction_fields

from helpers.data import HUG_STICKER as HUG
from helpers.llm_fakes import ScriptedBackend

SAD = HUG | {"image": "pack/cry.png", "description": "a crying cat", "emotion": "sad", "origin_anno": "Sadness"}


def prediction(i: int, sends: bool) -> Prediction:
    return Prediction(
        input_text=f"USER: My exam {i} went badly.<IMG>\nASSISTANT:",
        input_image=["pack/cry.png"],
        response_text="That sounds hard, I am here for you.<IMG>",
        response_image=["pack/hug.png"],
        user_persona="a student",
        user_status="worried about exams",
        input_image_metadata=SAD,
        response_image_metadata=HUG,
        query=f"My exam {i} went badly.",
        history=[],
        item_id=f"{i}:1",
        pred_text_response=f"I am sorry about exam {i}, that must hurt." + ("<IMG>" if sends else ""),
        pred_image=["pack/hug.png"] if sends else [],
        pred_image_metadata=HUG if sends else None,
        pred_meta={"responder": "scripted"},
    )


PREDICTIONS = [prediction(i, sends=i % 2 == 0) for i in range(4)]


def _assert_follows_protocol(name: str, metric: Metric, result: MetricResult) -> None:
    assert isinstance(metric, Metric) and metric.name == name
    assert isinstance(result, MetricResult) and result.name == name
    assert result.signature_text.startswith(name + "|")
    assert result.signature["version"].startswith(version_field().split("+")[0])  # stickerconv-<its version>
    assert result.signature_text.endswith("|version:" + result.signature["version"])


@pytest.fixture(scope="module")
def judge_chat() -> ChatModel:
    return ChatModel(ScriptedBackend(default=json.dumps({"reason": "kind", "score": 4})), cache="off")


def test_every_prediction_metric_returns_a_result_signed_with_its_name_and_version(tmp_path, judge_chat) -> None:
    from stickerconv.evaluate.multimodal.encoders import load_encoder

    scorer = TextScorer(TextMetricsConfig(nltk_data=tmp_path / "nltk_data"))
    fast = [m for m in METRICS if not m.startswith("bertscore")]  # BERTScore's signature: test_eval_bertscore.py
    encoder = load_encoder("proxy")
    metrics = prediction_metrics(scorer=scorer, text=fast, encoder=encoder, chat=judge_chat, bootstrap=20, seed=1)
    expected = {*fast, "sticker_fit", "sticker_fit_gt", "sticker_frequency", "sticker_frequency_gt"}
    expected |= {"send_precision", "send_recall", "send_f1", "empathy_mean", "consistency_parse_failures"}
    expected |= {"mm_relevance_f_proxy", "clip_score_proxy"}
    assert expected <= set(metrics)
    for name, metric in metrics.items():
        _assert_follows_protocol(name, metric, metric.score(PREDICTIONS))
    assert metrics["empathy_mean"].score(PREDICTIONS).score == 4.0
    assert metrics["sticker_fit"].score(PREDICTIONS).n_items == 2  # the two predictions that send


def test_a_metric_with_no_value_says_so() -> None:
    text_only = [prediction(i, sends=False) for i in range(2)]
    with pytest.raises(MetricError, match="sticker_fit: no result on this data"):
        prediction_metrics(text=["bleu"])["sticker_fit"].score(text_only)


def test_every_quality_figure_is_a_metric_of_a_conversations_file(tmp_path) -> None:
    turns = [
        {"turn": 1, "user_message": "I failed my exam, I feel sad.", "system_message": "Cheer up, be happy!"},
        {"turn": 2, "user_message": "Thanks, I feel better.", "system_message": "Glad to hear it!"},
    ]
    turns[0] |= {"user_sticker": SAD, "system_sticker": HUG}
    records = [
        {"conversation": turns, "user_persona": "p", "user_status": "s"},
        {"conversation": turns[::-1], "user_persona": "p", "user_status": "s"},
    ]
    records[1]["conversation"] = [t | {"turn": i} for i, t in enumerate(records[1]["conversation"], 1)]
    path = tmp_path / "conversations.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    metrics = quality_metrics()
    assert len(metrics) == len(QUALITY)
    for name, metric in metrics.items():
        result = metric.score(path)
        _assert_follows_protocol(name, metric, result)
        assert result.n_items == 2
    assert metrics["quality_stickers_per_session"].score(path).score == 2.0
    assert metrics["quality_emotion_agreement_system_label_match"].score(path).score == 1.0
    path.write_text(json.dumps(records[0] | {"conversation": turns[1:]}) + "\n")  # one session, no sticker
    with pytest.raises(MetricError, match="quality_stickers_top10_share: .* has no value"):
        metrics["quality_stickers_top10_share"].score(path)


def test_predictions_round_trip_byte_for_byte_and_old_spellings_load(tmp_path) -> None:
    from stickerconv.evaluate.predict import load_predictions

    record = PREDICTIONS[0].model_dump(mode="json")
    # the key order predict has always written: the sample's fields, then the prediction's
    assert list(record)[-5:] == ["item_id", "pred_text_response", "pred_image", "pred_image_metadata", "pred_meta"]
    line = json.dumps(record, ensure_ascii=False)
    assert json.dumps(Prediction.model_validate_json(line).model_dump(mode="json"), ensure_ascii=False) == line
    old = record | {PRED_TEXT_MISSPELT: record.pop("pred_text_response")}
    assert Prediction.model_validate(old).pred_text_response == PREDICTIONS[0].pred_text_response
    path = tmp_path / "old.jsonl"
    path.write_text(json.dumps(old) + "\n")
    assert load_predictions(path) == [old]  # kept as the plain dict it was


def test_a_bad_prediction_line_is_named_by_file_line_and_field(tmp_path) -> None:
    from stickerconv.evaluate.predict import load_predictions

    good = PREDICTIONS[0].model_dump(mode="json")
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(good | {"pred_image": "one.png"}) + "\n")
    with pytest.raises(RecordError) as info:
        load_predictions(path)
    assert (info.value.path, info.value.line, info.value.field) == (path, 2, "pred_image")


def test_scorers_read_a_model_and_its_plain_dict_alike() -> None:
    from stickerconv.evaluate.judges.llm_judges import JudgeItem, prediction_text
    from stickerconv.evaluate.multimodal.scores import gold_sticker, pred_sticker, sticker_fit, user_state
    from stickerconv.evaluate.score import score_predictions

    plain = [p.model_dump(mode="json") for p in PREDICTIONS]
    assert prediction_fields(PREDICTIONS[0])["pred_image"] == plain[0]["pred_image"]
    for model, record in zip(PREDICTIONS, plain, strict=True):
        assert pred_sticker(model, 0) == pred_sticker(record, 0) and gold_sticker(model, 0) == gold_sticker(record, 0)
        assert user_state(model, 0) == user_state(record, 0) == "Sadness"
        assert prediction_text(model) == prediction_text(record)
        assert JudgeItem.from_record(model, 0, None) == JudgeItem.from_record(record, 0, None)
    assert sticker_fit(PREDICTIONS, 0) == sticker_fit(plain, 0)
    by_model = score_predictions(PREDICTIONS, TextScorer(), ["bleu"], bootstrap=10)
    assert by_model == score_predictions(plain, TextScorer(), ["bleu"], bootstrap=10)


def test_one_label_and_message_polarity() -> None:
    assert [label_polarity(label) for label in ("Happiness", "Sadness", "Anger", "Neutral", "Surprise")] == [
        "positive",
        "negative",
        "negative",
        "neutral",
        "neutral",
    ]
    assert message_polarity("I am so happy, this is wonderful!") == "positive"
    assert message_polarity("This is terrible and I hate it.") == "negative"
    assert message_polarity("The bus leaves at noon.") == "neutral"
    assert compound_polarity(0.2) == "positive" and compound_polarity(0.2, cutoff=0.3) == "neutral"


def test_a_judge_metric_runs_its_judge_to_the_end(judge_chat) -> None:
    result = prediction_metrics(text=["bleu"], chat=judge_chat)["consistency_mean"].score(PREDICTIONS[:2])
    assert result.score == 4.0 and result.signature["judge"] == "scripted:scripted-1"


def test_importing_a_text_metric_loads_neither_the_judges_nor_torch() -> None:
    code = (
        "import json, sys; import stickerconv.evaluate.text.bleu; "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('stickerconv', 'torch'))))"
    )
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert loaded == [
        "stickerconv",
        "stickerconv.evaluate",
        "stickerconv.evaluate.bootstrap",
        "stickerconv.evaluate.text",
        "stickerconv.evaluate.text.bleu",
    ]
