"""Text a person can read, cleaned the same way wherever a model wrote it: agents, baselines, PEGS, serving.

Why one bottom-layer module: the simulator's agents (``agent4sc``), the baselines (``responders``) and PEGS
clean model output with the same rules, and none of these rules needs a model, so they sit below every
layer that calls one instead of inside one of those layers.

**Readable replies** (``readable``). Small models under a token budget stop mid-sentence (the budget cuts
them) and repeat themselves ("I'm here to listen, I'm there to listen."); ``readable`` repairs both on the
text alone:

* **Complete sentences only.** A sentence ends with ``.``, ``!``, ``?`` or ``…`` (closing quotes or
  brackets and emoji may follow), or with an emoji alone, the way chat messages often end. Text after
  the last complete sentence is dropped. When no sentence completes, the trailing clause fragment is
  dropped instead (after the last ``,``/``;``/``:``/dash) and the rest closed with a full stop; text
  with no clause boundary either is returned as it is: cutting it would leave nothing to read.
* **No repeats.** A sentence that repeats an earlier one is dropped; so is a clause (a ``,``/``;``
  separated part of a sentence) that repeats an earlier clause. Comparison ignores case, punctuation
  and spacing, and counts near-repeats: clauses of at least ``NEAR_MIN_WORDS`` words whose normalised
  characters match for ``NEAR_RATIO`` or more ("I'm here to listen" / "I'm there to listen"), and
  clauses the shorter of which is a run of the longer's words and at least ``NEAR_INSIDE`` of its
  length ("that must be so hard" / "that must be so hard for you"). Short clauses only count when
  equal, so "I feel sad, I feel bad" stays.

Whitespace (newlines included) collapses to single spaces: these are chat messages.

**Utterances** (``clean_utterance``, ``fresh_lines``). A model asked for one chat message answers with a
transcript: a speaker prefix ("B: "), the prompt's turn counter, a leading "Hey!", quotes, and often the
lines it was shown; these keep the message and drop the rest.
"""

from __future__ import annotations

import re
from difflib import SequenceMatcher

__all__ = [
    "COPY_MIN_WORDS",
    "NEAR_INSIDE",
    "NEAR_MIN_WORDS",
    "NEAR_RATIO",
    "clean_utterance",
    "ends_mid_sentence",
    "fresh_lines",
    "has_repeat",
    "normalise",
    "readable",
    "sentences",
]

NEAR_MIN_WORDS = 4
NEAR_RATIO = 0.85
NEAR_INSIDE = 0.6

# Pictographs, dingbats, symbols and the joiners/selectors/skin tones that build emoji sequences.
_EMOJI = "\U0001f000-\U0001faff\u2600-\u27bf\u2b00-\u2bff\ufe0f\u200d"
_CLOSERS = "\"'”’)\\]»"
# A sentence ends at terminal punctuation (then closers and emoji), or at a run of emoji alone that ends the
# text or is followed by a capital: "I love 🍕 so much" is one sentence, "So happy 😊 See you" two.
# A missing space after the full stop ("a tone....The message") still ends a sentence after a lowercase word.
_SENTENCE = re.compile(
    rf"[.!?…]+[{_CLOSERS}]*(?:\s*[{_EMOJI}]+)*(?=\s|$)|(?<=[a-z])[.!?…]+(?=[A-Z])|[{_EMOJI}]+(?=\s+[A-Z]|\s*$)"
)
_CLAUSE_BREAK = re.compile(r"\s*[,;]\s*")
_FRAGMENT_BREAK = re.compile(r"[,;:]|\s[-–—]\s")
_TERMINAL = re.compile(rf"(?:[.!?…]+[{_CLOSERS}]*(?:\s*[{_EMOJI}]+)*|[{_EMOJI}]+)$")
_NOT_WORD = re.compile(r"[^\w\s]")


def _key(text: str) -> str:
    """Case, punctuation and spacing do not make a different sentence."""
    return " ".join(_NOT_WORD.sub(" ", text.replace("’", "'").replace("'", "")).split()).casefold()


def _same(a: str, b: str, *, inside: bool = False) -> bool:
    """Equal keys; or, for parts long enough to carry meaning, nearly equal, or (``inside``) one a run of the
    other's words that makes up most of it. Sentences are compared without ``inside``: a sentence that
    extends an earlier one keeps its new clauses, and the clause check drops the repeated one."""
    if a == b:
        return True
    if min(len(a.split()), len(b.split())) < NEAR_MIN_WORDS:
        return False
    short, long = sorted((a, b), key=len)
    if inside and f" {short} " in f" {long} " and len(short) >= NEAR_INSIDE * len(long):
        return True
    matcher = SequenceMatcher(None, a, b, autojunk=False)
    # The quick ratios bound ratio() from above and cost a fraction of it: most pairs differ at a glance.
    return (
        matcher.real_quick_ratio() >= NEAR_RATIO
        and matcher.quick_ratio() >= NEAR_RATIO
        and matcher.ratio() >= NEAR_RATIO
    )


