"""Scores of several prediction files side by side: ``scores.json`` (every result with its interval
and signature), ``report.md`` (one table, systems as columns, signatures listed under it) and a plot
of the metrics on a 0-1 scale with their intervals.
"""

from __future__ import annotations

import json
from pathlib import Path

from stickerconv.evaluate.signature import MetricResult

Scores = dict[str, dict[str, MetricResult]]  # system -> metric -> result
# What a metric beyond the paper measures, printed under the table when it is there: its name alone does not say.
NOTES = {
    "sticker_fit": "`sticker_fit`: the share of predicted stickers whose emotion label fits the user's state (the "
    "label of the user's sticker, else the polarity of the user's message), by the table in "
    "docs/evaluation-multimodal.md named in its signature; `sticker_fit_gt` is the same for the gold stickers. "
    "A text-only system has none.",
}


def _cell(result: MetricResult | None) -> str:
    if result is None:
        return "-"
    interval = f" [{result.ci[0]:.4f}, {result.ci[1]:.4f}]" if result.ci else ""
    return f"{result.score:.4f}{interval}"


def write_scores(scores: Scores, path: Path) -> Path:
    payload = {
        system: {name: r.model_dump(mode="json", exclude={"per_item"}) for name, r in results.items()}
        for system, results in scores.items()
    }
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def plot_scores(scores: Scores, path: Path) -> Path | None:
    """Grouped bars with 95% intervals for the metrics that live on a 0-1 scale (CIDEr and counts do not)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    systems = list(scores)
    metrics = [
        m
        for m in dict.fromkeys(name for results in scores.values() for name in results)
        if all(0.0 <= r[m].score <= 1.0 for r in scores.values() if m in r)
    ]
    if not metrics:
        return None
    width = 0.8 / len(systems)
    fig, ax = plt.subplots(figsize=(max(7.0, 0.45 * len(metrics) * max(1, len(systems)) + 2), 4.5))
    x = np.arange(len(metrics))  # (M,)
    for i, system in enumerate(systems):
        values = [scores[system][m].score if m in scores[system] else np.nan for m in metrics]
        errors = []  # (lower, upper) distances; a percentile interval need not contain the estimate
        for m, v in zip(metrics, values, strict=True):
            ci = scores[system][m].ci if m in scores[system] else None
            errors.append([max(0.0, v - ci[0]), max(0.0, ci[1] - v)] if ci else [0.0, 0.0])
        ax.bar(
            x + (i - (len(systems) - 1) / 2) * width,
            values,
            width,
            label=system,
            yerr=np.array(errors).T if errors else None,
            capsize=2,
        )
    ax.set_xticks(x, metrics, rotation=45, ha="right")
    ax.set_ylabel("score (95% bootstrap interval)")
    ax.set_title("Metrics on a 0-1 scale, by system")
    ax.legend(frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def render_report(scores: Scores, figure: Path | None = None) -> str:
    systems = list(scores)
    metrics = list(dict.fromkeys(name for results in scores.values() for name in results))
    lines = [
        "# Evaluation report",
        "",
        f"Systems: {', '.join(f'`{s}`' for s in systems)}. Cells: score [95% interval].",
        "",
    ]
    lines += ["| metric | " + " | ".join(systems) + " |", "|---|" + "---:|" * len(systems)]
    for metric in metrics:
        lines.append(f"| {metric} | " + " | ".join(_cell(scores[s].get(metric)) for s in systems) + " |")
    items = {s: next(iter(r.values())).n_items for s, r in scores.items() if r}
    lines += ["", "Samples scored: " + ", ".join(f"`{s}` {n}" for s, n in items.items()) + "."]
    for metric, note in NOTES.items():
        if metric in metrics:
            lines += ["", note]
    if figure is not None:
        lines += ["", f"![metrics]({figure.name})"]
    lines += ["", "## Signatures", ""]
    seen: dict[str, None] = {}
    for results in scores.values():
        for result in results.values():
            seen.setdefault(result.signature_text)
    lines += [f"- `{text}`" for text in seen]
    return "\n".join(lines) + "\n"


def write_report(scores: Scores, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    write_scores(scores, out / "scores.json")
    figure = plot_scores(scores, out / "metrics.png")
    path = out / "report.md"
    path.write_text(render_report(scores, figure), encoding="utf-8")
    return path
