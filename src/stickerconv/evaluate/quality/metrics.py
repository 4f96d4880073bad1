"""What a StickerConv dataset is worth, measured: diversity, repetition, sticker use, sticker/text
emotion agreement and the user's emotional trajectory, for one or more files side by side.

Every figure is computed in one streaming pass over the records (dicts, not validated objects, so
100k sessions take minutes), except self-BLEU, which compares a seeded sample of utterances with
each other. Message emotion comes from the offline lexicon of
``stickers.emotion_lexicon`` (the 7 labels) and sentiment from VADER; both are named in the
report's method fields. Judge scores on a sample come from ``evaluate.judges`` when asked for.
"""

from __future__ import annotations

import random
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stickerconv.data.io import accumulate
from stickerconv.evaluate.text.distinct import ORDERS, corpus_score, intra_statistic
from stickerconv.schema import EmotionLabel, normalise_emotion

ROLES = ("user", "system")
NEGATIVE = {"Anger", "Disgust", "Fear", "Sadness"}
POSITIVE = {"Happiness"}
VADER_CUTOFF = 0.05  # VADER's own |compound| from which a text counts as positive / negative
CONFLICT_CUTOFF = 0.3  # the stricter cut-off of a sticker/text polarity conflict


@dataclass(frozen=True)
class QualityConfig:
    self_bleu_sample: int = 1000  # utterances per role, each compared with all the others
    near_repeat: float = 0.8  # token-set Jaccard at or above which an utterance near-repeats an earlier one
    max_turns: int = 6  # trajectory positions reported
    seed: int = 0


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def _normal(text: str) -> str:
    return " ".join(_words(text))


def _label(sticker: Mapping[str, Any] | None) -> str | None:
    if not isinstance(sticker, Mapping):
        return None
    value = sticker.get("origin_anno") or sticker.get("label")
    return value if value in EmotionLabel._value2member_map_ else None


def _sticker_key(sticker: Mapping[str, Any]) -> str:
    return str(sticker.get("id") or sticker.get("image"))


def _message_label(text: str) -> str | None:
    """The message's dominant emotion by the lexicon, or None when it names no emotion."""
    from stickerconv.stickers.emotion_lexicon import text_emotions

    shares = text_emotions(text)
    return max(shares, key=lambda label: (shares[label], label.value)).value if shares else None


def label_polarity(label: str) -> str:
    """An emotion label's polarity: Happiness positive; Anger, Disgust, Fear, Sadness negative; Neutral and
    Surprise neutral (a surprise can be good news or bad)."""
    return "positive" if label in POSITIVE else "negative" if label in NEGATIVE else "neutral"


def compound_polarity(compound: float, cutoff: float = VADER_CUTOFF) -> str:
    """``positive`` / ``negative`` from a VADER compound at or beyond ``cutoff``, else ``neutral``."""
    return "positive" if compound >= cutoff else "negative" if compound <= -cutoff else "neutral"


def message_polarity(text: str, cutoff: float = VADER_CUTOFF) -> str:
    """A message's polarity by VADER's compound (:func:`compound_polarity`); the counterpart of
    :func:`label_polarity` when a sticker's label is compared with the text it comes with."""
    from stickerconv.stickers.emotion_lexicon import polarity

    return compound_polarity(polarity(text), cutoff)


def _start_group(meta: Mapping[str, Any] | None, first_sentiment: float) -> str:
    """The persona's starting emotion class: from run metadata when present, else the first message's sentiment."""
    label = None
    if isinstance(meta, Mapping):
        label = meta.get("persona_label")
        if label is None and meta.get("persona_emotion"):
            try:
                label = normalise_emotion(meta["persona_emotion"]).value
            except ValueError:
                label = None
    return label_polarity(label) if label is not None else compound_polarity(first_sentiment)


def self_bleu(tokens: list[list[str]], max_n: int = 4) -> float:
    """NLTK's corpus BLEU-4 (smoothing method1) of every sentence against all the others, in one pass.

    Each sentence's references are all the other sentences, so the clipping count of an n-gram is
    its largest count in any *other* sentence: the top count over all sentences, or the second one
    for the sentence that holds the top. That makes self-BLEU linear in the n-grams instead of
    quadratic (tested equal to ``nltk.translate.bleu_score.corpus_bleu`` to 1e-12).
    """
    import math

    if len(tokens) < 2:
        raise ValueError("self-BLEU needs at least two sentences")
    counts = [
        [Counter(tuple(t[j : j + n]) for j in range(len(t) - n + 1)) for n in range(1, max_n + 1)] for t in tokens
    ]
    numerators, denominators = [0] * max_n, [0] * max_n
    for n in range(max_n):
        top: dict[tuple[str, ...], tuple[int, int, int]] = {}  # gram -> (top count, its sentence, second count)
        for i, per_n in enumerate(counts):
            for gram, c in per_n[n].items():
                first, holder, second = top.get(gram, (0, -1, 0))
                top[gram] = (c, i, first) if c > first else (first, holder, max(second, c))
        for i, per_n in enumerate(counts):
            for gram, c in per_n[n].items():
                first, holder, second = top[gram]
                numerators[n] += min(c, second if holder == i else first)
            denominators[n] += max(1, sum(per_n[n].values()))
    lengths = [len(t) for t in tokens]
    ordered = sorted(lengths)
    ref_total = 0
    for length in lengths:
        others = ordered.copy()
        others.remove(length)
        ref_total += min(others, key=lambda r: (abs(r - length), r))
    hyp_total = sum(lengths)
    if numerators[0] == 0:
        return 0.0
    precisions = [(num if num else 0.1) / den for num, den in zip(numerators, denominators, strict=True)]
    brevity = 1.0 if hyp_total > ref_total else (math.exp(1 - ref_total / hyp_total) if hyp_total else 0.0)
    return brevity * math.exp(sum(math.log(p) / max_n for p in precisions))


