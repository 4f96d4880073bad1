"""The dataset pipelines behind ``stickerconv data ...``: validate, describe, measure, split and convert.

Each takes one frozen options object whose field defaults are the commands' defaults, writes the same files
as its command and returns a typed result the CLI prints (and a notebook reads). ``data pull`` is one library
call (:func:`stickerconv.data.hub.pull`) and has no pipeline.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from stickerconv.data.split import DEFAULT_RATIOS
from stickerconv.pipelines.common import PipelineError, ProgressFactory, check_choice, no_progress

if TYPE_CHECKING:
    from stickerconv.data.convert import ConvertReport
    from stickerconv.data.io import Layout
    from stickerconv.data.resolve import StickerResolver
    from stickerconv.data.samples import Style
    from stickerconv.data.split import SplitReport
    from stickerconv.data.validate import ValidationReport

log = logging.getLogger(__name__)


def _resolver(stickers: Path | None) -> StickerResolver | None:
    """Resolves sticker references against the library at ``stickers``, when one is given."""
    if stickers is None:
        return None
    from stickerconv.data.resolve import StickerResolver
    from stickerconv.stickers.library import StickerLibrary

    return StickerResolver(StickerLibrary.load(stickers))


# ------------------------------------------------------------------------------------------------ validate
@dataclass(frozen=True)
class ValidateOptions:
    """``data validate``: schema and semantic checks of any record kind."""

    file: Path
    stickers: Path | None = None  # library to resolve sticker references against
    fix_out: Path | None = None  # write the valid records (first copies of duplicates) here
    require_images: bool = False  # library stickers without an image file count as problems


@dataclass(frozen=True)
class ValidateResult:
    report: ValidationReport
    source: str  # what was read, as DataSource.describe() says it


def validate(options: ValidateOptions, *, progress: ProgressFactory = no_progress) -> ValidateResult:
    """Every problem of ``options.file`` (``report.ok`` tells whether there were none)."""
    from stickerconv.data.io import open_source, output_layout
    from stickerconv.data.validate import validate as validate_source

    if options.fix_out is not None:
        output_layout(options.fix_out)
    source = open_source(options.file)
    resolver = _resolver(options.stickers)
    with progress("validating") as update:
        report = validate_source(
            source,
            resolver=resolver,
            require_images=options.require_images,
            fix_out=options.fix_out,
            on_progress=update,
        )
    return ValidateResult(report, source.describe())


# ------------------------------------------------------------------------------------------------ stats
@dataclass(frozen=True)
class StatsOptions:
    """``data stats``: the paper's dataset statistics."""

    file: Path  # conversations
    out: Path | None = None  # folder for stats.json, the PNG plots and report.md
    profiles: Path | None = None  # profiles to read persona emotions from (joined on persona + situation)


@dataclass(frozen=True)
class StatsResult:
    stats: dict[str, Any]  # what stats.json holds
    source: str
    stats_file: Path | None = None  # out/stats.json
    report: Path | None = None  # out/report.md


def stats(options: StatsOptions, *, progress: ProgressFactory = no_progress) -> StatsResult:
    """Statistics of the conversations; with ``out`` also stats.json, the plots and report.md.

    Raises :class:`PipelineError` when no session can be counted."""
    import json

    from stickerconv.data.io import open_source
    from stickerconv.data.stats import compute_stats, profile_emotions

    source = open_source(options.file, ("conversations",))
    emotions = None
    if options.profiles is not None:
        from stickerconv.agent4sc.personas import load_personas

        emotions = profile_emotions(p.model_dump() for p in load_personas(options.profiles))
    with progress("reading") as update:
        result = compute_stats(source, emotions, on_progress=update)
    if result["sessions"] == 0:
        raise PipelineError(f"{options.file}: no countable sessions ({result['skipped_records']} malformed record(s))")
    if result["skipped_records"]:
        log.info("%s: %d malformed record(s) skipped", options.file, result["skipped_records"])
    if options.out is None:
        return StatsResult(result, source.describe())
    from stickerconv.data.plots import write_plots
    from stickerconv.data.report import write_report

    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    stats_file = out / "stats.json"
    stats_file.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return StatsResult(result, source.describe(), stats_file, write_report(result, write_plots(result, out), out))


# ------------------------------------------------------------------------------------------------ quality
@dataclass(frozen=True)
class QualityOptions:
    """``data quality``: what datasets are worth, side by side."""

    files: Sequence[Path]  # conversation files or run folders
    out: Path = Path("quality")  # folder for quality.json, the plot and quality.md
    names: Sequence[str] | None = None  # one distinct column name per file (default: its name)
    self_bleu_sample: int = 1000  # utterances per role sampled for self-BLEU
    judge_llm: str | None = None  # also judge empathy and consistency of a sample
    config: Path | None = None  # LLM config file for the judge; role "judge"
    judge_items: int = 50  # assistant turns judged per file
    judge_n: int | None = None  # judge samples per item
    seed: int = 0


@dataclass(frozen=True)
class QualityResult:
    results: list[dict[str, Any]]  # one per file, in order (what quality.json holds)
    names: list[str]
    report: Path  # quality.md (quality.json and the plot beside it)


