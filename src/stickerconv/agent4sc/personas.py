"""User personas: loading the published profile format, and self-instruct generation of new ones.

Generation follows the method reference (§2.4): few-shot prompts of random seed and machine-written
profiles, and ROUGE-L (F1, no stemmer) de-duplication of each candidate's situation against every
accepted one, seeds included. Each accepted profile is appended to the output at once, and every
candidate with its highest ROUGE-L goes to a log beside it, so a rerun continues where it stopped.
"""

from __future__ import annotations

import json
import logging
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from stickerconv.jsonl import RecordError, drop_torn_tail, iter_jsonl
from stickerconv.llm import ChatModel, LLMError, system, user
from stickerconv.schema import EmotionLabel, Persona

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.7  # the method reference's default; the authors' run used 0.6
SEED_FILE = "seed_profiles.jsonl"


def load_personas(path: Path | str) -> list[Persona]:
    """Profiles from a JSON array or JSON Lines file; a bad record raises with its file and line."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RecordError(path, exc.lineno, f"not valid JSON ({exc.msg})") from None
        out = []
        for number, record in enumerate(records, start=1):
            try:
                out.append(Persona.model_validate(record))
            except ValueError as exc:
                raise RecordError(path, number, f"record {number}: {exc}") from None
        return out
    return [persona for _, persona in iter_jsonl(path, Persona)]


def seed_personas() -> list[Persona]:
    """The small seed set shipped with StickerConv (the authors' seed file was not published)."""
    with resources.as_file(resources.files("stickerconv.agent4sc") / SEED_FILE) as path:
        return load_personas(path)


# ----------------------------------------------------------------------------- ROUGE-L


def rouge_tokens(text: str) -> list[str]:
    from rouge_score.tokenizers import DefaultTokenizer

    return DefaultTokenizer(use_stemmer=False).tokenize(text)


def _lcs(a: Sequence[str], b: Sequence[str]) -> int:
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if x == y else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


class RougeLIndex:
    """Max ROUGE-L F1 of a text against a growing set, exact, with a cheap bound to skip most pairs.

    The LCS of two token lists is at most their multiset overlap, so the unigram-overlap F1 bounds
    ROUGE-L F1 from above; only pairs whose bound could beat the running maximum need the LCS.
    """

    def __init__(self) -> None:
        self._docs: list[tuple[list[str], Counter[str]]] = []

    def __len__(self) -> int:
        return len(self._docs)

    def add(self, text: str) -> None:
        tokens = rouge_tokens(text)
        self._docs.append((tokens, Counter(tokens)))

    def max_f1(self, text: str) -> float:
        tokens = rouge_tokens(text)
        if not tokens:
            return 0.0
        counts, best = Counter(tokens), 0.0
        for other, other_counts in self._docs:
            if not other:
                continue
            overlap = sum((counts & other_counts).values())
            if _f1(overlap, len(tokens), len(other)) <= best:
                continue
            best = max(best, _f1(_lcs(tokens, other), len(tokens), len(other)))
        return best


def _f1(hits: int, n_a: int, n_b: int) -> float:
    if hits == 0:
        return 0.0
    precision, recall = hits / n_a, hits / n_b
    return 2 * precision * recall / (precision + recall)


# ----------------------------------------------------------------------------- generation


class _Draft(BaseModel):
    model_config = ConfigDict(extra="forbid")
    emotion: EmotionLabel  # generated profiles use the 7 classes directly
    persona: str = Field(min_length=20)
    situation: str = Field(min_length=20)


INSTRUCTION = (
    "Come up with a series of user profiles for an empathetic chat. Each profile has an emotion (one word), "
    "a persona (who the user is, in the second person, about 80 words) and a situation (what recently "
    "happened to them and what they want to talk about, in the second person, about 100 words). "
    "Make each new profile different from the examples in person, place and problem."
)


@dataclass
class GenerationReport:
    out: Path
    target: int
    accepted: int = 0  # in the output file now, earlier runs included
    new: int = 0  # accepted in this run
    rejected_similar: int = 0
    failed_calls: int = 0
    emotions: Counter[str] = field(default_factory=Counter)


class PersonaGenerator:
    def __init__(
        self,
        model: ChatModel,
        seeds: Sequence[Persona] | None = None,
        *,
        threshold: float = DEFAULT_THRESHOLD,
        n_seed_examples: int = 5,
        n_machine_examples: int = 2,
        seed: int = 0,
        max_calls_factor: int = 5,
    ):
        if not 0 < threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        self.model, self.threshold, self.seed = model, threshold, seed
        self.seeds = list(seeds) if seeds is not None else seed_personas()
        if not self.seeds:
            raise ValueError("persona generation needs at least one seed profile")
        self.n_seed_examples, self.n_machine_examples = n_seed_examples, n_machine_examples
        self.max_calls_factor = max_calls_factor

    def _messages(self, rng: random.Random, machine: list[Persona]):
        examples = rng.sample(self.seeds, min(self.n_seed_examples, len(self.seeds)))
        examples += rng.sample(machine, min(self.n_machine_examples, len(machine)))
        lines = [
            f"{i}. {p.model_dump_json(include={'emotion', 'persona', 'situation'})}" for i, p in enumerate(examples, 1)
        ]
        prompt = "\n".join([*lines, f"{len(examples) + 1}. "])
        return [system(INSTRUCTION), user(prompt)]

    async def generate(
        self, n: int, out: Path, *, on_progress: Callable[[int, int], None] | None = None
    ) -> GenerationReport:
        """Append accepted profiles to ``out`` until it holds ``n``; candidates go to ``out``.candidates.jsonl."""
        out = Path(out)
        log_path = out.with_suffix(".candidates.jsonl")
        for path in (out, log_path):
            drop_torn_tail(path)
        machine = load_personas(out) if out.is_file() and out.stat().st_size else []
        report = GenerationReport(out, n, accepted=len(machine))
        index = RougeLIndex()
        for persona in [*self.seeds, *machine]:
            index.add(persona.situation)
        calls, max_calls = 0, self.max_calls_factor * max(1, n - len(machine))
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("a", encoding="utf-8") as sink, log_path.open("a", encoding="utf-8") as cand_log:
            while len(machine) < n and calls < max_calls:
                # One RNG per call number, so a resumed run asks the same questions an uninterrupted one would.
                rng = random.Random(f"{self.seed}:{len(machine)}:{calls}")
                calls += 1
                settings = self.model.settings.model_copy(update={"seed": rng.randrange(2**31)})
                try:
                    result = await self.model.complete(self._messages(rng, machine), _Draft, settings=settings)
                except LLMError as exc:
                    report.failed_calls += 1
                    log.warning("persona generation call failed: %s", exc)
                    continue
                draft: _Draft = result.parsed
                score = index.max_f1(draft.situation)
                accepted = score < self.threshold
                entry = {"accepted": accepted, "max_rouge_l": round(score, 4), "key": result.key}
                cand_log.write(json.dumps(entry | draft.model_dump(mode="json"), ensure_ascii=False) + "\n")
                cand_log.flush()
                if not accepted:
                    report.rejected_similar += 1
                    continue
                persona = Persona(**draft.model_dump(mode="json"), id=f"gen-{len(machine) + 1:06d}")
                sink.write(persona.model_dump_json(exclude_none=True) + "\n")
                sink.flush()
                machine.append(persona)
                index.add(persona.situation)
                report.new += 1
                report.emotions[persona.emotion] += 1
                if on_progress:
                    on_progress(len(machine), n)
        report.accepted = len(machine)
        return report