def _self_bleu(texts: list[str], sample: int, seed: int) -> float | None:
    """Self-BLEU-4 of a seeded sample of utterances (higher = less diverse)."""
    if len(texts) < 2:
        return None
    chosen = random.Random(seed).sample(texts, min(sample, len(texts)))
    return self_bleu([_words(t) for t in chosen])


class QualityAccumulator:
    """Feed records with :meth:`add`; :meth:`result` gives every figure as a JSON-ready dict."""

    def __init__(self, config: QualityConfig | None = None):
        from stickerconv.stickers.emotion_lexicon import polarity

        self.polarity = polarity
        self.config = config or QualityConfig()
        self.sessions = self.skipped = 0
        self.turns = 0
        self.utterances: dict[str, list[str]] = {r: [] for r in ROLES}
        self.openings: Counter[str] = Counter()
        self.repeats = self.near_repeats = self.utterance_count = 0
        self.end_reasons: Counter[str] = Counter()
        self.with_meta = 0
        self.stickers: dict[str, int] = dict.fromkeys(ROLES, 0)
        self.sticker_uses: Counter[str] = Counter()
        self.agreement: dict[str, Counter[str]] = {r: Counter() for r in ROLES}
        self.trajectory: dict[str, list[list[float]]] = defaultdict(lambda: [[] for _ in range(self.config.max_turns)])

    def add(self, record: Any) -> None:
        try:
            turns = record["conversation"]
            messages = [
                (t["user_message"], t["system_message"], t.get("user_sticker"), t.get("system_sticker")) for t in turns
            ]
        except (KeyError, TypeError):
            self.skipped += 1
            return
        if not messages or not all(isinstance(u, str) and isinstance(s, str) for u, s, _, _ in messages):
            self.skipped += 1
            return
        self.sessions += 1
        self.turns += len(messages)
        meta = record.get("meta")
        if isinstance(meta, Mapping) and "end_reason" in meta:
            self.with_meta += 1
            self.end_reasons[str(meta["end_reason"])] += 1
        self.openings[_normal(messages[0][0])] += 1
        seen: list[set[str]] = []
        seen_exact: set[str] = set()
        user_sentiments = []
        for user_text, system_text, user_sticker, system_sticker in messages:
            for role, text, sticker in (("user", user_text, user_sticker), ("system", system_text, system_sticker)):
                self.utterances[role].append(text)
                self.utterance_count += 1
                key, words = _normal(text), set(_words(text))
                if key in seen_exact:
                    self.repeats += 1
                elif words and any(len(words & w) / len(words | w) >= self.config.near_repeat for w in seen if w):
                    self.near_repeats += 1
                seen_exact.add(key)
                seen.append(words)
                if isinstance(sticker, Mapping):
                    self.stickers[role] += 1
                    self.sticker_uses[_sticker_key(sticker)] += 1
                    self._agree(role, text, _label(sticker))
            user_sentiments.append(self.polarity(user_text))
        group = _start_group(meta, user_sentiments[0])
        for position, value in enumerate(user_sentiments[: self.config.max_turns]):
            self.trajectory[group][position].append(value)

    def _agree(self, role: str, text: str, sticker_label: str | None) -> None:
        counts = self.agreement[role]
        counts["stickers"] += 1
        message_label = _message_label(text)
        if sticker_label is None or message_label is None:
            counts["undecided"] += 1
            return
        counts["decided"] += 1
        counts["label_match"] += message_label == sticker_label
        text_class = compound_polarity(self.polarity(text), CONFLICT_CUTOFF)
        counts["polarity_conflict"] += {text_class, label_polarity(sticker_label)} == {"negative", "positive"}

    def result(self) -> dict[str, Any]:
        cfg = self.config
        diversity: dict[str, Any] = {}
        for role, texts in self.utterances.items():
            tokens = [_words(t) for t in texts]
            for n in ORDERS:
                if tokens:
                    _, per_item = intra_statistic(tokens, n)
                    diversity[f"{role}_dist{n}_intra"] = (
                        float(np.nanmean(per_item)) if np.isfinite(per_item).any() else 0.0
                    )
                    diversity[f"{role}_dist{n}_corpus"] = corpus_score(tokens, n)[0]
            diversity[f"{role}_self_bleu4"] = _self_bleu(texts, cfg.self_bleu_sample, cfg.seed)
        diversity["distinct_openings"] = len(self.openings) / self.sessions if self.sessions else 0.0
        uses = sum(self.sticker_uses.values())
        top10 = sum(n for _, n in self.sticker_uses.most_common(10))
        agreement = {}
        for role, counts in self.agreement.items():
            decided = counts["decided"]
            agreement[role] = {
                "stickers": counts["stickers"],
                "decided": decided,  # both the sticker's label and the message's lexicon emotion known
                "label_match": counts["label_match"] / decided if decided else None,
                "polarity_conflict": counts["polarity_conflict"] / decided if decided else None,
            }
        trajectory = {
            group: [round(float(np.mean(v)), 4) if v else None for v in positions]
            for group, positions in sorted(self.trajectory.items())
        }
        sessions_per_group = {group: len(positions[0]) for group, positions in sorted(self.trajectory.items())}
        return {
            "sessions": self.sessions,
            "skipped": self.skipped,
            "turns_per_session": self.turns / self.sessions if self.sessions else 0.0,
            "diversity": diversity,
            "repetition": {
                "exact_repeat_share": self.repeats / self.utterance_count if self.utterance_count else 0.0,
                "near_repeat_share": self.near_repeats / self.utterance_count if self.utterance_count else 0.0,
                "sessions_ended_by_repetition": (
                    self.end_reasons["repetition"] / self.with_meta if self.with_meta else None
                ),
                "end_reasons": dict(self.end_reasons) or None,
            },
            "stickers": {
                "per_session": uses / self.sessions if self.sessions else 0.0,
                "turn_share": {r: self.stickers[r] / self.turns if self.turns else 0.0 for r in ROLES},
                "unique": len(self.sticker_uses),
                "top10_share": top10 / uses if uses else None,
            },
            "emotion_agreement": agreement,
            "user_sentiment_by_turn": trajectory,
            "sessions_by_start": sessions_per_group,
            "methods": {
                "message_emotion": "stickerconv emotion lexicon (7 labels), dominant label",
                "sentiment": "VADER compound; polarity conflict at |compound| >= 0.3",
                "near_repeat": f"token-set Jaccard >= {cfg.near_repeat} with an earlier utterance of the session",
                "self_bleu": (
                    f"NLTK corpus BLEU-4, smoothing method1, {cfg.self_bleu_sample} sampled utterances, seed {cfg.seed}"
                ),
                "start_group": "persona label from run metadata, else the sign of the first user message's sentiment",
            },
        }


