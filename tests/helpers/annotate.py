"""A sticker library with scripted behaviours for the annotation tests, and the vision server's script:
ten stickers whose answers are good, refused, empty or malformed, five bad image files, and one sticker
that already has its text."""

from __future__ import annotations

import json
import re
from pathlib import Path

from PIL import Image

from stickerconv.schema import Sticker
from stickerconv.stickers.annotate_images import image_part
from stickerconv.stickers.annotate_prompts import CAPTION_QUESTIONS, FILTER_QUESTIONS
from stickerconv.stickers.library import StickerLibrary

COLOURS = {
    "happy": (250, 200, 0),
    "sad_h": (0, 80, 200),
    "angry_h": (200, 0, 0),
    "nope": (90, 90, 90),
    "tie": (0, 160, 80),
    "refuser": (120, 0, 120),
    "mumbler": (0, 120, 120),
    "garbled": (160, 100, 40),
    "halfjson": (40, 40, 160),
    "big": (220, 120, 180),
}
GOOD = ("happy", "sad_h", "angry_h", "tie", "halfjson", "big")  # end up annotated
BAD_FILES = ("corrupt", "animated", "huge", "not_image", "missing")
HUMAN_LABELS = {"sad_h": "Sadness", "angry_h": "Anger"}
PROPOSED = {"sad_h": "Sadness", "angry_h": "Disgust", "happy": "Happiness", "big": "Surprise"}
VOTES = {  # the final answer of filter sample i (its seed)
    "nope": ["No.", "no", "Yes", "No, it is not suitable.", "I cannot tell."],
    "tie": ["Yes", "No", "**Yes.**", "no", "Hmm, hard to say."],
}


def write_png(path: Path, colour, size=(96, 96), alpha=True) -> None:
    img = Image.new("RGBA", size, (0, 0, 0, 0))
    img.paste((*colour, 255), (size[0] // 4, size[1] // 4, 3 * size[0] // 4, 3 * size[1] // 4))
    img.save(path) if alpha else img.convert("RGB").save(path)


def make_library(root: Path) -> StickerLibrary:
    """Ten stickers with scripted behaviours, five bad files, and one that already has text."""
    images = root / "images"
    images.mkdir(parents=True)
    stickers = []
    for name, colour in COLOURS.items():
        write_png(images / f"{name}.png", colour, size=(1600, 1000) if name == "big" else (96, 96))
        stickers.append(Sticker(id=name, image=f"images/{name}.png", label=HUMAN_LABELS.get(name)))
    good = images / "good.png"
    write_png(good, (1, 2, 3))
    (images / "corrupt.png").write_bytes(good.read_bytes()[:60])
    frames = [Image.new("RGB", (32, 32), c) for c in ((255, 0, 0), (0, 255, 0))]
    frames[0].save(images / "animated.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    Image.new("L", (5000, 8)).save(images / "huge.png")
    (images / "not_image.png").write_text("this is not a picture\n")
    good.unlink()
    for name in BAD_FILES:
        suffix = ".gif" if name == "animated" else ".png"
        stickers.append(Sticker(id=name, image=f"images/{name}{suffix}"))
    write_png(images / "done.png", (9, 9, 9))
    stickers.append(
        Sticker(
            id="done",
            image="images/done.png",
            description="A grey square.",
            emotion="Calm and neutral.",
            recommendation="Use it when nothing needs saying.",
            label="Neutral",
        )
    )
    # existing fields that must survive the update
    stickers[0] = stickers[0].model_copy(
        update={"seq_num": 1, "style": "test", "source": "hand-made", "licence": "CC0-1.0", "meta": {"keep": [1, 2]}}
    )
    library = StickerLibrary(root, stickers)
    library.save()
    return library


class Script:
    """The server's answers, keyed by the sticker each request is about (found by its image URL, or by the
    ``[name]`` tag the scripted captions carry into the knowledge prompt)."""

    def __init__(self, library: StickerLibrary, max_side: int = 768):
        self.by_url = {}
        for s in library:
            path = library.image_path(s)
            try:
                self.by_url[image_part(path, max_side).image_url.url] = s.id
            except Exception:
                continue  # a bad file: it must never be sent
        self.malformed = {"garbled"}  # summaries that never parse
        self.fail_after: int | None = None  # raise (the server answers 500) from this call on
        self.calls = 0

    def __call__(self, body: dict) -> str:
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("scripted server failure")
        messages = body["messages"]
        urls = [
            p["image_url"]["url"]
            for m in messages
            if isinstance(m["content"], list)
            for p in m["content"]
            if p["type"] == "image_url"
        ]
        last = messages[-1]["content"]
        last = last if isinstance(last, str) else " ".join(p.get("text", "") for p in last if p["type"] == "text")
        if not urls:
            return self.knowledge(body, re.search(r"\[(\w+)\]", json.dumps(messages)).group(1))
        name = self.by_url[urls[0]]
        if last == FILTER_QUESTIONS[2]:
            seed = body.get("seed", 0)
            return VOTES.get(name, ["Yes."] * 10)[seed % 5]
        if last in FILTER_QUESTIONS:
            return f"[{name}] It is a coloured square; it would suit a chat."
        number = CAPTION_QUESTIONS.index(last) + 1
        if name == "refuser" and number == 1:
            return "I'm sorry, but I can't help with that."
        if name == "mumbler" and number == 3:
            return "   "
        return f"[{name}] Answer {number} about the {name} sticker."

    def knowledge(self, body: dict, name: str) -> str:
        if name in self.malformed:
            return "Sure! The sticker is a square, it is nice, use it often."
        if name == "halfjson" and "seed" not in body:  # the first attempt; the retry resamples with a seed
            return '{"description": "cut off'
        return json.dumps(
            {
                "description": f"A {name} square.",
                "emotion": f"The {name} feeling, with a little humour.",
                "recommendation": f"Send it when you feel {name}.",
                "label": PROPOSED.get(name, "neutral"),  # lower case on purpose: it is accepted
            }
        )
