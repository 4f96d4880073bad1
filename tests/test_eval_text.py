"""Text metrics: each equals its reference library on real texts, and carries an interval and a signature.

The texts are the published profiles' persona and situation texts, in three kinds of pairs so every
metric sees partial overlap, near-copies and unrelated text: a persona against its own situation, a
persona against a perturbed copy of itself (words dropped and two swapped), and single sentences.
"""

from __future__ import annotations

import math
import random
import warnings

import numpy as np
import pytest

from stickerconv.agent4sc.personas import load_personas
from stickerconv.evaluate import METRICS, TextMetricsConfig, TextMetricsError, TextScorer
from stickerconv.evaluate.text.bleu import nltk_bleu_from_sums, nltk_bleu_stats
from stickerconv.evaluate.text.cider import cider_d
from stickerconv.evaluate.text.tokens import treebank_words

from helpers.paths import fixture_file

OFFLINE_FAST = [m for m in METRICS if not m.startswith("bertscore")]


def profile_pairs(n_profiles: int = 40, seed: int = 0) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    hyps, refs = [], []
    for p in load_personas(fixture_file("stickerconv", "profiles", "train_profile_excerpt.jsonl"))[:n_profiles]:
        kept = [w for w in p.persona.split() if rng.random() > 0.2]
        i = rng.randrange(len(kept) - 1)
        kept[i], kept[i + 1] = kept[i + 1], kept[i]
        hyps += [p.persona, p.persona, p.situation.split(". ")[0] + "."]
        refs += [p.situation, " ".join(kept), p.persona.split(". ")[0] + "."]
    return hyps, refs


@pytest.fixture(scope="module")
def pairs() -> tuple[list[str], list[str]]:
    return profile_pairs()


@pytest.fixture(scope="module")
def scorer(tmp_path_factory) -> TextScorer:
    return TextScorer(TextMetricsConfig(nltk_data=tmp_path_factory.mktemp("nltk_data")))


@pytest.fixture(scope="module")
def results(scorer, pairs):
    hyps, refs = pairs
    return scorer.score(hyps, refs, OFFLINE_FAST, bootstrap=200, seed=7)


def test_bleu_equals_nltk_corpus_bleu(results, pairs) -> None:
    from nltk.translate.bleu_score import corpus_bleu

    hyps, refs = pairs
    expected = corpus_bleu(
        [[treebank_words(r)] for r in refs],
        [treebank_words(h) for h in hyps],
        weights=[(1.0,), (0.5, 0.5), (1 / 3, 1 / 3, 1 / 3), (0.25,) * 4],
    )
    ours = [results[f"bleu{n}"].score for n in range(1, 5)]
    assert ours == pytest.approx(expected, abs=1e-12, rel=0)
    assert 0 < ours[3] < ours[2] < ours[1] < ours[0] < 1


def test_paper_bleu3_weights_equal_nltk_with_those_weights(pairs, tmp_path) -> None:
    from nltk.translate.bleu_score import corpus_bleu

    hyps, refs = pairs
    paper = TextScorer(TextMetricsConfig(paper_bleu3=True, nltk_data=tmp_path))
    result = paper.score(hyps, refs, ["bleu3"], bootstrap=0)["bleu3"]
    expected = corpus_bleu(
        [[treebank_words(r)] for r in refs], [treebank_words(h) for h in hyps], (0.33, 0.33, 0.33, 0)
    )
    assert result.score == pytest.approx(expected, abs=1e-12, rel=0)
    assert result.signature["weights"] == "0.33,0.33,0.33,0"


@pytest.mark.parametrize(
    "hyps, refs",
    [
        (["the cat sat", "a dog"], ["the cat sat down", "a dog ran"]),  # no 4-gram anywhere: float_min precision
        (["one two three"], ["four five six"]),  # no unigram match: 0
        (["", "the cat sat on the mat today"], ["a cat", "the cat sat on the mat"]),  # an empty hypothesis
        (["a a a a a a"], ["a a"]),  # clipping
    ],
)
def test_bleu_formula_matches_nltk_in_degenerate_cases(hyps, refs) -> None:
    from nltk.translate.bleu_score import corpus_bleu

    h, r = [x.split() for x in hyps], [x.split() for x in refs]
    sums = nltk_bleu_stats(r, h).sum(axis=0, keepdims=True)
    for weights in [(1.0,), (0.5, 0.5), (1 / 3,) * 3, (0.25,) * 4, (0.33, 0.33, 0.33, 0.0)]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = corpus_bleu([[x] for x in r], h, weights)
        assert nltk_bleu_from_sums(sums, weights)[0] == pytest.approx(expected, abs=1e-300, rel=1e-12)