def dataset_quality(
    path: Path | str, config: QualityConfig | None = None, on_progress: Callable[[int, int], None] | None = None
) -> dict[str, Any]:
    """Every quality figure of the records behind ``path`` (unparseable lines are counted as skipped)."""
    acc = QualityAccumulator(config)
    accumulate(path, acc, on_progress)
    return {"source": str(path), **acc.result()}


def judge_items(path: Path | str, sample: int, seed: int = 0) -> list[dict[str, Any]]:
    """A seeded sample of the dataset's assistant turns as judge records: the dataset's own reply (and
    sticker) stands where a system's prediction would."""
    from stickerconv.data.io import iter_conversations
    from stickerconv.data.samples import DEFAULT_STYLE, render_samples

    samples = [
        s.model_dump(mode="json")
        for _, conversation in iter_conversations(path)
        for s in render_samples(conversation, DEFAULT_STYLE, lambda sticker: sticker.image)
    ]
    chosen = sorted(random.Random(seed).sample(range(len(samples)), min(sample, len(samples))))
    return [
        samples[i]
        | {
            "pred_text_response": samples[i]["response_text"],
            "pred_image": samples[i]["response_image"],
            "pred_image_metadata": samples[i]["response_image_metadata"],
        }
        for i in chosen
    ]


async def judge_quality(records: list[dict[str, Any]], chat: Any, config: Any = None) -> dict[str, Any]:
    """Empathy and consistency judge scores of the records, as JSON-ready metric results."""
    from stickerconv.evaluate.judges.llm_judges import consistency_judge, empathy_judge

    results: dict[str, Any] = {}
    for judge in (empathy_judge(chat, config), consistency_judge(chat, config)):
        report = await judge.judge(records)
        results |= {name: r.model_dump(mode="json", exclude={"per_item"}) for name, r in report.metrics.items()}
    return results
