"""The pieces of the annotation pipeline: reading votes and refusals, the knowledge schema, the image
sent to the model, the agreement figures, and the prompts against the published records."""

from __future__ import annotations

import base64
import io
import json

import pytest
from PIL import Image

from stickerconv.llm.structured import parse_structured
from stickerconv.llm.types import StructuredOutputError
from stickerconv.stickers.annotate import AnnotateOptions, agreement
from stickerconv.stickers.annotate_images import image_part, prepare_image, unusable_reason
from stickerconv.stickers.annotate_prompts import (
    CAPTION_QUESTIONS,
    IMAGE_TOKEN,
    Knowledge,
    classify_vote,
    is_refusal,
    knowledge_prompt,
)

from helpers.paths import fixture_file


@pytest.mark.parametrize(
    ("answer", "vote"),
    [
        ("Yes", "yes"),
        ("yes, it suits a casual chat.", "yes"),
        ("**Yes.**", "yes"),
        ("Answer: no", "no"),
        ('"No" - it is offensive.', "no"),
        ("Not really suitable.", "no"),  # the authors' prefix rule
        ("I'm sorry, I can't tell.", "unknown"),
        ("It depends on the context.", "unknown"),
        ("", "unknown"),
    ],
)
def test_votes_are_read_by_their_prefix(answer, vote):
    assert classify_vote(answer) == vote


@pytest.mark.parametrize(
    ("answer", "refused"),
    [
        ("I'm sorry, but I can't help with that.", True),
        ("I cannot describe this image.", True),
        ("Sorry, I am unable to view images.", True),
        ("As an AI, I do not see pictures.", True),
        ("The sticker depicts a cat saying sorry.", False),
        ("Sorry! is written on the sticker in big letters.", False),
        ("It conveys regret, like saying I'm sorry.", False),
    ],
)
def test_refusals_are_recognised_at_the_start_only(answer, refused):
    assert is_refusal(answer) is refused


def test_knowledge_schema_accepts_label_variants_and_rejects_empty_text():
    good = {"description": " A cat. ", "emotion": "Joyful.", "recommendation": "Greetings.", "label": "joy"}
    parsed = parse_structured(json.dumps(good), Knowledge)
    assert parsed.label == "Happiness" and parsed.description == "A cat."
    with pytest.raises(StructuredOutputError, match="label"):
        parse_structured(json.dumps(good | {"label": "Love-hate"}), Knowledge)
    with pytest.raises(StructuredOutputError, match="description"):
        parse_structured(json.dumps(good | {"description": "  "}), Knowledge)


def test_caption_questions_are_the_published_ones_and_the_prompt_reads_like_the_authors():
    path = fixture_file("stickerconv", "stickers", "caption_sticker_example.jsonl")
    published = [json.loads(line) for line in path.read_text().splitlines()]
    for record in published:
        assert [q["query"] for q in record["qa"]] == [IMAGE_TOKEN + CAPTION_QUESTIONS[0], *CAPTION_QUESTIONS[1:]]
    from stickerconv.stickers.annotate import QA

    prompt = knowledge_prompt([QA(**q) for q in published[0]["qa"]])
    assert prompt.count("QUESTION: ") == 5 and prompt.count("ANSWER: ") == 5
    assert "<image>" not in prompt and "QUESTION: What does this sticker depict?\nANSWER: The sticker" in prompt


def _decode(part) -> Image.Image:
    head, data = part.image_url.url.split(",", 1)
    assert head == "data:image/png;base64"
    return Image.open(io.BytesIO(base64.b64decode(data)))


def test_transparent_stickers_are_flattened_on_white_and_sizes_fit(tmp_path):
    clear = tmp_path / "clear.png"
    Image.new("RGBA", (40, 20), (0, 0, 0, 0)).save(clear)
    img = _decode(image_part(clear))
    assert img.mode == "RGB" and img.size == (128, 64)  # enlarged to a 64 px short side
    assert img.getpixel((5, 5)) == (255, 255, 255)
    wide = tmp_path / "wide.png"
    Image.new("RGB", (3000, 1000), (10, 200, 10)).save(wide)
    assert _decode(image_part(wide, max_side=512)).size == (512, 171)
    # deterministic in the pixels alone, so the request can be cached: the same picture in another file, encoded
    # otherwise, gives the same bytes; another colour does not
    same = tmp_path / "same.png"
    Image.new("RGB", (3000, 1000), (10, 200, 10)).save(same, compress_level=0)
    assert same.read_bytes() != wide.read_bytes() and prepare_image(same) == prepare_image(wide)
    other = tmp_path / "other.png"
    Image.new("RGB", (3000, 1000), (10, 200, 11)).save(other)
    assert prepare_image(other)[0] != prepare_image(wide)[0]


def test_a_photo_like_image_goes_as_jpeg(tmp_path):
    import random

    rng = random.Random(0)
    noisy = Image.frombytes("RGB", (768, 768), bytes(rng.randrange(256) for _ in range(768 * 768 * 3)))
    noisy.save(tmp_path / "noise.png")
    _, mime = prepare_image(tmp_path / "noise.png")
    assert mime == "image/jpeg"


def test_unusable_reasons(tmp_path):
    assert unusable_reason(tmp_path / "nothing.png") == "image file is missing"
    (tmp_path / "empty.png").write_bytes(b"")
    assert unusable_reason(tmp_path / "empty.png") == "zero bytes"
    Image.new("RGB", (10, 10)).save(tmp_path / "still.gif")
    assert unusable_reason(tmp_path / "still.gif") is None


def test_agreement_and_kappa():
    assert agreement([])["rate"] is None
    result = agreement([("Anger", "Anger"), ("Sadness", "Sadness"), ("Anger", "Sadness"), ("Fear", "Fear")])
    assert result["n"] == 4 and result["agree"] == 3 and result["rate"] == 0.75
    # expected agreement: (2*1 + 1*2 + 1*1) / 16 = 5/16; kappa = (0.75 - 0.3125) / (1 - 0.3125)
    assert result["kappa"] == pytest.approx((0.75 - 5 / 16) / (11 / 16), abs=1e-4)
    assert result["confusion"]["Anger"] == {"Anger": 1, "Sadness": 1}
    assert agreement([("Anger", "Anger")])["kappa"] is None  # one class on both sides: undefined


def test_options_are_checked():
    with pytest.raises(ValueError, match="samples"):
        AnnotateOptions(samples=0)
    with pytest.raises(ValueError, match="max_side"):
        AnnotateOptions(max_side=10)
