"""``quality.json``, plots and ``quality.md`` (one column per input file) from ``dataset_quality`` results."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROWS: list[tuple[str, str, str]] = [  # (label, path into the result, format)
    ("sessions", "sessions", "{:,}"),
    ("turns per session", "turns_per_session", "{:.2f}"),
    ("user Dist-1 / 2 / 3 (corpus)", "diversity.user_dist{n}_corpus", "{:.3f}"),
    ("assistant Dist-1 / 2 / 3 (corpus)", "diversity.system_dist{n}_corpus", "{:.3f}"),
    ("user Dist-1 / 2 / 3 (per response)", "diversity.user_dist{n}_intra", "{:.3f}"),
    ("assistant Dist-1 / 2 / 3 (per response)", "diversity.system_dist{n}_intra", "{:.3f}"),
    ("user self-BLEU-4 (lower = more diverse)", "diversity.user_self_bleu4", "{:.3f}"),
    ("assistant self-BLEU-4", "diversity.system_self_bleu4", "{:.3f}"),
    ("distinct opening lines (share of sessions)", "diversity.distinct_openings", "{:.3f}"),
    ("exact repeats (share of utterances)", "repetition.exact_repeat_share", "{:.3f}"),
    ("near repeats (share of utterances)", "repetition.near_repeat_share", "{:.3f}"),
    ("sessions ended by the repetition guard", "repetition.sessions_ended_by_repetition", "{:.3f}"),
    ("stickers per session", "stickers.per_session", "{:.2f}"),
    ("turns with a user sticker", "stickers.turn_share.user", "{:.3f}"),
    ("turns with an assistant sticker", "stickers.turn_share.system", "{:.3f}"),
    ("unique stickers", "stickers.unique", "{:,}"),
    ("top-10 stickers' share of all uses", "stickers.top10_share", "{:.3f}"),
    ("user sticker label = message emotion", "emotion_agreement.user.label_match", "{:.3f}"),
    ("assistant sticker label = message emotion", "emotion_agreement.system.label_match", "{:.3f}"),
    ("user sticker/text polarity conflicts", "emotion_agreement.user.polarity_conflict", "{:.3f}"),
    ("assistant sticker/text polarity conflicts", "emotion_agreement.system.polarity_conflict", "{:.3f}"),
    ("judge: empathy of the assistant (1-5)", "judges.empathy_mean.score", "{:.2f}"),
    ("judge: consistency of the assistant (1-5)", "judges.consistency_mean.score", "{:.2f}"),
]


def _get(result: dict[str, Any], path: str) -> Any:
    value: Any = result
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _cell(result: dict[str, Any], path: str, fmt: str) -> str:
    if "{n}" in path:
        values = [_get(result, path.format(n=n)) for n in (1, 2, 3)]
        return " / ".join("-" if v is None else fmt.format(v) for v in values)
    value = _get(result, path)
    return "-" if value is None else fmt.format(value)


def plot_trajectories(results: Sequence[dict[str, Any]], names: Sequence[str], path: Path) -> Path | None:
    """One panel per starting emotion, one line per input; None when no input has a session."""
    groups = sorted({g for r in results for g in r["user_sentiment_by_turn"]})
    if not groups:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 3.8), sharey=True, squeeze=False)
    for ax, group in zip(axes[0], groups, strict=True):
        for name, result in zip(names, results, strict=True):
            values = result["user_sentiment_by_turn"].get(group)
            if values:
                turns = [t + 1 for t, v in enumerate(values) if v is not None]
                ax.plot(turns, [v for v in values if v is not None], marker="o", label=name)
        n = ", ".join(
            f"{name}: {r['sessions_by_start'].get(group, 0):,}" for name, r in zip(names, results, strict=True)
        )
        ax.set_title(f"{group} start\n(sessions: {n})", fontsize=9)
        ax.set_xlabel("turn")
        ax.axhline(0, color="grey", linewidth=0.6)
        ax.spines[["top", "right"]].set_visible(False)
    axes[0][0].set_ylabel("mean user sentiment (VADER)")
    axes[0][-1].legend(frameon=False, fontsize=8)
    fig.suptitle("User sentiment by turn, by starting emotion")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def render_quality(results: Sequence[dict[str, Any]], names: Sequence[str], figure: str | None) -> str:
    lines = ["# Dataset quality", "", "| | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for label, path, fmt in ROWS:
        cells = [_cell(r, path, fmt) for r in results]
        if path.startswith("judges.") and all(c == "-" for c in cells):
            continue  # no input was judged
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "User sentiment by turn (mean VADER compound), by starting emotion:", ""]
    groups = sorted({g for r in results for g in r["user_sentiment_by_turn"]})
    for group in groups:
        for name, result in zip(names, results, strict=True):
            values = result["user_sentiment_by_turn"].get(group) or []
            shown = ", ".join("-" if v is None else f"{v:+.3f}" for v in values)
            lines.append(f"- {group} start, `{name}` ({result['sessions_by_start'].get(group, 0):,} sessions): {shown}")
    if figure:
        lines += ["", f"![user sentiment by turn]({figure})"]
    lines += ["", "## How each figure is computed", ""]
    lines += [f"- {key}: {text}" for key, text in results[0]["methods"].items()]
    judged = {name: r["judges"] for name, r in zip(names, results, strict=True) if r.get("judges")}
    for name, metrics in judged.items():
        lines += [f"- judges (`{name}`): " + "; ".join(f"`{m['signature_text']}`" for m in metrics.values())]
    lines += ["", "Sources: " + ", ".join(f"`{n}` = {r['source']}" for n, r in zip(names, results, strict=True))]
    return "\n".join(lines) + "\n"


def write_quality(results: Sequence[dict[str, Any]], names: Sequence[str], out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    payload = {name: result for name, result in zip(names, results, strict=True)}
    (out / "quality.json").write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    figure = plot_trajectories(results, names, out / "sentiment_by_turn.png")
    path = out / "quality.md"
    path.write_text(render_quality(results, names, figure.name if figure else None), encoding="utf-8")
    return path
