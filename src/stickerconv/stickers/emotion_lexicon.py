"""Deriving one of the 7 emotion labels, and the emotion text, for an emoji from its metadata.

No registry package labels emoji with emotions (offline-assets §5), so the label is derived in
three transparent steps, and the step that decided is recorded with every sticker:

1. **Cue words.** The emoji's CLDR/emojibase name counts twice, its tags once; each word found in
   the cue lexicon below adds its weight to that emotion. The lexicon is our own, written for
   emoji names and tags (it is not NRC, whose licence forbids commercial use).
2. **Subgroup prior.** The emojibase subgroup adds a small prior (``face-negative`` leans Anger,
   ``heart`` leans Happiness, ...), which settles faces whose tags are sparse.
3. **Polarity fallback.** With no emotion reaching ``MIN_SCORE``, faces, hearts and gestures take
   VADER's compound polarity of the name and tags: clearly positive -> Happiness, clearly negative
   -> Sadness, else Neutral. Everything else (animals, food, objects) is Neutral: VADER reads
   words like "fire", "police" or "dice" as negative and "hand" as positive, which says nothing about such a sticker.

docs/sticker-pack.md reports how well this agrees with a reading by eye.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from stickerconv.schema import EmotionLabel

E = EmotionLabel

# Cue words (lower-case tokens) and their weight per emotion.
_CUES: dict[EmotionLabel, dict[str, float]] = {
    E.ANGER: dict.fromkeys(
        "anger angry mad rage raging furious fury fuming fume pissed pouting pout enraged cursing cussing "
        "swearing irritated annoyed frustrated frustration grumpy scowl hate fight brawl argument "
        "maddening disgruntled ogre goblin punch fist bomb volcano".split(),
        1.0,
    ),
    E.DISGUST: dict.fromkeys(
        "disgust disgusted gross nasty vomit vomiting puke barf nauseated nausea ew yuck ugh stink stinky "
        "stinks smelly poo poop turd dung unamused eyeroll rolling cringe pest rotting maggot parasite "
        "germs bacteria microbe disapproval dislike smh skunk cockroach worm mosquito garbage trash "
        "wastebasket rat liar lie middle".split(),
        1.0,
    )
    | {"whatever": 0.5, "sick": 0.5, "bored": 0.5, "jealous": 0.5},
    E.FEAR: dict.fromkeys(
        "fear fearful afraid scared scary scream screaming screamer anxious anxiety nervous nerves worried "
        "worry panic horror terror eek yikes creepy spooky ghost haunting dread danger warning caution "
        "biohazard radioactive spider stress stressed undead vampire zombie shark coffin dizzy alarm "
        "emergency sweat".split(),
        1.0,
    )
    | {"dead": 0.5, "halloween": 0.5, "monster": 0.5, "skull": 0.5},
    E.HAPPINESS: dict.fromkeys(
        "happy happiness joy joyful smile smiling grin grinning laugh laughing lol haha hahaha hehe lmao "
        "rofl glad cheerful cheery love loving lover ily adore adorbs kiss kisses kissing xoxo romance "
        "romantic celebrate celebration party partying hooray yay woohoo congrats congratulations awesome "
        "great nice good cool win won winner thanks grateful gratitude blessed hug hugging proud excited "
        "fun funny hilarious delicious yummy yum tasty sweet cute adorable pretty beautiful sparkle "
        "sparkling birthday bday gift present applause like perfect relaxed satisfied tada lit rainbow "
        "sunny sunshine victory trophy medal champion heart hearts valentine crush flirt rad swag slay "
        "dope legit fleek approval yes agree thx appreciate goofy silly wacky zany playful joke".split(),
        1.0,
    ),
    E.SADNESS: dict.fromkeys(
        "sad sadness cry crying tear tears sob bawling unhappy triste depressed disappointed dejected "
        "lonely heartbroken broken pensive miss grief awful fail losing lost sorry regret apology hurt "
        "injury ouch ill tired weary exhausted fatigued sigh downcast frown frowning pleading pity nooo "
        "distraught headache crushed mercy beg begging funeral grave rip memorial mourning".split(),
        1.0,
    )
    | {"sleepy": 0.5, "rain": 0.5, "droplet": 0.5},
    E.SURPRISE: dict.fromkeys(
        "surprise surprised shock shocked wow whoa woah omg astonished amazed amazement awe gasp stunned "
        "unbelievable unreal disbelief mindblown blown explode exploding boom hushed interrobang "
        "exclamation confused confusion befuddled wonder wondering realization oops whoops sudden "
        "startled speechless bewilder".split(),
        1.0,
    )
    | {"!": 1.0, "!!": 1.0, "!?": 1.0, "?": 0.5},
    E.NEUTRAL: dict.fromkeys(
        "neutral meh blank expressionless deadpan straight fine ok okay calm zen thinking hmm ponder "
        "pondering consider quiet secret shh silent silence idk dunno maybe indifference shrug shrugging "
        "sleep sleeping nap zzz yawn salute respect nod here pick point pointing this skeptical skeptic "
        "doubt unsure".split(),
        1.0,
    ),
}

# Priors per emojibase subgroup (added once, before the cue words).
_SUBGROUP_PRIOR: dict[str, tuple[EmotionLabel, float]] = {
    "face-smiling": (E.HAPPINESS, 1.0),
    "face-affection": (E.HAPPINESS, 1.5),
    "face-tongue": (E.HAPPINESS, 0.5),
    "face-neutral-skeptical": (E.NEUTRAL, 1.0),
    "face-sleepy": (E.NEUTRAL, 0.5),
    "face-unwell": (E.SADNESS, 0.5),
    "face-concerned": (E.SADNESS, 0.5),
    "face-negative": (E.ANGER, 1.0),
    "face-costume": (E.FEAR, 0.5),
    "heart": (E.HAPPINESS, 1.0),
    "event": (E.HAPPINESS, 1.0),
    "award-medal": (E.HAPPINESS, 1.0),
    "warning": (E.FEAR, 0.5),
}

# A tie between emotions goes to the earlier one here: specific feelings before broad ones.
_PRIORITY = (E.DISGUST, E.FEAR, E.ANGER, E.SURPRISE, E.SADNESS, E.HAPPINESS, E.NEUTRAL)
MIN_SCORE = 1.0
POLARITY_THRESHOLD = 0.3  # |compound| beyond which the emotion text calls a sticker positive/negative
FALLBACK_THRESHOLD = 0.5  # |compound| beyond which polarity alone decides a face's label
_POLARITY_SUBGROUPS = {
    "face-smiling",
    "face-affection",
    "face-tongue",
    "face-hand",
    "face-neutral-skeptical",
    "face-sleepy",
    "face-unwell",
    "face-hat",
    "face-glasses",
    "face-concerned",
    "face-negative",
    "face-costume",
    "cat-face",
    "monkey-face",
    "heart",
    "emotion",
    "person-gesture",
}

# How the emotion text names each label: the wording of the published sticker knowledge ("The
# sticker conveys a sense of anger or aggression ..."), so that HyDE-style queries written in that
# register (method reference §2.7) find stickers of the emotion they describe.
_PHRASES: dict[EmotionLabel, str] = {
    E.ANGER: "anger or aggression, frustration and annoyance",
    E.DISGUST: "disgust or distaste, revulsion and disapproval",
    E.FEAR: "fear or anxiety, nervousness and being scared",
    E.HAPPINESS: "happiness and joy, fun and delight",
    E.NEUTRAL: "calm neutrality, a relaxed and matter-of-fact mood",
    E.SADNESS: "sadness and distress, disappointment and sorrow",
    E.SURPRISE: "surprise or shock, astonishment and disbelief",
}


@dataclass(frozen=True)
class EmotionReading:
    """The derived label with the evidence that decided it."""

    label: EmotionLabel
    method: str  # "cues", "subgroup", "polarity" or "default" (Neutral)
    cues: tuple[str, ...]  # the cue words that matched the chosen label, strongest first
    polarity: float  # VADER compound of the name and tags, -1..1

    @property
    def sentiment(self) -> str:
        """Positive/negative/neutral: fixed by the label where it has a polarity, else by VADER."""
        if self.label is E.NEUTRAL:
            return "neutral"
        if self.label is E.HAPPINESS:
            return "positive"
        if self.label in (E.ANGER, E.DISGUST, E.FEAR, E.SADNESS):
            return "negative"
        if self.polarity >= POLARITY_THRESHOLD:
            return "positive"
        if self.polarity <= -POLARITY_THRESHOLD:
            return "negative"
        return "neutral"


def tokens(text: str) -> list[str]:
    return [t for t in re.split(r"[^\w!?+'’-]+|[-’']", text.lower()) if t]


@lru_cache(maxsize=1)
def _vader():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def polarity(text: str) -> float:
    return float(_vader().polarity_scores(text)["compound"])


def read_emotion(name: str, tags: Sequence[str], subgroup: str | None) -> EmotionReading:
    """Derive the label of an emoji from its name, tags and subgroup (see the module docstring)."""
    scores = {label: 0.0 for label in E}
    matched: dict[EmotionLabel, dict[str, float]] = {label: {} for label in E}
    prior = _SUBGROUP_PRIOR.get(subgroup or "")
    if prior:
        scores[prior[0]] += prior[1]
    weighted = [(t, 2.0) for t in tokens(name)] + [(t, 1.0) for tag in tags for t in tokens(tag)]
    for token, weight in weighted:
        for label, cues in _CUES.items():
            if token in cues:
                gain = cues[token] * weight
                scores[label] += gain
                matched[label][token] = matched[label].get(token, 0.0) + gain
    pol = polarity(" ".join([name, *tags]))
    best = max(_PRIORITY, key=lambda label: (scores[label], -_PRIORITY.index(label)))
    if scores[best] >= MIN_SCORE:
        method = "cues" if matched[best] else "subgroup"
        cues = tuple(sorted(matched[best], key=lambda t: -matched[best][t]))
        return EmotionReading(best, method, cues, pol)
    if subgroup in _POLARITY_SUBGROUPS and abs(pol) >= FALLBACK_THRESHOLD:
        return EmotionReading(E.HAPPINESS if pol > 0 else E.SADNESS, "polarity", (), pol)
    return EmotionReading(E.NEUTRAL, "default", (), pol)


def emotion_text(reading: EmotionReading) -> str:
    """The free-text ``emotion`` field, phrased like the published sticker knowledge."""
    text = f"The sticker conveys a sense of {_PHRASES[reading.label]}"
    if reading.cues:
        text += ", suggesting " + _join([c for c in reading.cues[:3] if c.isalpha()] or list(reading.cues[:1]))
    if reading.sentiment == "neutral":
        text += ". The overall emotion is neutral, neither positive nor negative."
    else:
        text += f". The overall emotion is {reading.sentiment}."
    return text


def _join(words: Sequence[str]) -> str:
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


# Emotion words of running text (a user's message, a search query), as prefixes of lower-case
# tokens. Humour words ("funny", "playful", "amusing") and bare polarity ("positive") are left out
# on purpose: in sticker talk they go with every emotion, so they say nothing about which one.
_TEXT_STEMS: dict[EmotionLabel, tuple[str, ...]] = {
    E.ANGER: tuple(
        "anger angry angri aggress rage furious fury annoy irritat frustrat hostil menac hate hatred resent "
        "outrag fuming livid grumpy pissed mad".split()
    ),
    E.DISGUST: tuple(
        "disgust gross revolt repuls nause vomit yuck distaste contempt disapprov sicken repugn ew".split()
    ),
    E.FEAR: tuple(
        "fear afraid scared scary frighten terrif anxi nervous panic worr dread horror horrif alarm spook creep "
        "threat uneas".split()
    ),
    E.HAPPINESS: tuple("happy happi joy cheer delight glad excite love celebrat elat congrat yay won win".split()),
    E.NEUTRAL: tuple("neutral calm indifferen serene relax matter-of-fact bored quiet".split()),
    E.SADNESS: tuple(
        "sad sorrow grief griev cry cried tear tears melanchol depress disappoint unhappy lonel despair heartbroken "
        "heartbreak gloom miser frown mourn regret hurt fail lost upset".split()
    ),
    E.SURPRISE: tuple(
        "surpris shock astonish amaz stun startl disbelief unexpected wow astound gasp speechless awe omg whoa".split()
    ),
}
_EXACT_ONLY = {"mad", "ew", "won", "win", "tear", "awe", "lost", "wow"}  # too short to use as prefixes
# What may follow a stem: inflections and common derivations, so "worried" and "anxiety" match
# but "crystal" (cry-), "gladiator" (glad-) and "saddle" (sad-) do not.
_SUFFIXES = frozenset(
    " s es e d ed ied ies ing ying ning ned ness iness ly y ier iest ful ion ions ive ivity ity ety ment ments ous "
    "eous ic al a ated ate ating ance ant able ce t ulations ement er ers ".split(" ")
)


def _matches(token: str, stem: str) -> bool:
    if stem in _EXACT_ONLY:
        return token == stem
    return token.startswith(stem) and token[len(stem) :] in _SUFFIXES


@lru_cache(maxsize=65536)
def _token_labels(token: str) -> tuple[EmotionLabel, ...]:
    """The labels whose stems match ``token`` (memoised: running text repeats its words a lot)."""
    return tuple(label for label, stems in _TEXT_STEMS.items() if any(_matches(token, stem) for stem in stems))


def text_emotions(text: str) -> dict[EmotionLabel, float]:
    """Share of the emotion words in ``text`` that belong to each label (empty if there are none)."""
    counts: dict[EmotionLabel, int] = {}
    if re.search(r"\?!|!\?", text):  # "you're moving?!": disbelief
        counts[E.SURPRISE] = 1
    for token in re.findall(r"[a-z][a-z'-]*", text.lower()):
        for label in _token_labels(token):
            counts[label] = counts.get(label, 0) + 1
    total = sum(counts.values())
    return {label: n / total for label, n in counts.items()} if total else {}