def test_sacrebleu_equals_sacrebleu(results, pairs) -> None:
    from sacrebleu.metrics import BLEU

    hyps, refs = pairs
    for n in range(1, 5):
        expected = BLEU(max_ngram_order=n).corpus_score(hyps, [refs]).score
        assert results[f"sacrebleu{n}"].score == pytest.approx(expected, abs=1e-9, rel=0)
    import sacrebleu

    assert results["sacrebleu4"].score == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score, abs=1e-9)


def test_rouge_equals_rouge_score(results, pairs) -> None:
    from rouge_score.rouge_scorer import RougeScorer

    hyps, refs = pairs
    types = ["rouge1", "rouge2", "rougeL", "rougeLsum"]
    scorer = RougeScorer(types, use_stemmer=False)
    direct = [scorer.score(r, h) for h, r in zip(hyps, refs, strict=True)]
    for t in types:
        per_item = [d[t].fmeasure for d in direct]
        assert results[t].per_item == pytest.approx(per_item, abs=1e-12)
        assert results[t].score == pytest.approx(float(np.mean(per_item)), abs=1e-12)


def test_cider_equals_pycocoevalcap(results, pairs) -> None:
    from pycocoevalcap.cider.cider import Cider

    hyps, refs = pairs
    mean, per_item = Cider().compute_score({i: [r] for i, r in enumerate(refs)}, {i: [h] for i, h in enumerate(hyps)})
    assert results["cider"].score == pytest.approx(float(mean), abs=1e-9, rel=0)
    assert results["cider"].per_item == pytest.approx(list(per_item), abs=1e-9, rel=0)


def test_cider_equals_pycocoevalcap_on_short_and_one_word_texts() -> None:
    """One-word texts exercise coco-caption's length (its bigram count), empty ones the zero norms."""
    from pycocoevalcap.cider.cider import Cider

    hyps = ["yes", "I see", "that sounds hard", "", "oh no oh no", "hugs"]
    refs = ["yes indeed", "I see", "that sounds really hard for you", "okay", "oh no", "hugs"]
    mean, per_item = Cider().compute_score({i: [r] for i, r in enumerate(refs)}, {i: [h] for i, h in enumerate(hyps)})
    ours = cider_d([r.split() for r in refs], [h.split() for h in hyps])
    assert ours == pytest.approx(list(per_item), abs=1e-9, rel=0)
    assert float(np.mean(ours)) == pytest.approx(float(mean), abs=1e-9)


def test_meteor_equals_nltk_meteor_score_called_directly(results, pairs) -> None:
    from nltk.translate.meteor_score import meteor_score

    hyps, refs = pairs
    # the scorer's WordNet copy is on nltk.data.path now, so NLTK's own default wordnet reads it
    direct = [meteor_score([treebank_words(r)], treebank_words(h)) for h, r in zip(hyps, refs, strict=True)]
    assert results["meteor"].per_item == direct  # memoised WordNet and stemmer: identical, not just close
    assert results["meteor"].score == pytest.approx(float(np.mean(direct)), abs=1e-12)


def test_meteor_reproduces_nltk_documented_value(scorer) -> None:
    """NLTK's docstring example (0.6944 with NLTK's downloaded WordNet), here on Debian's WordNet."""
    hyp = "It is a guide to action which ensures that the military always obeys the commands of the party"
    ref = "It is a guide to action that ensures that the military will forever heed Party commands"
    assert round(scorer.score([hyp], [ref], ["meteor"], bootstrap=0)["meteor"].score, 4) == 0.6944
    # the pair behind offline-assets.md's "a test pair scored 0.8067"
    assert (
        round(scorer.score(["the cat sat on the mat"], ["the cat is on the mat"], ["meteor"])["meteor"].score, 4)
        == 0.8067
    )


def test_meteor_matches_synonyms_through_wordnet(scorer) -> None:
    from stickerconv.evaluate.text.pairwise import Meteor

    hyp, ref = "the quick brown fox jumps over the lazy dog", "the fast brown fox leaps over the lazy dog"
    with_wordnet = scorer.score([hyp], [ref], ["meteor"], bootstrap=0)["meteor"].score
    no_synonyms = type("NoSynonyms", (), {"synsets": staticmethod(lambda word: [])})()
    without = Meteor(wordnet=no_synonyms).scores([treebank_words(ref)], [treebank_words(hyp)])[0]
    assert with_wordnet > 0.99 and without < 0.9  # quick~fast and jumps~leaps only match as WordNet synonyms


