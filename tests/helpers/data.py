"""Published-format fixtures for the dataset-tool tests, built from real StickerConv data.

No published conversation file ships with the checkout, so sessions are assembled in the exact
§4.3 record format from the real persona texts (profiles/profile_sample.jsonl) and the real sticker
knowledge dicts (stickers/knowledge_sticker_example.jsonl, made into §4.2 stickers with a seq_num and a
SER30K label). ``test_data_fixtures.py`` pins the fixtures themselves to that format.
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from stickerconv.schema import Sticker, sticker_id_from_path
from stickerconv.stickers.library import StickerLibrary

from helpers.paths import fixture_file

# A published-format sticker record (a system sticker of the StickerConv files) for judge and metric tests.
HUG_STICKER = {
    "seq_num": 1,
    "image": "pack/hug.png",
    "description": "a bear hugging a heart",
    "emotion": "warm and comforting",
    "recommendation": "comfort a sad friend",
    "origin_anno": "Happiness",
}

# SER30K labels for the 10 knowledge stickers, read off their descriptions (frowning -> Anger, ...).
LABELS = ["Anger", "Surprise", "Sadness", "Surprise", "Sadness", "Happiness", "Fear", "Neutral", "Sadness", "Happiness"]
USER_LINES = [
    "I can’t stop thinking about what happened last week.",
    "Everything feels heavier than it should right now.",
    "I tried talking to my family but they don't really get it.",
    "Some days are better, but today was rough.",
    "Do you think it will ever get easier?",
    "Thanks for listening, it helps more than I expected.",
]
SYSTEM_LINES = [
    "That sounds really hard, and it makes sense that it stays on your mind.",
    "I'm sorry you're carrying so much right now; you don't have to carry it alone.",
    "It can feel lonely when the people close to you don't understand.",
    "Rough days are part of it, and you are still showing up, which matters.",
    "It often does get easier, little by little, especially with support.",
    "I'm glad it helps. I'm here whenever you want to talk again.",
]
# (turns, user sticker turns, system sticker turns) per session; every session has a sticker.
SHAPES = [
    (3, {1}, {2}),
    (6, {1, 4}, {2, 5}),
    (1, set(), {1}),
    (4, {2}, set()),
    (2, {1}, {1}),
    (5, {3}, {3, 5}),
    (6, {6}, {1}),
    (2, set(), {2}),
    (3, {1, 2, 3}, set()),
    (1, {1}, set()),
]


def published_stickers() -> list[dict]:
    """The 10 real knowledge stickers as §4.2 dicts (the authors' absolute SER30K paths kept)."""
    lines = (
        fixture_file("stickerconv", "stickers", "knowledge_sticker_example.jsonl")
        .read_text(encoding="utf-8")
        .splitlines()
    )
    out = []
    for number, (line, label) in enumerate(zip(lines, LABELS, strict=True), start=1):
        raw = json.loads(line)
        out.append(
            {
                "seq_num": number,
                "image": raw["image"],
                "description": raw["description"],
                "emotion": raw["emotion"],
                "recommendation": raw["recommendation"],
                "origin_anno": label,
            }
        )
    return out


def profiles() -> list[dict]:
    path = fixture_file("stickerconv", "profiles", "profile_sample.jsonl")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def published_sessions() -> list[dict]:
    """10 sessions (2 per real profile) in the exact published record format."""
    stickers = published_stickers()
    sessions = []
    for k, (turns, user_at, system_at) in enumerate(SHAPES):
        profile = profiles()[k % 5]
        conversation = []
        for t in range(1, turns + 1):
            conversation.append(
                {
                    "turn": t,
                    "user_message": USER_LINES[(t - 1 + k) % 6],
                    "system_message": SYSTEM_LINES[(t - 1 + k) % 6],
                    "user_sticker": stickers[(k + t) % 10] if t in user_at else None,
                    "system_sticker": stickers[(k + 2 * t + 5) % 10] if t in system_at else None,
                }
            )
        situation = profile["situation"] if k < 5 else profile["situation"] + " It has been like this for weeks."
        sessions.append({"conversation": conversation, "user_persona": profile["persona"], "user_status": situation})
    return sessions


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def make_library(root: Path, stickers: list[dict], *, without_image: int = 0) -> Path:
    """A library holding the given published stickers as an ingested SER30K folder would (ids theme/sticker_n).

    The last ``without_image`` stickers are listed but their image files are left out.
    """
    entries = []
    for i, raw in enumerate(stickers):
        sticker_id = sticker_id_from_path(raw["image"])
        image = f"images/{sticker_id}.jpg"
        if i < len(stickers) - without_image:
            (root / image).parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8), (40 * (i % 6), 120, 200)).save(root / image)
        entries.append(Sticker(id=sticker_id, image=image, description=raw["description"], label=raw["origin_anno"]))
    StickerLibrary(root, entries).save()
    return root
