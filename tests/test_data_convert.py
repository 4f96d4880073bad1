"""Conversion to training data: the exact §4.4 strings, image paths, and outputs that re-load and validate."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from stickerconv.data.convert import ImageLocator, convert
from stickerconv.data.resolve import StickerResolver, sample_image_path
from stickerconv.data.samples import IMG, opening, render_samples
from stickerconv.data.validate import validate
from stickerconv.schema import Conversation
from stickerconv.stickers.library import StickerLibrary

from helpers.data import make_library, published_sessions, published_stickers, write_jsonl

SCRIPT = Path(sys.executable).parent / "stickerconv"
U1, S1 = "I failed my driving test again.", "I'm sorry, that must be so frustrating."
U2, S2 = "I practised for weeks.", "All that effort counts, even if the result hurts."
U3, S3 = "Maybe I'll try once more.", "That's the spirit! I believe in you."


def three_turns() -> Conversation:
    """User and system stickers in turn 1, none in turn 2, both again in turn 3."""
    st = published_stickers()
    turns = [
        {"turn": 1, "user_message": U1, "system_message": S1, "user_sticker": st[4], "system_sticker": st[9]},
        {"turn": 2, "user_message": U2, "system_message": S2, "user_sticker": None, "system_sticker": None},
        {"turn": 3, "user_message": U3, "system_message": S3, "user_sticker": st[7], "system_sticker": st[5]},
    ]
    return Conversation.model_validate({"conversation": turns, "user_persona": "P", "user_status": "S"})


A, B, C, D = (f"pepe-7/sticker_{n}.jpg" for n in (25, 16, 28, 17))


def test_v15_strings_are_exact():
    s = render_samples(three_turns(), "v1.5", lambda st: sample_image_path(st.image))
    t1 = f"USER: {U1}<IMG>\nASSISTANT:"
    t2 = f"USER: {U1}<IMG>\nASSISTANT:{S1}<IMG></s>\nUSER: {U2}\nASSISTANT:"
    t3 = t2 + f"{S2}</s>\nUSER: {U3}<IMG>\nASSISTANT:"
    assert [x.input_text for x in s] == [t1, t2, t3]
    assert [x.input_image for x in s] == [[A], [A, B], [A, B, C]]
    assert [x.response_text for x in s] == [f"{S1}<IMG>", S2, f"{S3}<IMG>"]
    assert [x.response_image for x in s] == [[B], [], [D]]
    assert [x.query for x in s] == [U1, U2, U3]
    assert [x.history for x in s] == [[], [(U1, f"{S1}<IMG>")], [(U1, f"{S1}<IMG>"), (U2, S2)]]


def test_v0_strings_are_exact():
    s = render_samples(three_turns(), "v0", lambda st: sample_image_path(st.image))
    t1 = f"### Human: {U1}\n<IMG>\n### Assistant:"
    t2 = f"### Human: {U1}\n<IMG>\n### Assistant: {S1}\n<IMG>\n\n### Human: {U2}\n### Assistant:"
    t3 = t2 + f" {S2}\n### Human: {U3}\n<IMG>\n### Assistant:"
    assert [x.input_text for x in s] == [t1, t2, t3]
    assert [x.input_image for x in s] == [[A], [A, B], [A, B, C]]
    assert [x.response_text for x in s] == [f"{S1}\n<IMG>\n", S2, f"{S3}\n<IMG>\n"]
    assert [x.history for x in s] == [[], [(U1, f"{S1}\n<IMG>\n")], [(U1, f"{S1}\n<IMG>\n"), (U2, S2)]]


@pytest.mark.parametrize("style", ["v1.5", "v0"])
def test_an_opening_is_the_turn_rendered_as_a_new_chat(style):
    """Every turn, with and without a user sticker, reads as if it were the dialogue's first."""
    conversation = three_turns()
    samples = render_samples(conversation, style, lambda st: sample_image_path(st.image))
    for sample, turn in zip(samples, conversation.conversation, strict=True):
        alone = conversation.model_copy(update={"conversation": [turn.model_copy(update={"turn": 1})]})
        (expected,) = render_samples(alone, style, lambda st: sample_image_path(st.image))
        assert opening(sample, style) == expected
        assert opening(expected, style) == expected  # a first turn is its own opening
    assert [len(opening(s, style).input_image) for s in samples] == [1, 0, 1]


def test_sample_metadata_and_invariant_on_every_fixture_session():
    for record in published_sessions():
        conversation = Conversation.model_validate(record)
        for style in ("v0", "v1.5"):
            samples = render_samples(conversation, style, lambda st: sample_image_path(st.image))
            assert len(samples) == len(conversation.conversation)
            for sample, turn in zip(samples, record["conversation"], strict=True):
                assert sample.input_text.count(IMG) == len(sample.input_image)
                assert sample.problems() == []
                assert sample.input_image_metadata == turn["user_sticker"]
                assert sample.response_image_metadata == turn["system_sticker"]
                assert (sample.user_persona, sample.user_status) == (record["user_persona"], record["user_status"])


