"""``report.md``: the dataset statistics as a short Markdown page that embeds the PNG figures.

The page sits beside ``stats.json`` and the figures, so it renders on GitHub or in any Markdown
viewer, and its table can be pasted into a paper or a data card.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stickerconv.data.plots import ROLE_NAMES

CAPTIONS = {
    "turns_per_session.png": "Turns per session",
    "words_per_utterance.png": "Words per utterance, user vs assistant",
    "stickers_per_session.png": "Stickers per session",
    "sticker_use_by_role.png": "Sticker use by sender",
    "sticker_emotions_by_role.png": "Sticker emotion by sender",
    "persona_emotions.png": "Persona emotion",
    "emotion_words.png": "Most frequent emotion words",
}


def _row(name: str, value: Any) -> str:
    return f"| {name} | {value} |"


def render_report(stats: dict[str, Any], figures: list[Path]) -> str:
    """The Markdown text; ``figures`` are embedded by file name (they live beside the report)."""
    stickers = stats["stickers"]
    words = stats["words_per_utterance"]
    lines = [
        "# StickerConv dataset statistics",
        "",
        f"Source: `{stats['source']}`",
        "",
        "| Statistic | Value |",
        "|---|---:|",
        _row("Sessions", f"{stats['sessions']:,}"),
        _row("Unique personas / scenarios", f"{stats['unique_personas']:,} / {stats['unique_scenarios']:,}"),
        _row("Turns (total)", f"{stats['turns']['total']:,}"),
        _row("Turns per session (mean, median, max)", _three(stats["turns"])),
        _row("Words per utterance, all (mean, median, max)", _three(words["all"])),
    ]
    for role in ("user", "system"):
        lines.append(_row(f"Words per {ROLE_NAMES[role]} utterance (mean, median, max)", _three(words[role])))
    lines += [
        _row("Stickers (total / unique)", f"{stickers['total']:,} / {stickers['unique']:,}"),
        _row("Stickers per session (mean, median, max)", _three(stickers["per_session"])),
        _row("Sessions without a sticker", f"{stickers['sessions_without_sticker']:,}"),
    ]
    for role, use in stickers["by_role"].items():
        lines.append(
            _row(
                f"{ROLE_NAMES[role].capitalize()} stickers (share of stickers; of turns; of sessions)",
                f"{use['stickers']:,} ({use['share_of_stickers']:.1%}; {use['share_of_turns']:.1%}; "
                f"{use['share_of_sessions']:.1%})",
            )
        )
    if stats["skipped_records"]:
        lines.append(_row("Records skipped as malformed (run `stickerconv data validate`)", stats["skipped_records"]))
    lines.append("")
    for figure in figures:
        caption = CAPTIONS.get(figure.name, figure.stem)
        lines += [f"## {caption}", "", f"![{caption}]({figure.name})", ""]
    return "\n".join(lines)


def _three(summary: dict[str, Any]) -> str:
    return f"{summary['mean']:.2f}, {summary['median']:g}, {summary['max']}"


def write_report(stats: dict[str, Any], figures: list[Path], out: Path) -> Path:
    path = out / "report.md"
    path.write_text(render_report(stats, figures), encoding="utf-8")
    return path
