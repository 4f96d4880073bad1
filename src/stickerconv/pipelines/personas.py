"""User profiles from Python: self-instruct generation with ROUGE-L de-duplication, and the label check.

The same work as ``stickerconv personas generate | check``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stickerconv.agent4sc.personas import DEFAULT_THRESHOLD, load_personas
from stickerconv.pipelines.common import ProgressFactory, no_progress

if TYPE_CHECKING:
    from stickerconv.agent4sc.personas import GenerationReport
    from stickerconv.llm import LLMFactory

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PersonaOptions:
    """How many profiles ``out`` should hold and which model writes them. The run is resumable: ``out`` is
    appended to, and a rerun only makes the missing ones."""

    n_personas: int
    out: Path
    seeds: Path | None = None  # seed profiles (JSON/JSONL); None = the shipped seeds
    threshold: float = DEFAULT_THRESHOLD  # reject a situation whose ROUGE-L F1 to a kept one is this or more
    seed: int = 0  # of the example sampling
    llm: str | None = None
    config: Path | None = None
    store: Path | None = None  # None = out.with_suffix(".llm.sqlite"), beside the profiles
    cache: str | None = None

    @property
    def store_path(self) -> Path:
        """Beside the profiles by default, so that a rerun of the same command replays its calls for free."""
        return self.store or Path(self.out).with_suffix(".llm.sqlite")


@dataclass(frozen=True)
class PersonaResult:
    """What the run left in ``out``; ``complete`` is False when it stopped short (rerun to continue)."""

    options: PersonaOptions
    report: GenerationReport

    @property
    def complete(self) -> bool:
        return self.report.accepted >= self.options.n_personas

    @property
    def candidates(self) -> Path:
        return Path(self.options.out).with_suffix(".candidates.jsonl")

    def to_dict(self) -> dict[str, Any]:
        report = self.report
        return {
            "out": str(report.out),
            "target": report.target,
            "accepted": report.accepted,
            "new": report.new,
            "rejected_similar": report.rejected_similar,
            "failed_calls": report.failed_calls,
            "emotions": dict(report.emotions.most_common()),
            "candidates": str(self.candidates),
            "complete": self.complete,
        }


def generate_personas(
    options: PersonaOptions, *, progress: ProgressFactory = no_progress, llm_factory: LLMFactory | None = None
) -> PersonaResult:
    """Append accepted profiles to ``options.out`` until it holds ``n_personas``. ``llm_factory`` replaces the one
    built from the options' llm/config/store/cache (tests register scripted backends on it)."""
    from stickerconv.agent4sc.personas import PersonaGenerator
    from stickerconv.llm import LLMConfig, LLMFactory

    if llm_factory is None:
        config = LLMConfig.resolve(options.config, llm=options.llm, store=options.store_path, cache=options.cache)
        llm_factory = LLMFactory(config)
    seeds = load_personas(options.seeds) if options.seeds else None
    generator = PersonaGenerator(
        llm_factory.chat_model("persona_generator"), seeds, threshold=options.threshold, seed=options.seed
    )
    with progress("generating personas") as update:
        report = asyncio.run(generator.generate(options.n_personas, Path(options.out), on_progress=update))
    log.info("%d/%d profiles in %s (%d new)", report.accepted, options.n_personas, options.out, report.new)
    return PersonaResult(options, report)


@dataclass(frozen=True)
class EmotionCount:
    raw: str
    count: int
    label: str | None  # None: the raw emotion maps to none of the 7 labels


@dataclass(frozen=True)
class PersonaCheck:
    """Profiles in a file and how their raw emotions normalise to the 7 labels, most frequent first."""

    path: Path
    profiles: int
    emotions: list[EmotionCount]

    @property
    def unknown(self) -> list[str]:
        return [e.raw for e in self.emotions if e.label is None]

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "profiles": self.profiles,
            "emotions": [{"raw": e.raw, "count": e.count, "label": e.label} for e in self.emotions],
            "unknown": self.unknown,
        }


def check_personas(path: Path) -> PersonaCheck:
    """Load and validate the profiles (a bad record raises with its file and line)."""
    from stickerconv.schema import normalise_emotion

    personas = load_personas(path)
    emotions = []
    for raw, count in Counter(p.emotion for p in personas).most_common():
        try:
            label: str | None = normalise_emotion(raw).value
        except ValueError:
            label = None
        emotions.append(EmotionCount(raw, count, label))
    return PersonaCheck(Path(path), len(personas), emotions)
