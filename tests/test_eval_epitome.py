"""EPITOME classifiers offline: a tiny random RoBERTa with a tokenizer built from the test texts.

The real path (roberta-base fine-tuned on the EPITOME annotations) runs the same code; here it is
exercised end to end on a model of hidden size 32: train a step or two, save, reload, predict
levels in range, score records, and check the §6.4 formulas on hand-made numbers. Nothing is
downloaded: every ``from_pretrained`` call reads a folder this test wrote.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from stickerconv.evaluate.judges.epitome import (
    MECHANISMS,
    EpitomeClassifier,
    EpitomeError,
    EpitomeModelMissing,
    EpitomeScorer,
    TrainConfig,
    level_stats,
    load_annotations,
    train_classifier,
)

SEEKERS = [
    "I failed my exam and I feel terrible.",
    "My dog died yesterday and I can't stop crying.",
    "Nobody came to my birthday party.",
    "I lost my job today.",
]
RESPONSES = [
    "I'm so sorry, that must hurt a lot.",
    "What happened? Do you want to talk about it?",
    "It sounds like you feel very alone right now.",
    "Okay.",
]
FIELDS = ["sp_id", "rp_id", "seeker_post", "response_post", "level", "rationale_labels"]


def annotated_rows() -> list[dict]:
    return [
        {
            "sp_id": f"s{i}",
            "rp_id": f"r{i}",
            "seeker_post": SEEKERS[i % 4],
            "response_post": RESPONSES[(i + i // 4) % 4],
            "level": i % 3,
            "rationale_labels": "0,0,1,1",
        }
        for i in range(12)
    ]


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    """A random RobertaForSequenceClassification (hidden 32, 2 layers) and a word-level tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, RobertaConfig, RobertaForSequenceClassification

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # RoBERTa's ids 0..4
    words = sorted({w for text in SEEKERS + RESPONSES + ["sticker img"] for w in _words(text)})
    vocab = {token: i for i, token in enumerate(specials + words)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        model_input_names=["input_ids", "attention_mask"],
    )
    config = RobertaConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=80,
        type_vocab_size=1,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        num_labels=3,
    )
    out = tmp_path_factory.mktemp("tiny-roberta")
    RobertaForSequenceClassification(config).save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out


def _words(text: str) -> list[str]:
    from tokenizers import pre_tokenizers

    return [w for w, _ in pre_tokenizers.Whitespace().pre_tokenize_str(text.lower())]


@pytest.fixture(scope="module")
def trained(tiny_base, tmp_path_factory):
    """ER, IP and EX classifiers trained for one epoch (2 steps) on a tiny annotated CSV."""
    data = tmp_path_factory.mktemp("epitome-data") / "emotional-reactions-reddit.csv"
    with data.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, FIELDS)
        writer.writeheader()
        writer.writerows(annotated_rows())
    root = tmp_path_factory.mktemp("epitome")
    config = TrainConfig(base_model=str(tiny_base), epochs=1, batch_size=6, max_length=32, dev_fraction=0.0)
    reports = {m: train_classifier(m, data, root / m, config) for m in MECHANISMS}
    return root, reports


def test_training_saves_a_reloadable_classifier(trained):
    root, reports = trained
    report = reports["ER"]
    assert report.mechanism == "ER" and report.n_train == 12 and report.steps == 2
    assert np.isfinite(report.final_loss) and report.dev_accuracy is None
    meta = json.loads((root / "ER" / "epitome.json").read_text())
    assert meta["mechanism"] == "ER" and meta["lowercase"] and meta["data"]["hash"].startswith("sha256:")
    assert meta["data"]["annotations"] == 12 and meta["train"]["max_length"] == 32

    classifier = EpitomeClassifier.load(root / "ER", "ER", device="cpu")
    levels = classifier.predict(SEEKERS, RESPONSES, batch_size=3)
    assert levels.shape == (4,) and set(levels.tolist()) <= {0, 1, 2}
    again = EpitomeClassifier.load(root / "ER", device="cpu").predict(SEEKERS, RESPONSES)
    assert levels.tolist() == again.tolist()  # the saved weights, not a fresh random head
    with pytest.raises(EpitomeError, match="holds a ER classifier, not IP"):
        EpitomeClassifier.load(root / "ER", "IP", device="cpu")


def test_training_reports_dev_scores_from_jsonl(tiny_base, tmp_path):
    data = tmp_path / "explorations.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in annotated_rows()))
    config = TrainConfig(base_model=str(tiny_base), epochs=1, batch_size=8, max_length=32, dev_fraction=0.25)
    report = train_classifier("ex", data, tmp_path / "EX", config)
    assert report.mechanism == "EX" and report.n_dev == 3 and report.n_train == 9 and report.steps == 2
    assert 0.0 <= report.dev_accuracy <= 1.0 and 0.0 <= report.dev_macro_f1 <= 1.0


