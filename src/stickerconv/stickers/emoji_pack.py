"""The embedded default sticker pack: chat-worthy emoji rendered as stickers, with text and labels.

Images come from freely licensed emoji sets installed from package registries (Noto Color Emoji
from Debian; Twemoji and OpenMoji from npm); names, tags and groups come from emojibase-data
(CLDR annotations). The same inputs always give byte-identical output.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import multiprocessing
import os
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stickerconv.schema import EmotionLabel, Sticker
from stickerconv.stickers.embed import cpu_threads
from stickerconv.stickers.emotion_lexicon import EmotionReading, emotion_text, read_emotion
from stickerconv.stickers.library import StickerLibrary
from stickerconv.stickers.render import NotoRenderer, RenderError, SvgRenderer, find_noto_font, png_bytes

log = logging.getLogger(__name__)

INSTALL_HINT = "run scripts/install.sh from the StickerConv checkout (it installs every source)"

# Chat-worthy content: whole groups, minus subgroups that make poor stickers (flags, keycaps,
# arrows, signs, buildings, vehicles, office things, skin-tone/hair components, family glyphs).
INCLUDED_GROUPS = {
    "smileys-emotion",
    "people-body",
    "animals-nature",
    "food-drink",
    "travel-places",
    "activities",
    "objects",
    "symbols",
}
EXCLUDED_SUBGROUPS = {
    "family",
    "person-symbol",
    "place-map",
    "place-building",
    "place-religious",
    "transport-ground",
    "transport-water",
    "transport-air",
    "hotel",
    "time",
    "dishware",
    "phone",
    "computer",
    "writing",
    "office",
    "lock",
    "science",
    "tool",
    "transport-sign",
    "arrow",
    "religion",
    "zodiac",
    "av-symbol",
    "gender",
    "math",
    "currency",
    "keycap",
    "alphanum",
    "geometric",
    "other-symbol",
}
# Single symbols from excluded subgroups that people do send as reactions.
INCLUDED_EXTRA_LABELS = {"check mark button", "cross mark", "hollow red circle", "hourglass done", "alarm clock"}


@dataclass(frozen=True)
class Style:
    name: str
    title: str
    licence: str
    source: str
    attribution: str


STYLES: dict[str, Style] = {
    "noto": Style(
        "noto",
        "Noto Color Emoji",
        "Apache-2.0",
        "Debian package fonts-noto-color-emoji (Google Noto Emoji)",
        "Noto Emoji images (c) Google, licensed under the Apache License 2.0; font under SIL OFL 1.1.",
    ),
    "twemoji": Style(
        "twemoji",
        "Twemoji",
        "CC-BY-4.0",
        "npm package @twemoji/svg (jdecked/twemoji)",
        "Twemoji graphics (c) Twitter, Inc. and other contributors, licensed under CC BY 4.0 "
        "(https://creativecommons.org/licenses/by/4.0/).",
    ),
    "openmoji": Style(
        "openmoji",
        "OpenMoji",
        "CC-BY-SA-4.0",
        "npm package openmoji",
        "OpenMoji graphics (c) the OpenMoji project (https://openmoji.org), licensed under CC BY-SA 4.0; "
        "stickers derived from them are shared alike under the same licence.",
    ),
}
DEFAULT_STYLES = ("noto", "twemoji")


class PackSourceError(RuntimeError):
    """A source that the default pack needs is not installed."""


@dataclass(frozen=True)
class EmojiEntry:
    emoji: str
    hexcode: str
    name: str
    tags: tuple[str, ...]
    group: str
    subgroup: str


@dataclass
class BuildReport:
    out_dir: Path
    stickers: int = 0
    per_style: dict[str, int] = field(default_factory=dict)
    missing: dict[str, list[str]] = field(default_factory=dict)  # style -> hexcodes it cannot draw
    labels: dict[str, int] = field(default_factory=dict)
    label_methods: dict[str, int] = field(default_factory=dict)
    selected_emoji: int = 0
    excluded_emoji: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "stickers": self.stickers,
            "per_style": self.per_style,
            "labels": self.labels,
            "label_methods": self.label_methods,
            "selected_emoji": self.selected_emoji,
            "excluded_emoji": self.excluded_emoji,
            "missing": {style: sorted(codes) for style, codes in self.missing.items()},
        }


# ----------------------------------------------------------------------------- sources


def _asset_roots(explicit: Path | None) -> list[Path]:
    roots = [explicit] if explicit else []
    if env := os.environ.get("STICKERCONV_ASSETS"):
        roots.append(Path(env))
    checkout = Path(__file__).resolve().parents[3]  # src/stickerconv/stickers -> checkout root
    roots += [checkout / "assets" / "node_modules", Path.cwd() / "assets" / "node_modules", Path.cwd() / "node_modules"]
    return roots


def _find_npm(package: str, explicit: Path | None) -> Path | None:
    return next((r / package for r in _asset_roots(explicit) if (r / package).is_dir()), None)


def load_emoji_metadata(assets: Path | None = None) -> list[EmojiEntry]:
    """All base emoji of emojibase-data (English), in emojibase order."""
    root = _find_npm("emojibase-data", assets)
    if root is None:
        looked = ", ".join(str(r) for r in _asset_roots(assets))
        raise PackSourceError(
            f"emoji metadata (npm package emojibase-data) not found; looked in: {looked}. "
            f"Install it with `npm ci --prefix assets`, or {INSTALL_HINT}; "
            "or point --assets / STICKERCONV_ASSETS at a node_modules folder that has it."
        )
    groups = json.loads((root / "meta" / "groups.json").read_text(encoding="utf-8"))
    data = json.loads((root / "en" / "data.json").read_text(encoding="utf-8"))
    entries = []
    for item in data:
        if "group" not in item or "subgroup" not in item:
            continue  # regional indicators and components carry no group
        entries.append(
            EmojiEntry(
                emoji=item["emoji"],
                hexcode=item["hexcode"],
                name=item["label"],
                tags=tuple(item.get("tags", ())),
                group=groups["groups"][str(item["group"])],
                subgroup=groups["subgroups"][str(item["subgroup"])],
            )
        )
    return entries


def select_emoji(entries: Sequence[EmojiEntry]) -> list[EmojiEntry]:
    """The chat-worthy subset (see INCLUDED_GROUPS / EXCLUDED_SUBGROUPS)."""
    return [
        e
        for e in entries
        if e.name in INCLUDED_EXTRA_LABELS or (e.group in INCLUDED_GROUPS and e.subgroup not in EXCLUDED_SUBGROUPS)
    ]


def make_renderer(style: str, assets: Path | None = None, font: Path | None = None) -> Callable[[EmojiEntry], Any]:
    """A function that draws one emoji in ``style``; raises PackSourceError if the source is absent."""
    if style == "noto":
        path = find_noto_font(font)
        if path is None:
            raise PackSourceError(
                "the Noto Color Emoji font is not installed (NotoColorEmoji.ttf not found). "
                f"Install it with `apt-get install fonts-noto-color-emoji`, or {INSTALL_HINT}; "
                "or leave the style out, e.g. --styles twemoji."
            )
        noto = NotoRenderer(path)
        return lambda entry: noto.render(entry.emoji)
    if style in ("twemoji", "openmoji"):
        package, sub = ("@twemoji/svg", "") if style == "twemoji" else ("openmoji", "color/svg")
        folder = _find_npm(package, assets)
        if folder is None:
            hint = "npm ci --prefix assets" if style == "twemoji" else "npm install --prefix assets openmoji@17.0.0"
            raise PackSourceError(
                f"the {STYLES[style].title} images (npm package {package}) are not installed. "
                f"Install them with `{hint}`"
                + (f", or {INSTALL_HINT}" if style == "twemoji" else "")
                + "; or build without this style (--styles noto)."
            )
        svg = SvgRenderer(folder / sub if sub else folder, style)
        return lambda entry: svg.render(entry.hexcode)
    raise ValueError(f"unknown sticker style {style!r}; choose from {', '.join(STYLES)}")


# ----------------------------------------------------------------------------- text


_RECOMMENDATIONS: dict[EmotionLabel, tuple[str, ...]] = {
    EmotionLabel.ANGER: (
        "Use it to vent frustration or to show, half seriously, that something annoyed you.",
        "Send it when you are fed up with a situation and want a friend to know how mad you are.",
    ),
    EmotionLabel.DISGUST: (
        "Use it to react to something gross or unpleasant, or to show playful disapproval.",
        "Send it when a message or situation makes you cringe and you want to say 'ew' without words.",
    ),
    EmotionLabel.FEAR: (
        "Use it when you feel nervous, scared or anxious about something coming up, or to react to a scary story.",
        "Send it to share worry or panic, for example before an exam, an interview or bad news.",
    ),
    EmotionLabel.HAPPINESS: (
        "Use it to share good news, celebrate with a friend or answer a joke with a laugh.",
        "Send it to show warmth, affection or cheer and to brighten someone's day.",
        "Use it to congratulate someone or to say thanks in a friendly, upbeat way.",
    ),
    EmotionLabel.NEUTRAL: (
        "Use it as a light, neutral reaction to acknowledge a message and keep the chat going.",
        "Send it when you want to add a little personality to a message without a strong emotion.",
    ),
    EmotionLabel.SADNESS: (
        "Use it to share disappointment or sadness, or to show you feel for a friend who had bad news.",
        "Send it when things went wrong and you need a little comfort, or to offer sympathy.",
    ),
    EmotionLabel.SURPRISE: (
        "Use it to react to unexpected news, a plot twist or something hard to believe.",
        "Send it when a message leaves you speechless or amazed.",
    ),
}
_TOPIC_HINTS: dict[str, str] = {
    "animals-nature": "It also fits chats about animals, pets and nature.",
    "food-drink": "It also fits chats about food, drinks, meals and cravings.",
    "travel-places": "It also fits chats about the weather, the seasons and the mood of the day.",
    "activities": "It also fits chats about games, sports, hobbies and special occasions.",
    "objects": "It also fits chats about everyday things, music, money and plans.",
}


def _stable_choice(options: Sequence[str], key: str) -> str:
    digest = hashlib.sha256(key.encode()).digest()
    return options[digest[0] % len(options)]


def sticker_texts(entry: EmojiEntry, style: Style, reading: EmotionReading) -> tuple[str, str, str]:
    """``description``, ``emotion`` and ``recommendation`` for one rendered emoji."""
    related = [t for t in entry.tags if t.lower() not in entry.name.lower()][:8]
    description = f"The sticker shows the {entry.name} emoji {entry.emoji} drawn in the {style.title} style."
    if related:
        description += " Related words: " + ", ".join(related) + "."
    recommendation = _stable_choice(_RECOMMENDATIONS[reading.label], entry.hexcode)
    if hint := _TOPIC_HINTS.get(entry.group):
        recommendation += " " + hint
    return description, emotion_text(reading), recommendation


# ----------------------------------------------------------------------------- build


def build_default_pack(
    out_dir: Path,
    styles: Sequence[str] = DEFAULT_STYLES,
    *,
    assets: Path | None = None,
    font: Path | None = None,
    limit: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> BuildReport:
    """Render the pack into ``out_dir`` (images/, stickers.jsonl, ATTRIBUTION.md, build_report.json)."""
    if not styles:
        raise ValueError("no styles given; choose from " + ", ".join(STYLES))
    for style in styles:  # fail fast on a missing source, before any worker starts
        _RENDERERS[style, assets, font] = make_renderer(style, assets, font)
    entries = load_emoji_metadata(assets)
    selected = select_emoji(entries)
    report = BuildReport(out_dir, selected_emoji=len(selected), excluded_emoji=len(entries) - len(selected))
    if limit is not None:
        selected = selected[:limit]
    readings = {e.hexcode: read_emotion(e.name, e.tags, e.subgroup) for e in selected}
    stickers: list[Sticker] = []
    rendered = _render_all(out_dir, styles, selected, assets, font, on_progress)
    for style_name in styles:
        style = STYLES[style_name]
        for entry in selected:
            problem = rendered[style_name, entry.hexcode]
            if problem is not None:
                log.info("%s: %s", style_name, problem)
                report.missing.setdefault(style_name, []).append(entry.hexcode)
                continue
            rel = f"images/{style_name}/{entry.hexcode.lower()}.png"
            reading = readings[entry.hexcode]
            description, emotion, recommendation = sticker_texts(entry, style, reading)
            stickers.append(
                Sticker(
                    id=f"{style_name}/{entry.hexcode.lower()}",
                    image=rel,
                    description=description,
                    emotion=emotion,
                    recommendation=recommendation,
                    label=reading.label,
                    seq_num=len(stickers) + 1,
                    style=style_name,
                    source=style.source,
                    licence=style.licence,
                    meta={
                        "emoji": entry.emoji,
                        "hexcode": entry.hexcode,
                        "name": entry.name,
                        "group": entry.group,
                        "subgroup": entry.subgroup,
                        "label_method": reading.method,
                        "label_cues": list(reading.cues),
                        "polarity": round(reading.polarity, 4),
                    },
                )
            )
    StickerLibrary(out_dir, stickers).save()
    report.stickers = len(stickers)
    report.per_style = dict(Counter(s.style for s in stickers))
    report.labels = dict(sorted(Counter(s.label.value for s in stickers).items()))
    report.label_methods = dict(sorted(Counter(s.meta["label_method"] for s in stickers).items()))
    (out_dir / "build_report.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    (out_dir / "ATTRIBUTION.md").write_text(_attribution(styles), encoding="utf-8")
    return report


RENDER_CHUNK = 64  # emoji a worker renders per task: small enough for a smooth progress bar


def _render_all(
    out_dir: Path,
    styles: Sequence[str],
    selected: Sequence[EmojiEntry],
    assets: Path | None,
    font: Path | None,
    on_progress: Callable[[int, int], None] | None,
) -> dict[tuple[str, str], str | None]:
    """Render and write every (style, emoji) image; per pair None, or why it has no image. Rendering and PNG
    encoding are pure CPU work, so they run in one process per core (43 s for the full pack in one process
    on 2 cores); spawned workers, because the caller may hold threads (a progress bar, ONNX) that fork would
    copy mid-lock."""
    tasks = [(style, selected[i : i + RENDER_CHUNK]) for style in styles for i in range(0, len(selected), RENDER_CHUNK)]
    for style in styles:
        (out_dir / "images" / style).mkdir(parents=True, exist_ok=True)
    results: dict[tuple[str, str], str | None] = {}
    total, done = len(selected) * len(styles), 0
    workers = min(len(tasks), cpu_threads())
    with contextlib.ExitStack() as stack:
        if workers <= 1:
            outcomes = (_render_chunk(out_dir, style, chunk, assets, font) for style, chunk in tasks)
        else:
            spawn = multiprocessing.get_context("spawn")
            pool = stack.enter_context(ProcessPoolExecutor(workers, mp_context=spawn))
            futures = [pool.submit(_render_chunk, out_dir, style, chunk, assets, font) for style, chunk in tasks]
            outcomes = (future.result() for future in as_completed(futures))
        for style_name, outcome in outcomes:
            results |= {(style_name, hexcode): problem for hexcode, problem in outcome}
            done += len(outcome)
            if on_progress:
                on_progress(done, total)
    return results


_RENDERERS: dict[tuple[str, Path | None, Path | None], Callable[[EmojiEntry], Any]] = {}  # one per worker process


def _render_chunk(
    out_dir: Path, style: str, entries: Sequence[EmojiEntry], assets: Path | None, font: Path | None
) -> tuple[str, list[tuple[str, str | None]]]:
    key = (style, assets, font)
    if key not in _RENDERERS:
        _RENDERERS[key] = make_renderer(style, assets, font)
    render, outcome = _RENDERERS[key], []
    for entry in entries:
        try:
            image = render(entry)
        except RenderError as exc:
            outcome.append((entry.hexcode, str(exc)))
            continue
        (out_dir / f"images/{style}/{entry.hexcode.lower()}.png").write_bytes(png_bytes(image))
        outcome.append((entry.hexcode, None))
    return style, outcome


def _attribution(styles: Sequence[str]) -> str:
    lines = [
        "# Attribution",
        "",
        "The stickers in this folder are emoji rendered by StickerConv's `stickers build-default`.",
        "",
        "## Images",
        "",
    ]
    lines += [
        f"- **{STYLES[s].title}** (`images/{s}/`): {STYLES[s].attribution} Source: {STYLES[s].source}." for s in styles
    ]
    lines += [
        "",
        "## Text",
        "",
        "- Emoji names, tags and groups: emojibase-data (MIT licence), built from the Unicode CLDR annotations "
        "(Unicode License v3).",
        "- Sentiment polarity: VADER (vaderSentiment, MIT licence).",
        "- Descriptions, emotion texts, recommendations and labels are generated by StickerConv from that "
        "metadata; see docs/sticker-pack.md for how labels are derived.",
        "",
    ]
    return "\n".join(lines)
