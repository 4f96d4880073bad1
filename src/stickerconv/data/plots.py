"""PNG figures of the dataset statistics, one per question the paper's statistics answer.

Each function takes the dict that :func:`stickerconv.data.stats.compute_stats` returns and writes one
PNG. Figures are built on matplotlib's object API with the Agg canvas (no pyplot state, no display
needed) and constrained layout, so labels never overlap whatever the data.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import StrMethodFormatter

from stickerconv.schema import EMOTION_LABELS

DPI = 120
THOUSANDS = StrMethodFormatter("{x:,.0f}")
ROLE_COLORS = {"user": "#4C72B0", "system": "#DD8452"}
ROLE_NAMES = {"user": "user", "system": "assistant"}
LABEL_COLORS = {
    "Anger": "#C44E52",
    "Disgust": "#8C8C3C",
    "Fear": "#8172B3",
    "Happiness": "#F2B701",
    "Neutral": "#937860",
    "Sadness": "#4C72B0",
    "Surprise": "#55A868",
    "unlabelled": "#BBBBBB",
    "unknown": "#BBBBBB",
}


def _figure(width: float = 7.0, height: float = 4.2) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    for ax in fig.axes:  # counts as 12,500, not 12500 or 1.25e4
        if ax.get_xlabel() == "occurrences":
            ax.xaxis.set_major_formatter(THOUSANDS)
        elif ax.get_ylabel() in ("sessions", "utterances"):
            ax.yaxis.set_major_formatter(THOUSANDS)
    fig.savefig(path)
    return path


def _count_bars(ax: Axes, histogram: dict[str, int], color: str) -> None:
    keys = list(histogram)
    values = [histogram[k] for k in keys]
    bars = ax.bar(keys, values, color=color)
    total = max(sum(values), 1)
    labels = [f"{v / total:.0%}" if v / total >= 0.005 else "" for v in values]
    ax.bar_label(bars, labels=labels, fontsize=8, padding=2)
    ax.set_ylim(0, max(values, default=1) * 1.15 or 1)
    ax.spines[["top", "right"]].set_visible(False)


def turns_per_session(stats: dict[str, Any], path: Path) -> Path:
    fig = _figure()
    ax = fig.add_subplot()
    _count_bars(ax, stats["turns"]["histogram"], "#4C72B0")
    ax.set(
        title=f"Turns per session ({stats['sessions']:,} sessions, mean {stats['turns']['mean']:.2f})",
        xlabel="turns in the session",
        ylabel="sessions",
    )
    return _save(fig, path)


def stickers_per_session(stats: dict[str, Any], path: Path) -> Path:
    fig = _figure()
    ax = fig.add_subplot()
    per = stats["stickers"]["per_session"]
    _count_bars(ax, per["histogram"], "#55A868")
    ax.set(
        title=f"Stickers per session (mean {per['mean']:.2f}; {stats['stickers']['unique']:,} unique stickers)",
        xlabel="stickers in the session (user and assistant)",
        ylabel="sessions",
    )
    return _save(fig, path)


def words_per_utterance(stats: dict[str, Any], path: Path) -> Path:
    fig = _figure()
    ax = fig.add_subplot()
    words = stats["words_per_utterance"]
    upper = max(_percentile(words[role]["histogram"], 0.99) for role in ROLE_COLORS)
    for role, color in ROLE_COLORS.items():
        hist = {int(k): v for k, v in words[role]["histogram"].items()}
        values = [min(k, upper) for k in hist]
        ax.hist(
            values,
            weights=list(hist.values()),
            bins=range(0, upper + 2),
            histtype="stepfilled",
            alpha=0.45,
            color=color,
            label=f"{ROLE_NAMES[role]} (median {words[role]['median']:g})",
        )
    ax.set(
        title=f"Words per utterance (the last bin holds everything from {upper} words on)",
        xlabel="words (whitespace-separated)",
        ylabel="utterances",
    )
    ax.legend(frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return _save(fig, path)


def _percentile(histogram: dict[str, int], q: float) -> int:
    total = sum(histogram.values())
    seen = 0
    for key in sorted(histogram, key=int):
        seen += histogram[key]
        if seen >= q * total:
            return max(int(key), 1)
    return 1


def sticker_emotions_by_role(stats: dict[str, Any], path: Path) -> Path:
    fig = _figure(8.0, 4.4)
    ax = fig.add_subplot()
    by_role = stats["sticker_emotions"]
    labels = [label for label in (*EMOTION_LABELS, "unlabelled") if any(label in by_role[r] for r in ROLE_COLORS)]
    width = 0.4
    for offset, (role, color) in zip((-width / 2, width / 2), ROLE_COLORS.items(), strict=True):
        counts = by_role[role]
        total = max(sum(counts.values()), 1)
        shares = [100 * counts.get(label, 0) / total for label in labels]
        xs = [i + offset for i in range(len(labels))]
        ax.bar(xs, shares, width, color=color, label=f"{ROLE_NAMES[role]} stickers (n={sum(counts.values()):,})")
    ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right")
    ax.set_ylim(0, max(ax.get_ylim()[1], 1) * 1.2)  # headroom: the legend sits above the bars
    ax.set(title="Sticker emotion (SER30K label) by sender", ylabel="% of the sender's stickers")
    ax.legend(frameon=False, loc="upper center", ncols=2)
    ax.spines[["top", "right"]].set_visible(False)
    return _save(fig, path)


def sticker_use_by_role(stats: dict[str, Any], path: Path) -> Path:
    fig = _figure(6.0, 3.8)
    ax = fig.add_subplot()
    by_role = stats["stickers"]["by_role"]
    groups = (("share_of_turns", "turns with a sticker"), ("share_of_sessions", "sessions with a sticker"))
    width = 0.38
    for offset, (role, color) in zip((-width / 2, width / 2), ROLE_COLORS.items(), strict=True):
        values = [100 * by_role[role][key] for key, _ in groups]
        bars = ax.bar([i + offset for i in range(len(groups))], values, width, color=color, label=ROLE_NAMES[role])
        ax.bar_label(bars, fmt="%.1f%%", fontsize=8, padding=2)
    ax.set_xticks(range(len(groups)), [name for _, name in groups])
    ax.set_ylim(0, 125)  # headroom: the legend sits above the bars
    ax.set(title="Sticker use: user vs assistant", ylabel="%")
    ax.legend(frameon=False, loc="upper center", ncols=2)
    ax.spines[["top", "right"]].set_visible(False)
    return _save(fig, path)


def persona_emotions(stats: dict[str, Any], path: Path) -> Path:
    fig = _figure()
    ax = fig.add_subplot()
    counts = stats["persona_emotions"]
    labels = list(counts)
    bars = ax.bar(labels, [counts[k] for k in labels], color=[LABEL_COLORS.get(k, "#999999") for k in labels])
    ax.bar_label(bars, fmt="{:,.0f}", fontsize=8, padding=2)
    ax.set_ylim(0, max(counts.values(), default=1) * 1.15 or 1)
    ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right")
    ax.set(title="Persona emotion (normalised to the 7 classes)", ylabel="sessions")
    if "unknown" in counts:
        ax.set_xlabel("unknown: no meta.persona_emotion and no match in --profiles", fontsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    return _save(fig, path)


def emotion_words(stats: dict[str, Any], path: Path) -> Path:
    words = stats["emotion_words"]
    rows = max((len(words[r]) for r in ROLE_COLORS), default=1)
    fig = _figure(9.0, max(3.0, 0.28 * rows + 1.4))
    axes = fig.subplots(1, 2)
    for ax, role in zip(axes, ROLE_COLORS, strict=True):
        entries = list(reversed(words[role]))
        if not entries:
            ax.text(0.5, 0.5, "no emotion words", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
        ax.barh(
            [e["word"] for e in entries],
            [e["count"] for e in entries],
            color=[LABEL_COLORS[e["label"]] for e in entries],
        )
        ax.set(title=f"{ROLE_NAMES[role].capitalize()} messages", xlabel="occurrences")
        ax.tick_params(axis="y", labelsize=8)
        ax.spines[["top", "right"]].set_visible(False)
    used = sorted({e["label"] for r in ROLE_COLORS for e in words[r]}, key=EMOTION_LABELS.index)
    handles = [Patch(color=LABEL_COLORS[label], label=label) for label in used]
    fig.legend(handles=handles, loc="outside lower center", ncols=max(len(used), 1), frameon=False, fontsize=8)
    fig.suptitle("Most frequent emotion words (colour: the lexicon's emotion)")
    return _save(fig, path)


PLOTS: dict[str, Callable[[dict[str, Any], Path], Path]] = {
    "turns_per_session.png": turns_per_session,
    "words_per_utterance.png": words_per_utterance,
    "stickers_per_session.png": stickers_per_session,
    "sticker_use_by_role.png": sticker_use_by_role,
    "sticker_emotions_by_role.png": sticker_emotions_by_role,
    "persona_emotions.png": persona_emotions,
    "emotion_words.png": emotion_words,
}


def write_plots(stats: dict[str, Any], out: Path) -> list[Path]:
    """Every figure into ``out``; returns the paths in report order."""
    out.mkdir(parents=True, exist_ok=True)
    return [plot(stats, out / name) for name, plot in PLOTS.items()]