def test_scoring_records(trained):
    root, _ = trained
    records = [
        {"query": seeker, "pred_text_response": f"{response} <IMG>", "response_text": RESPONSES[(i + 1) % 4]}
        for i, (seeker, response) in enumerate(zip(SEEKERS, RESPONSES, strict=True))
    ]
    records[0] = records[0] | {"pred_text_reponse": records[0].pop("pred_text_response")}  # the old spelling
    scorer = EpitomeScorer(root, device="cpu", batch_size=2)
    levels = scorer.levels(records)
    results = scorer.score(records, bootstrap=20, seed=1)
    assert set(results) == {f"epitome_{m}_{s}" for m in ("er", "ip", "ex") for s in ("pred", "gt", "diff")}
    for m in MECHANISMS:
        pred, gt = levels[m]["pred"], levels[m]["gt"]
        key = f"epitome_{m.lower()}"
        assert results[f"{key}_pred"].score == pytest.approx(pred.mean())
        assert results[f"{key}_gt"].score == pytest.approx(gt.mean())
        assert results[f"{key}_diff"].score == pytest.approx(((pred - gt) ** 2).mean())
        assert results[f"{key}_diff"].per_item == ((pred - gt) ** 2).astype(float).tolist()
    er = results["epitome_er_pred"]
    assert er.n_items == 4 and er.ci is not None and er.ci[0] <= er.score <= er.ci[1]
    assert er.signature["lc"] == "yes" and er.signature["img"] == "stripped" and er.signature["bs"] == "20"
    assert er.signature["clf"] == f"{scorer.classifiers['ER'].meta['base_model']}(cross-encoder)"
    with pytest.raises(EpitomeError, match="record 0 needs 'query'"):
        scorer.levels([{"pred_text_response": "hi"}])


def test_diff_formula_on_hand_made_levels():
    # pred [2, 0, 1, 2], gold [1, 0, 2, 0]: means 1.25 and 0.75; squared differences 1, 0, 1, 4 -> 1.5
    assert level_stats([2, 0, 1, 2], [1, 0, 2, 0]) == (1.25, 0.75, 1.5)
    assert level_stats([1, 1], [1, 1]) == (1.0, 1.0, 0.0)
    with pytest.raises(EpitomeError, match="as many predicted as gold"):
        level_stats([1, 2], [1])


def test_scoring_without_a_model_says_none_is_bundled_and_how_to_train(tmp_path):
    with pytest.raises(EpitomeModelMissing, match="None are bundled") as caught:
        EpitomeScorer(None)
    assert "stickerconv eval epitome-train" in str(caught.value) and "never published" in str(caught.value)
    (tmp_path / "ER").mkdir()
    with pytest.raises(FileNotFoundError, match="lacks ER, IP, EX") as missing:  # callers may catch the OS kind
        EpitomeScorer(tmp_path)
    assert str(tmp_path) in str(missing.value)


def test_annotation_files_are_checked(tmp_path):
    good = tmp_path / "a.csv"
    with good.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, FIELDS)
        writer.writeheader()
        writer.writerows(annotated_rows()[:2])
    assert [a.level for a in load_annotations(good)] == [0, 1]
    bad = tmp_path / "b.jsonl"
    bad.write_text(json.dumps({"seeker_post": "x", "response_post": "y", "level": 3}) + "\n")
    with pytest.raises(EpitomeError, match=r"b.jsonl:1: level 3 is not 0, 1 or 2"):
        load_annotations(bad)
    bad.write_text(json.dumps({"seeker_post": "x", "level": 1}) + "\n")
    with pytest.raises(EpitomeError, match="missing response_post"):
        load_annotations(bad)
    (tmp_path / "a.txt").write_text("seeker_post\tresponse_post\tlevel\n")
    with pytest.raises(EpitomeError, match="unknown annotation format '.txt'"):
        load_annotations(tmp_path / "a.txt")
    with pytest.raises(EpitomeError, match="does not exist"):
        load_annotations(tmp_path / "none.csv")
    with pytest.raises(EpitomeError, match="unknown EPITOME mechanism 'XX'"):
        train_classifier("XX", good, tmp_path / "out")


def test_cli_trains_the_three_classifiers_and_scores_with_them(tiny_base, tmp_path):
    from typer.testing import CliRunner

    from stickerconv.cli import app

    data = tmp_path / "annotations.csv"
    with data.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, FIELDS)
        writer.writeheader()
        writer.writerows(annotated_rows())
    runner = CliRunner()
    args = ["eval", "epitome-train", "--out", str(tmp_path / "models"), "--base-model", str(tiny_base)]
    args += ["--epochs", "1", "--batch-size", "6"] + [f"--data={m}={data}" for m in MECHANISMS]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    scorer = EpitomeScorer(tmp_path / "models")
    record = {"query": "I failed again.", "response_text": "That hurts.", "pred_text_response": "I'm sorry."}
    assert set(scorer.score([record, record], bootstrap=0)) >= {"epitome_er_pred", "epitome_ip_diff"}
    bad = runner.invoke(app, ["eval", "epitome-train", "--out", str(tmp_path / "m2"), "--data", f"XY={data}"])
    assert bad.exit_code != 0 and "MECH one of ER, IP, EX" in str(bad.exception)
