"""Short forms of sticker annotations, for prompts that name many stickers (the lean Agent4SC calls).

Why: a library's annotations repeat their own boilerplate. The default pack's descriptions all read "The sticker
shows the … emoji … drawn in the Noto Color Emoji style. Related words: …", and its emotion texts "The sticker
conveys a sense of … The overall emotion is …"; a list of ten candidates spends most of its tokens on those
words, and every one of them is new text for a server's prefix cache. A phrase is boilerplate when its word
trigrams recur across the library (in at least ``share`` of the annotations, and in at least 3 of them): what
tells one sticker from another is what is left. Annotations written freely (the StickerConv stickers) share few
trigrams, so they lose little but their length cap.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from stickerconv.schema import Sticker

N = 3  # words per phrase: two-word phrases ("the sticker") would also cut content words that happen to recur
MIN_STICKERS = 3  # a phrase in fewer annotations than this is never boilerplate, however small the library


def _trigrams(words: Sequence[str]) -> Iterable[tuple[str, ...]]:
    return (tuple(words[i : i + N]) for i in range(len(words) - N + 1))


class _Field:
    """One annotation field's boilerplate: the trigrams that recur across the library."""

    def __init__(self, texts: Sequence[str], share: float):
        frequency = Counter(t for text in texts for t in set(_trigrams(text.split())))
        floor = max(MIN_STICKERS, share * len(texts))
        self.common = {t for t, n in frequency.items() if n >= floor}

    def strip(self, text: str, max_words: int) -> str:
        """``text`` without its boilerplate words (those inside a recurring trigram), at most ``max_words``;
        the text's first words when nothing else is left."""
        words = text.split()
        covered = [False] * len(words)
        for i, trigram in enumerate(_trigrams(words)):
            if trigram in self.common:
                covered[i : i + N] = [True] * N
        kept = [w for w, c in zip(words, covered, strict=True) if not c] or words
        return " ".join(kept[:max_words])


class StickerBriefs:
    """``briefs(sticker)`` -> ``"[Happiness] grinning face emoji 😀 cheerful, cheery, happy, …"``: the label, then
    what the description says that the library's other descriptions do not; ``briefs.emotion(sticker)`` the
    same for the emotion text. Built once per library (a pass over its annotations)."""

    def __init__(self, stickers: Sequence[Sticker], share: float = 0.2, max_words: int = 12):
        if not 0 < share <= 1:
            raise ValueError(f"share must be in (0, 1], got {share}")
        if max_words < 1:
            raise ValueError(f"max_words must be at least 1, got {max_words}")
        self.max_words = max_words
        self._description = _Field([s.description for s in stickers], share)
        self._emotion = _Field([s.emotion for s in stickers if s.emotion], share)

    def __call__(self, sticker: Sticker) -> str:
        return f"{_label(sticker)} {self._description.strip(sticker.description, self.max_words)}"

    def emotion(self, sticker: Sticker) -> str:
        """The emotion text's own words (the description's when it has none), after the label."""
        if not sticker.emotion:
            return self(sticker)
        return f"{_label(sticker)} {self._emotion.strip(sticker.emotion, self.max_words)}"


def _label(sticker: Sticker) -> str:
    return f"[{sticker.label.value if sticker.label else 'Unlabelled'}]"