def test_every_interval_contains_its_point_and_is_deterministic(scorer, results, pairs) -> None:
    for name, result in results.items():
        assert result.ci is not None, name
        low, high = result.ci
        assert low <= result.score <= high, (name, result.score, result.ci)
        assert result.n_items == len(pairs[0])
    hyps, refs = pairs
    again = scorer.score(hyps, refs, ["bleu4", "rougeL", "dist2_intra"], bootstrap=200, seed=7)
    other = scorer.score(hyps, refs, ["bleu4", "rougeL", "dist2_intra"], bootstrap=200, seed=8)
    for name, result in again.items():
        assert result.ci == results[name].ci
        assert other[name].ci != results[name].ci
        assert other[name].score == result.score


def test_no_bootstrap_means_no_interval(scorer, pairs) -> None:
    hyps, refs = pairs
    out = scorer.score(hyps[:5], refs[:5], ["bleu", "dist"], bootstrap=0)
    assert all(r.ci is None for r in out.values())
    assert all("bs" not in r.signature and "ci" not in r.signature for r in out.values())


def test_signatures_name_how_each_number_was_computed(results) -> None:
    bleu4 = results["bleu4"].signature_text
    assert bleu4.startswith("bleu4|convention:nltk-corpus|n:4|weights:0.25,0.25,0.25,0.25|")
    for piece in ("tok:nltk-treebank+regex-sent", "smooth:none", "case:mixed", "bs:200", "seed:7"):
        assert piece in bleu4
    assert bleu4.endswith("|version:stickerconv-0.1.0+nltk-3.10.4")
    assert results["bleu3"].signature["weights"] == "1/3"
    sacre = results["sacrebleu4"].signature
    assert (sacre["tok"], sacre["smooth"], sacre["eff"], sacre["scale"]) == ("13a", "exp", "no", "0-100")
    assert sacre["version"].endswith("+sacrebleu-2.6.0")
    assert results["rougeL"].signature["stem"] == "no"
    assert "rouge-score-0.1.2" in results["rougeL"].signature["version"]
    assert results["meteor"].signature["wordnet"] == "debian-3.0"
    assert results["cider"].signature["variant"] == "cider-d(coco-caption)"
    assert results["dist2_corpus"].signature["ci"] == "jackknife"
    assert results["dist2_intra"].signature["form"] == "mean-per-response"
    for result in results.values():
        assert type(result).model_validate_json(result.model_dump_json()) == result
    dumped = results["bleu4"].model_dump(mode="json")
    assert dumped["signature_text"] == bleu4 and dumped["ci"] == list(results["bleu4"].ci)
    assert str(results["bleu4"]).startswith("bleu4 = ")


def test_image_placeholder_is_removed_before_scoring(scorer) -> None:
    out = scorer.score(["<IMG> I hear you, that sounds hard."], ["I hear you, that sounds hard. "], ["bleu4", "cider"])
    assert out["bleu4"].score == pytest.approx(1.0)


def test_metric_names_and_groups(scorer) -> None:
    out = scorer.score(["a b c d"], ["a b c d"], ["rougeL", "dist"], bootstrap=0)
    assert list(out) == ["rougeL"] + [f"dist{n}_{f}" for f in ("intra", "corpus") for n in (1, 2, 3)]


@pytest.mark.parametrize(
    "hyps, refs, metrics, message",
    [
        (["a", "b"], ["a"], None, "2 hypotheses but 1 references"),
        ([], [], None, "nothing to score"),
        (["a"], ["a"], ["bleu5"], "unknown metric 'bleu5'; valid metrics: bleu1, bleu2"),
        ("a b", "a b", None, "hypotheses must be a list of strings"),
        (["a"], [["a", "b"]], None, "references[0] is list, not a string"),
    ],
)
def test_bad_input_says_what_is_wrong(scorer, hyps, refs, metrics, message) -> None:
    with pytest.raises(TextMetricsError, match=message.replace("[", r"\[").replace("]", r"\]")):
        scorer.score(hyps, refs, metrics)


def test_bad_config_lists_valid_values() -> None:
    with pytest.raises(TextMetricsError, match="unknown sacrebleu tokenizer 'moses'; valid: none, zh, 13a"):
        TextScorer(TextMetricsConfig(sacrebleu_tokenize="moses"))
    with pytest.raises(TextMetricsError, match="unknown sacrebleu smoothing 'laplace'; valid: none, floor"):
        TextScorer(TextMetricsConfig(sacrebleu_smooth="laplace"))


def test_empty_hypotheses_score_zero_not_crash(scorer) -> None:
    out = scorer.score(["", ""], ["a reply", "another reply"], OFFLINE_FAST, bootstrap=10)
    assert out["bleu4"].score == 0 and out["rougeL"].score == 0 and out["cider"].score == 0
    assert out["dist1_corpus"].score == 0 and out["dist1_intra"].score == 0
    assert all(not math.isnan(r.score) for r in out.values())