def quality(options: QualityOptions, *, progress: ProgressFactory = no_progress) -> QualityResult:
    """Diversity, repetition, sticker use, sticker/text agreement and sentiment by turn of every file; with
    ``judge_llm`` also LLM-judged empathy and consistency (store: ``<out>/judge.llm.sqlite`` by default).
    Each result's ``skipped`` counts its malformed records."""
    from stickerconv.evaluate.quality.metrics import QualityConfig, dataset_quality
    from stickerconv.evaluate.quality.report import write_quality

    files = list(options.files)
    names = list(options.names or [f.name if f.is_dir() else f.stem for f in files])
    if len(names) != len(files) or len(set(names)) != len(names):
        raise PipelineError(f"give one distinct --name per file ({len(files)} files, names: {', '.join(names)})")
    config = QualityConfig(self_bleu_sample=options.self_bleu_sample, seed=options.seed)
    results = []
    for label, file in zip(names, files, strict=True):
        with progress(f"measuring {label}") as update:
            result = dataset_quality(file, config, on_progress=update)
        if result["sessions"] == 0:
            raise PipelineError(f"{file}: no countable sessions ({result['skipped']} malformed record(s))")
        if options.judge_llm is not None:
            result["judges"] = _judge_quality(options, file, label, progress)
        results.append(result)
    return QualityResult(results, names, write_quality(results, names, options.out))


def _judge_quality(options: QualityOptions, file: Path, label: str, progress: ProgressFactory) -> dict[str, Any]:
    """Empathy and consistency of a seeded sample of the file's assistant turns, by the judge model."""
    import asyncio

    from stickerconv.evaluate.judges.llm_judges import JudgeConfig
    from stickerconv.evaluate.quality.metrics import judge_items, judge_quality
    from stickerconv.llm import LLMConfig, LLMFactory

    options.out.mkdir(parents=True, exist_ok=True)
    defaults = {"store": options.out / "judge.llm.sqlite"}
    config = LLMConfig.resolve(options.config, defaults=defaults, llm=options.judge_llm)
    records = judge_items(file, options.judge_items, options.seed)
    with progress(f"judging {label}"):
        chat = LLMFactory(config).chat_model("judge")
        return asyncio.run(judge_quality(records, chat, JudgeConfig(n=options.judge_n, seed=options.seed)))


# ------------------------------------------------------------------------------------------------ split
@dataclass(frozen=True)
class SplitOptions:
    """``data split``: train/validation/test by persona, and by sticker pool where the dialogues carry one."""

    file: Path  # conversations
    out: Path  # folder for the split files and split.json
    ratios: tuple[float, ...] = DEFAULT_RATIOS  # train, validation, test shares summing to 1
    seed: int = 0  # the same seed gives the same split
    layout: str = "jsonl"  # split files: jsonl, json or parquet


@dataclass(frozen=True)
class SplitResult:
    report: SplitReport
    source: str


def split(options: SplitOptions, *, progress: ProgressFactory = no_progress) -> SplitResult:
    """Split so that no persona appears in two splits and no test-pool sticker in training (``data/split.py``)."""
    from stickerconv.data.io import LAYOUT_SUFFIXES, open_source
    from stickerconv.data.split import split_file

    check_choice("format", options.layout, list(LAYOUT_SUFFIXES.values()))
    source = open_source(options.file, ("conversations",))
    with progress("reading") as update:
        report = split_file(
            source,
            options.out,
            ratios=options.ratios,
            seed=options.seed,
            layout=cast("Layout", options.layout),
            on_progress=update,
        )
    return SplitResult(report, source.describe())


# ------------------------------------------------------------------------------------------------ convert
@dataclass(frozen=True)
class ConvertOptions:
    """``data convert``: conversations into training data."""

    file: Path  # conversations
    to: str  # one of stickerconv.data.convert.TARGETS: samples, chat or hf
    out: Path  # file (samples, chat) or folder (hf)
    style: str = "v1.5"  # prompt style of samples: one of stickerconv.data.samples.STYLES
    stickers: Path | None = None  # library to resolve sticker references against
    image_root: str | None = None  # prefix image paths are made relative to (default: SER30K Images/)
    image_dir: Path | None = None  # hf: folder holding the images under their relative paths
    system_prompt: str | None = None  # chat: system message (None: the default one, "": none)
    require_images: bool = False  # hf: write nothing when a sticker image is not found


@dataclass(frozen=True)
class ConvertResult:
    report: ConvertReport
    source: str
    written: str  # what out is: "a dataset folder" or its layout's name


def convert(options: ConvertOptions, *, progress: ProgressFactory = no_progress) -> ConvertResult:
    """Per-turn samples, one chat example per session, or an HF dataset folder."""
    from stickerconv.data.chat import DEFAULT_SYSTEM_PROMPT
    from stickerconv.data.convert import TARGETS, ImageLocator
    from stickerconv.data.convert import convert as convert_source
    from stickerconv.data.io import LAYOUT_NAMES, open_source, output_layout
    from stickerconv.data.samples import STYLES

    check_choice("to", options.to, TARGETS)
    check_choice("style", options.style, STYLES)
    if options.image_dir is not None and not options.image_dir.is_dir():
        raise PipelineError(f"--image-dir {options.image_dir} is not a folder")
    written = "a dataset folder" if options.to == "hf" else LAYOUT_NAMES[output_layout(options.out)]
    source = open_source(options.file, ("conversations",))
    locator = ImageLocator(_resolver(options.stickers), options.image_root, options.image_dir)
    prompt = DEFAULT_SYSTEM_PROMPT if options.system_prompt is None else options.system_prompt or None
    with progress("reading") as update:
        report = convert_source(
            source,
            options.to,  # type: ignore[arg-type]
            options.out,
            style=cast("Style", options.style),
            locator=locator,
            system_prompt=prompt,
            require_images=options.require_images,
            on_progress=update,
        )
    return ConvertResult(report, source.describe(), written)
