"""The statistics the StickerConv paper reports, computed in one streaming pass over plain dicts.

Sessions, turns per session, words per utterance, total and unique stickers, stickers per session,
user vs assistant sticker use, the sticker emotion distribution by role, the persona emotion
distribution and the most frequent emotion words. The pass reads records as dicts (no pydantic
object per session) so 100k sessions take seconds; ``data validate`` is the strict path, and records
too malformed to count are skipped and counted here.

Emotion words are the tokens the running-text lexicon of
:mod:`stickerconv.stickers.emotion_lexicon` assigns to one of the 7 labels (its stems with inflections,
e.g. ``worried``, ``anxiety``, ``heartbroken``); every distinct token is looked up once. Persona
emotions come from ``meta.persona_emotion`` (our runs) or from a profiles file joined on persona and
situation (the published records carry no emotion), normalised to the 7 classes.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stickerconv.data.io import DataSource, Progress, accumulate
from stickerconv.schema import EMOTION_LABELS, normalise_emotion, sticker_id_from_path
from stickerconv.stickers.emotion_lexicon import text_emotions

ROLES = ("user", "system")
UNLABELLED = "unlabelled"
UNKNOWN = "unknown"
TOP_WORDS = 20
_WORD = re.compile(r"[a-z][a-z'-]*")
_FLUSH_CHARS = 1 << 20  # utterance text buffered per role before tokenising in one call


@dataclass
class _RoleCounts:
    words: Counter[int] = field(default_factory=Counter)  # words per utterance -> utterances
    stickers: int = 0
    labels: Counter[str] = field(default_factory=Counter)
    sessions_with_sticker: int = 0
    tokens: Counter[str] = field(default_factory=Counter)
    buffer: list[str] = field(default_factory=list)
    buffered: int = 0

    def add_text(self, text: str) -> None:
        self.words[len(text.split())] += 1
        self.buffer.append(text)
        self.buffered += len(text)
        if self.buffered >= _FLUSH_CHARS:
            self.flush()

    def flush(self) -> None:
        self.tokens.update(_WORD.findall("\n".join(self.buffer).lower()))
        self.buffer.clear()
        self.buffered = 0


def _persona_key(persona: str, status: str) -> tuple[str, str]:
    return persona.strip(), status.strip()


def profile_emotions(profiles: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], str]:
    """(persona, situation) -> raw emotion, from published-format profiles."""
    return {_persona_key(p["persona"], p["situation"]): p["emotion"] for p in profiles}


class StatsAccumulator:
    """Feed records with :meth:`add`; :meth:`result` gives the statistics as a JSON-ready dict."""

    def __init__(self, persona_emotions: Mapping[tuple[str, str], str] | None = None):
        self.persona_emotions = persona_emotions or {}
        self.sessions = 0
        self.skipped = 0
        self.turns: Counter[int] = Counter()
        self.stickers_per_session: Counter[int] = Counter()
        self.roles = {role: _RoleCounts() for role in ROLES}
        self.images: set[str] = set()  # unique by portable id at the end: few distinct paths, many uses
        self.personas: set[str] = set()
        self.scenarios: set[str] = set()
        self.persona_labels: Counter[str] = Counter()
        self.turns_with_sticker = {role: 0 for role in ROLES}

    def add(self, record: Any) -> None:
        """Count one record; one that does not have the published shape is skipped and counted."""
        try:
            turns = record["conversation"]
            persona, status = record["user_persona"], record["user_status"]
            texts = [(t["user_message"], t["system_message"], t["user_sticker"], t["system_sticker"]) for t in turns]
            stickers = [s["image"] for _, _, u, a in texts for s in (u, a) if s is not None]
        except (KeyError, TypeError):
            self.skipped += 1
            return
        if not all(isinstance(x, str) for x in (persona, status, *stickers)) or not all(
            isinstance(u, str) and isinstance(a, str) for u, a, _, _ in texts
        ):
            self.skipped += 1
            return
        self.sessions += 1
        self.turns[len(texts)] += 1
        self.personas.add(persona)
        self.scenarios.add(status)
        self.persona_labels[self._persona_label(record, persona, status)] += 1
        self.stickers_per_session[len(stickers)] += 1
        self.images.update(stickers)
        used = dict.fromkeys(ROLES, False)
        for user_text, system_text, user_sticker, system_sticker in texts:
            for role, text, sticker in (("user", user_text, user_sticker), ("system", system_text, system_sticker)):
                counts = self.roles[role]
                counts.add_text(text)
                if sticker is not None:
                    counts.stickers += 1
                    label = sticker.get("origin_anno")
                    counts.labels[label if label in EMOTION_LABELS else UNLABELLED] += 1
                    used[role] = True
        for role in ROLES:
            self.roles[role].sessions_with_sticker += used[role]

    def _persona_label(self, record: Mapping[str, Any], persona: str, status: str) -> str:
        meta = record.get("meta")
        raw = meta.get("persona_emotion") if isinstance(meta, dict) else None
        if raw is None:
            raw = self.persona_emotions.get(_persona_key(persona, status))
        if not isinstance(raw, str):
            return UNKNOWN
        try:
            return normalise_emotion(raw).value
        except ValueError:
            return UNKNOWN

    def result(self) -> dict[str, Any]:
        for counts in self.roles.values():
            counts.flush()
        n = max(self.sessions, 1)
        total_stickers = sum(c.stickers for c in self.roles.values())
        total_turns = sum(k * v for k, v in self.turns.items())
        return {
            "sessions": self.sessions,
            "skipped_records": self.skipped,
            "unique_personas": len(self.personas),
            "unique_scenarios": len(self.scenarios),
            "turns": {"total": total_turns, **_summary(self.turns), "histogram": _hist(self.turns)},
            "words_per_utterance": {
                role: {**_summary(c.words), "histogram": _hist(c.words)} for role, c in self.roles.items()
            }
            | {"all": _summary(self.roles["user"].words + self.roles["system"].words)},
            "stickers": {
                "total": total_stickers,
                "unique": len({sticker_id_from_path(image) for image in self.images}),
                "per_session": {**_summary(self.stickers_per_session), "histogram": _hist(self.stickers_per_session)},
                "sessions_without_sticker": self.stickers_per_session.get(0, 0),
                "by_role": {
                    role: {
                        "stickers": c.stickers,
                        "share_of_stickers": round(c.stickers / max(total_stickers, 1), 4),
                        "share_of_turns": round(c.stickers / max(total_turns, 1), 4),
                        "sessions_with_sticker": c.sessions_with_sticker,
                        "share_of_sessions": round(c.sessions_with_sticker / n, 4),
                    }
                    for role, c in self.roles.items()
                },
            },
            "sticker_emotions": {role: _labelled(c.labels, UNLABELLED) for role, c in self.roles.items()},
            "persona_emotions": _labelled(self.persona_labels, UNKNOWN),
            "emotion_words": {role: _emotion_words(c.tokens) for role, c in self.roles.items()},
        }


def _summary(counts: Counter[int]) -> dict[str, float]:
    """Mean, median, min and max of values given as value -> count."""
    total = sum(counts.values())
    if not total:
        return {"mean": 0.0, "median": 0.0, "min": 0, "max": 0}
    values = sorted(counts)
    mean = sum(k * v for k, v in counts.items()) / total
    return {"mean": round(mean, 3), "median": _median(counts, total), "min": values[0], "max": values[-1]}


def _median(counts: Counter[int], total: int) -> float:
    lower, upper = (total - 1) // 2, total // 2
    seen, low_value = 0, None
    for value in sorted(counts):
        seen += counts[value]
        if low_value is None and seen > lower:
            low_value = value
        if seen > upper:
            return (low_value + value) / 2
    raise AssertionError("unreachable: counts sum to total")


def _hist(counts: Counter[int]) -> dict[str, int]:
    return {str(k): counts[k] for k in sorted(counts)}


def _labelled(counts: Counter[str], other: str) -> dict[str, int]:
    """Counts in the fixed label order (zeros included), then the catch-all bucket if used."""
    out = {label: counts.get(label, 0) for label in EMOTION_LABELS}
    if counts.get(other):
        out[other] = counts[other]
    return out


def _emotion_words(tokens: Counter[str]) -> list[dict[str, Any]]:
    """The most frequent tokens that the emotion lexicon assigns to exactly one label."""
    found = []
    for word, count in tokens.most_common():
        labels = text_emotions(word)
        if len(labels) == 1:
            found.append({"word": word, "count": count, "label": next(iter(labels)).value})
            if len(found) == TOP_WORDS:
                break
    return found


def compute_stats(
    path: Path | str | DataSource,
    persona_emotions: Mapping[tuple[str, str], str] | None = None,
    on_progress: Progress = None,
) -> dict[str, Any]:
    """Statistics of every record behind ``path`` (unparseable lines are counted as skipped); a file of
    samples or predictions is refused, naming what it holds."""
    acc = StatsAccumulator(persona_emotions)
    source = accumulate(path, acc, on_progress)
    return {"source": str(source.path), **acc.result()}
