import pytest

from stickerconv.schema import EmotionLabel as E
from stickerconv.stickers.emotion_lexicon import emotion_text, read_emotion, text_emotions


@pytest.mark.parametrize(
    ("name", "tags", "subgroup", "label", "method"),
    [
        ("loudly crying face", ["bawling", "sad", "sob", "tear"], "face-concerned", E.SADNESS, "cues"),
        ("enraged face", ["anger", "angry", "mad"], "face-negative", E.ANGER, "cues"),
        ("face vomiting", ["barf", "gross", "puke"], "face-unwell", E.DISGUST, "cues"),
        ("face screaming in fear", ["scared", "shocked"], "face-concerned", E.FEAR, "cues"),
        ("astonished face", ["omg", "shocked", "way"], "face-concerned", E.SURPRISE, "cues"),
        ("party popper", ["celebration", "hooray"], "event", E.HAPPINESS, "cues"),
        ("ox", ["animal", "bull"], "animal-mammal", E.NEUTRAL, "default"),
        ("cigarette", [], "other-object", E.NEUTRAL, "default"),
    ],
)
def test_read_emotion(name, tags, subgroup, label, method):
    reading = read_emotion(name, tags, subgroup)
    assert (reading.label, reading.method) == (label, method)


def test_objects_never_take_polarity_labels():
    # VADER scores "police"/"fire" negative; outside faces that must not make a sticker Sad.
    assert read_emotion("police officer", ["arrest", "cop"], "person-role").label is E.NEUTRAL


def test_emotion_text_is_consistent_with_label():
    text = emotion_text(read_emotion("loudly crying face", ["sad", "sob"], "face-concerned"))
    assert text.startswith("The sticker conveys a sense of sadness") and "negative" in text
    neutral = emotion_text(read_emotion("ox", ["animal"], "animal-mammal"))
    assert "neutral" in neutral and "negative" not in neutral.replace("neither positive nor negative", "")


def test_text_emotions():
    assert text_emotions("I failed my exam again") == {E.SADNESS: 1.0}
    assert text_emotions("so angry and scared") == {E.ANGER: 0.5, E.FEAR: 0.5}
    assert text_emotions("a funny, playful sticker") == {}  # humour names no emotion
    assert text_emotions("wait, you're moving to Japan?!") == {E.SURPRISE: 1.0}
    assert text_emotions("stunning crystal gladiator saddle") == {E.SURPRISE: 1.0}  # not Sadness (cry-, sad-)