def _split(text: str) -> tuple[list[str], str]:
    """Complete sentences, and the fragment after the last one (empty when the text ends complete)."""
    sentences, start = [], 0
    for match in _SENTENCE.finditer(text):
        sentence = text[start : match.end()].strip()
        if sentence:
            sentences.append(sentence)
        start = match.end()
    return sentences, text[start:].strip()


def _close_fragment(fragment: str) -> str:
    """A fragment without its unfinished last clause, closed with a full stop; as it is if it has no clause."""
    breaks = list(_FRAGMENT_BREAK.finditer(fragment))
    if not breaks:
        return fragment
    head = fragment[: breaks[-1].start()].rstrip()
    return f"{head}." if _key(head) else fragment


def _dedupe(sentences: list[str]) -> list[str]:
    """Sentences and clauses that repeat an earlier one of the same reply, dropped."""
    seen_sentences: list[str] = []
    seen_clauses: list[str] = []
    kept: list[str] = []
    for sentence in sentences:
        key = _key(sentence)
        if key and any(_same(key, s) for s in seen_sentences):
            continue
        seen_sentences.append(key)
        terminal = _TERMINAL.search(sentence)
        body, end = (sentence[: terminal.start()], terminal.group().strip()) if terminal else (sentence, "")
        parts = [p for p in _CLAUSE_BREAK.split(body) if p.strip()]
        clauses: list[str] = []
        for part in parts:
            clause_key = _key(part)
            if clause_key and any(_same(clause_key, c, inside=True) for c in seen_clauses):
                continue
            if clause_key:
                seen_clauses.append(clause_key)
            clauses.append(part.strip())
        if not clauses:
            continue
        if len(clauses) == len(parts):
            kept.append(sentence)
            continue
        text = ", ".join(clauses)
        kept.append(text[0].upper() + text[1:] + end)
    return kept


def readable(text: str) -> str:
    """The reply cut to its last complete sentence, without repeated sentences or clauses (see the module)."""
    text = " ".join(text.split())
    if not text:
        return ""
    sentences, fragment = _split(text)
    if not sentences:
        sentences = [_close_fragment(fragment)]
    return " ".join(_dedupe(sentences))


def sentences(text: str) -> list[str]:
    """The text's sentences, an unfinished last one included, as ``readable`` sees them."""
    complete, fragment = _split(" ".join(text.split()))
    return [*complete, fragment] if fragment else complete


def ends_mid_sentence(text: str) -> bool:
    """True when the text's last sentence is unfinished (what ``readable`` removes)."""
    text = " ".join(text.split())
    return bool(text) and bool(_split(text)[1])


def has_repeat(text: str) -> bool:
    """True when a sentence or clause repeats an earlier one of the same text (what ``readable`` drops)."""
    parts = sentences(text)
    return _dedupe(parts) != parts


COPY_MIN_WORDS = 4


def normalise(text: str) -> str:
    """Case and spacing do not make another utterance (the repetition guard's and ``fresh_lines``' key)."""
    return " ".join(text.split()).casefold()


def _strip_line(line: str) -> str:
    """A line without a speaker prefix ("B: ", "A:"), the prompt's turn counter ("[2/4]"), a leading "Hey!"
    or quotes."""
    line = line.strip().strip('"').strip()
    line = re.sub(r"^[\w .'-]{1,20}:(?:\s+|$)", "", line)
    line = re.sub(r"^(?:\[\d+/\d+\]|\d+/\d+(?=\s+[A-Z])):?\s*", "", line)
    line = re.sub(r"^\s*hey!\s*", "", line, flags=re.IGNORECASE)
    return line.strip().strip('"').strip()


def clean_utterance(text: str) -> str:
    """The first line, cleaned as the method reference cleans it (§2.6: no speaker prefix, no leading
    "Hey!"), and made ``readable`` (complete sentences, nothing said twice): a small model under a token
    budget stops mid-sentence and repeats its clauses, which gpt-3.5 rarely did."""
    return readable(_strip_line(next((ln for ln in text.strip().splitlines() if ln.strip()), "")))


def fresh_lines(text: str, prompt: str) -> tuple[str, ...]:
    """The answer's lines, cleaned, without the sentences copied from the prompt; lines left empty go.

    A small model often continues the transcript it was shown: it copies the last history line (its
    own previous message), the observation or its profile block, and writes its new message after it,
    on the same line or a later one. The first line is then a repeat the guard rejects however often
    it regenerates; these are what the simulator's manager may take instead (``ManagerConfig.fresh_lines``).
    A sentence of fewer than ``COPY_MIN_WORDS`` words counts as copied only when it is a whole line of
    the prompt: short phrases ("I'm sorry.") occur inside longer lines without being copies."""
    shown = normalise(prompt)
    shown_lines = {normalise(_strip_line(ln)) for ln in prompt.splitlines()}

    def copied(sentence: str) -> bool:
        key = normalise(sentence)
        return key in shown_lines or (len(key.split()) >= COPY_MIN_WORDS and key in shown)

    fresh = []
    for line in (_strip_line(ln) for ln in text.splitlines()):
        kept = readable(" ".join(s for s in sentences(line) if not copied(s)))
        if kept:
            fresh.append(kept)
    return tuple(fresh)
