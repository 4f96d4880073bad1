"""StickerBriefs: what a sticker's annotation says beyond its library's boilerplate, for the lean prompts."""

import pytest

from stickerconv.schema import EmotionLabel, Sticker
from stickerconv.stickers.brief import StickerBriefs


def _sticker(i: int, name: str, words: str, label: EmotionLabel = EmotionLabel.HAPPINESS) -> Sticker:
    return Sticker(
        id=f"s{i}",
        image=f"s{i}.png",
        description=f"The sticker shows the {name} emoji drawn in the Noto Color Emoji style. Related words: {words}.",
        emotion=f"The sticker conveys a sense of {words}. The overall emotion is positive.",
        label=label,
    )


PACK = [
    _sticker(0, "grinning face", "cheerful, happy, smile"),
    _sticker(1, "loudly crying face", "sad, sob, tear", EmotionLabel.SADNESS),
    _sticker(2, "red heart", "love, emotion"),
    _sticker(3, "pouting cat", "grumpy, annoyed", EmotionLabel.ANGER),
    _sticker(4, "rocket", "launch, space"),
]


def test_the_shared_phrases_go_and_what_tells_stickers_apart_stays():
    briefs = StickerBriefs(PACK)
    assert briefs(PACK[1]) == "[Sadness] loudly crying face sad, sob, tear."
    assert briefs.emotion(PACK[3]) == "[Anger] grumpy, annoyed."
    assert all("Noto" not in briefs(s) and "The sticker" not in briefs(s) for s in PACK)


def test_free_text_keeps_its_words_up_to_the_cap():
    free = [
        Sticker(id=f"f{i}", image=f"f{i}.png", description=text)
        for i, text in enumerate(["A cartoon cat waves hello with a big grin", "Two penguins hug in the snow at dusk"])
    ]
    briefs = StickerBriefs(free, max_words=5)
    assert briefs(free[0]) == "[Unlabelled] A cartoon cat waves hello"  # nothing recurs in 3 annotations
    assert briefs.emotion(free[1]) == briefs(free[1])  # no emotion text: the description's brief


def test_a_sticker_made_only_of_boilerplate_keeps_its_first_words():
    plain = [Sticker(id=f"p{i}", image=f"p{i}.png", description="The sticker shows a face.") for i in range(4)]
    assert StickerBriefs(plain)(plain[0]) == "[Unlabelled] The sticker shows a face."


@pytest.mark.parametrize(("share", "max_words"), [(0.0, 8), (1.5, 8), (0.2, 0)])
def test_bad_settings_are_refused(share, max_words):
    with pytest.raises(ValueError, match="share|max_words"):
        StickerBriefs(PACK, share=share, max_words=max_words)