def test_image_paths_relative_to_the_image_root():
    published = "/datas/llm_datasets/SER_Dataset/Images/pepe-7/sticker_18.jpg"
    assert sample_image_path(published) == "pepe-7/sticker_18.jpg"
    assert sample_image_path("Images/pepe-7/sticker_18.jpg") == "pepe-7/sticker_18.jpg"
    assert sample_image_path(published, "/datas/llm_datasets/SER_Dataset") == "Images/pepe-7/sticker_18.jpg"
    assert sample_image_path("images/noto/1f622.png") == "images/noto/1f622.png"  # our library-relative paths


def test_library_stickers_take_their_library_relative_path(tmp_path):
    resolver = StickerResolver(StickerLibrary.load(make_library(tmp_path / "lib", published_stickers())))
    samples = render_samples(three_turns(), "v1.5", ImageLocator(resolver).path)
    assert samples[2].input_image == [f"images/{p.removesuffix('.jpg')}.jpg" for p in (A, B, C)]


@pytest.fixture()
def source(tmp_path):
    return write_jsonl(tmp_path / "train.jsonl", published_sessions())


def test_samples_file_reloads_validates_and_keeps_counts(tmp_path, source):
    out = tmp_path / "samples.json"
    report = convert(source, "samples", out, style="v0")
    records = json.loads(out.read_text(encoding="utf-8"))
    turns = sum(len(r["conversation"]) for r in published_sessions())
    assert report.written == len(records) == report.turns == turns
    assert list(records[0]) == [
        "input_text",
        "input_image",
        "response_text",
        "response_image",
        "user_persona",
        "user_status",
        "input_image_metadata",
        "response_image_metadata",
        "query",
        "history",
    ]
    again = validate(out)
    assert again.kind == "samples" and again.ok and again.records == turns
    records[3]["input_image"].append("extra.jpg")
    (tmp_path / "broken.json").write_text(json.dumps(records, indent=1))
    broken = validate(tmp_path / "broken.json")
    assert [(p.field, p.message) for p in broken.problems] == [
        (
            "input_image",
            f"{len(records[3]['input_image'])} image(s) but input_text has {records[3]['input_text'].count(IMG)} <IMG>",
        )
    ]


def test_chat_examples_reload_validate_and_keep_counts(tmp_path, source):
    out = tmp_path / "chat.jsonl"
    report = convert(source, "chat", out, system_prompt="Be kind.")
    examples = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    sessions = published_sessions()
    assert report.written == len(examples) == len(sessions)
    for example, record in zip(examples, sessions, strict=True):
        messages = example["messages"]
        assert messages[0] == {"role": "system", "content": "Be kind."}
        assert sum(m["role"] == "assistant" for m in messages) == len(record["conversation"])
        images = [p["image_url"]["url"] for m in messages[1:] for p in m["content"] if p["type"] == "image_url"]
        expected = [
            sample_image_path(s["image"])
            for t in record["conversation"]
            for s in (t["user_sticker"], t["system_sticker"])
            if s is not None
        ]
        assert images == expected
    assert messages[1]["content"][0] == {"type": "text", "text": record["conversation"][0]["user_message"]}
    again = validate(out)
    assert again.kind == "chat" and again.ok and again.records == len(sessions)


def test_hf_dataset_embeds_found_images_and_counts_the_rest(tmp_path, source):
    from datasets import load_from_disk

    stickers = published_stickers()
    resolver = StickerResolver(StickerLibrary.load(make_library(tmp_path / "lib", stickers, without_image=3)))
    report = convert(source, "hf", tmp_path / "hf", locator=ImageLocator(resolver))
    dataset = load_from_disk(str(tmp_path / "hf"))
    sessions = published_sessions()
    assert len(dataset) == report.written == sum(len(r["conversation"]) for r in sessions)
    assert report.images + report.unresolved_images == report.stickers == 20
    assert report.unresolved_images > 0
    filled = sum(x is not None for x in dataset["user_sticker_image"]) + sum(
        x is not None for x in dataset["system_sticker_image"]
    )
    assert filled == report.images
    row = next(r for r in dataset if r["user_sticker_image"] is not None)
    assert row["user_sticker_image"].size == (8, 8)
    assert row["input_text"].count(IMG) == len(row["input_image"])
    assert row["input_image_metadata"]["image"].startswith("/datas/")
    assert set(dataset["session"]) == set(range(len(sessions)))
    with pytest.raises(ValueError, match="not found; nothing written"):
        convert(source, "hf", tmp_path / "hf2", locator=ImageLocator(resolver), require_images=True)
    assert not (tmp_path / "hf2").exists()


def test_cli_convert_samples_and_chat(tmp_path, source):
    out = tmp_path / "s.json"
    result = subprocess.run(
        [str(SCRIPT), "data", "convert", str(source), "--to", "samples", "--out", str(out), "--style", "v0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "10 sessions, 33 turns, 20 stickers -> 33 samples" in result.stdout
    assert json.loads(out.read_text())[0]["input_text"].startswith("### Human: ")
    bad = subprocess.run(
        [str(SCRIPT), "data", "convert", str(source), "--to", "csv", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "choose from samples, chat, hf" in bad.stderr
