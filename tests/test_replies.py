import pytest

from stickerconv.text import ends_mid_sentence, has_repeat, readable


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # cut to the last complete sentence
        ("I'm so sorry to hear that. It must be really hard to", "I'm so sorry to hear that."),
        ("That sounds awful! Do you want to talk about", "That sounds awful!"),
        ('She said "I quit." And then she', 'She said "I quit."'),
        ("You did it! 😊 I knew you", "You did it! 😊"),
        ("So proud of you 🎉 Let me", "So proud of you 🎉"),
        # complete text stays as it is
        ("It costs 3.5 dollars. Really?", "It costs 3.5 dollars. Really?"),
        ("Wait... what? Are you okay??", "Wait... what? Are you okay??"),
        ("That sounds hard 😔", "That sounds hard 😔"),
        ("I feel sad, I feel bad.", "I feel sad, I feel bad."),
        ("I love my dog, I love my cat.", "I love my dog, I love my cat."),
        # no complete sentence: the unfinished last clause goes, the rest is closed
        ("I'm so sorry, that must be really hard for you and", "I'm so sorry."),
        ("Take a breath; you have done more than", "Take a breath."),
        # no complete sentence and no clause to cut at: as it is
        ("I understand how you feel", "I understand how you feel"),
        ("I love 🍕 so much", "I love 🍕 so much"),
        # repeated sentences and clauses, exact or near, go
        ("I'm here for you. I'm here for you.", "I'm here for you."),
        ("You did great! YOU did great!! 😊", "You did great!"),
        ("I'm here to listen. I'm there to listen. Tell me more!", "I'm here to listen. Tell me more!"),
        ("I'm here to listen, I'm there to listen, I'm here to", "I'm here to listen."),
        ("Oh no, oh no! What happened?", "Oh no! What happened?"),
        ("I'm here for you. I'm here for you, always.", "I'm here for you. Always."),
        ("That must be so hard, that must be so hard for you.", "That must be so hard."),
        (  # a clause that says much more than the one it contains is new
            "I'm here for you, I'm here for you whenever you want to talk it all through.",
            "I'm here for you, I'm here for you whenever you want to talk it all through.",
        ),
        ("It has a tone....It has a tone....It also", "It has a tone...."),  # no space after the stop
        ("We met in the U.S. last year.", "We met in the U.S. last year."),
        # whitespace collapses; nothing stays nothing
        ("Take care.\n\nTake   care.", "Take care."),
        ("", ""),
        ("  \n ", ""),
    ],
)
def test_readable(text, expected):
    assert readable(text) == expected


def test_readable_is_idempotent():
    texts = [
        "I'm here to listen, I'm there to listen. That's hard. That is hard! Tell me more about",
        "Okay, okay, I see, I see what you mean; that makes sense",
    ]
    for text in texts:
        once = readable(text)
        assert readable(once) == once


def test_short_different_clauses_are_not_repeats():
    """Near-repeats need NEAR_MIN_WORDS words: short clauses that differ by a word say different things."""
    assert readable("I feel sad, I feel happy, I feel both.") == "I feel sad, I feel happy, I feel both."
    assert not has_repeat("I feel sad, I feel happy, I feel both.")


@pytest.mark.parametrize(
    ("text", "mid", "repeat"),
    [
        ("All good.", False, False),
        ("All good, all good.", False, True),
        ("All good and", True, False),
        ("I'm here to listen. I'm there to listen. And", True, True),
        ("", False, False),
    ],
)
def test_the_measures_the_bench_reports(text, mid, repeat):
    assert ends_mid_sentence(text) is mid and has_repeat(text) is repeat
    assert not ends_mid_sentence(readable(text)) or readable(text) == text
    assert not has_repeat(readable(text))
