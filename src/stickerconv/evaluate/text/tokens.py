"""The tokenisations the text metrics use, each as the paper's scripts produced it, offline.

* Treebank words (BLEU, METEOR): ``nltk.word_tokenize`` splits sentences with Punkt and then runs
  the Treebank word tokenizer on each. Punkt needs a download, so sentences are split after
  ``.``, ``!`` or ``?`` followed by whitespace instead; without any split, sentence-final periods
  inside a text would stay glued to their words.
* Whitespace words (CIDEr), lower-cased whitespace words (Distinct-n).
ROUGE and sacrebleu tokenise inside their libraries. Texts are compared after removing the
``<IMG>`` placeholder of a sticker and stripping (method reference §6).
"""

from __future__ import annotations

import re
from functools import cache

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
IMAGE_PLACEHOLDER = "<IMG>"


def clean(text: str) -> str:
    """The system text a metric compares: without ``<IMG>``, stripped."""
    return text.replace(IMAGE_PLACEHOLDER, "").strip()


def split_sentences(text: str) -> list[str]:
    """Sentences split after ``.``/``!``/``?`` + whitespace (the offline stand-in for Punkt)."""
    text = text.strip()
    return _SENTENCE_END.split(text) if text else []


@cache
def _treebank():  # one tokenizer object; it holds only compiled patterns
    from nltk.tokenize import NLTKWordTokenizer

    return NLTKWordTokenizer()


def treebank_words(text: str) -> list[str]:
    """``nltk.word_tokenize`` without Punkt: Treebank words of each sentence, case kept."""
    tokenizer = _treebank()
    return [token for sentence in split_sentences(text) for token in tokenizer.tokenize(sentence)]


def whitespace_words(text: str, lowercase: bool = False) -> list[str]:
    return (text.lower() if lowercase else text).split()
