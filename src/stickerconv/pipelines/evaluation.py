"""The evaluation pipelines behind ``stickerconv eval ...``: predict with a responder, score prediction files,
run the sticker retrieval protocols, train the EPITOME classifiers.

Each takes one frozen options object whose field defaults are the commands' defaults, writes the same files
as its command and returns a typed result the CLI prints (and a notebook reads).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stickerconv.pipelines.common import PipelineError, ProgressFactory, check_choice, no_progress
from stickerconv.profiles import DEFAULT_PROFILE, Profile

if TYPE_CHECKING:
    from stickerconv.evaluate.judges.epitome import TrainReport
    from stickerconv.evaluate.retrieval.protocols import Scorer
    from stickerconv.evaluate.signature import MetricResult

log = logging.getLogger(__name__)

PAPER_MAX_NEW_TOKENS = 512  # PEGS's evaluation decoding budget in the paper's code (method reference §5.6)


# ------------------------------------------------------------------------------------------------ predict
@dataclass(frozen=True)
class PredictOptions:
    """``eval predict``: one responder over every assistant turn of a test set."""

    responder: str  # one of stickerconv.responders.RESPONDERS
    data: Path  # conversations or samples, any layout
    out: Path  # predictions file (.json, .jsonl or .parquet); rerunning resumes
    stickers: Path | None = None  # indexed sticker library (tool and pegs-* responders)
    llm: str | None = None
    config: Path | None = None  # LLM config file; role "responder"
    cache: str | None = None
    concurrency: int = 4
    limit: int | None = None  # only the first N items
    style: str = "v1.5"  # one of stickerconv.data.samples.STYLES
    image_root: str | None = None  # prefix cut from the samples' image paths
    checkpoint: Path | None = None  # PEGS checkpoint folder (pegs-* responders)
    profile: Profile = DEFAULT_PROFILE  # decoding settings: ours or the paper's (see max_new_tokens)
    max_new_tokens: int | None = None  # every responder's reply budget; None: the profile's (reply_budget)

    def reply_budget(self) -> int | None:
        """The reply budget the responder gets: ``max_new_tokens`` when set; under the ``paper`` profile 512 for
        PEGS (§5.6) while the LLM baselines keep the paper's 200 for them (§7); under ``default`` None: each
        responder's own (a PEGS checkpoint's decoding budget, 64 unless trained otherwise, with which its send
        threshold was fitted; the baselines' 200)."""
        if self.max_new_tokens is not None:
            return self.max_new_tokens
        if self.profile == "paper" and self.responder.startswith("pegs-"):
            return PAPER_MAX_NEW_TOKENS
        return None


@dataclass(frozen=True)
class PredictResult:
    out: Path
    predictions: int
    source: str  # what was read, as DataSource.describe() says it
    provenance: dict[str, str] = field(default_factory=dict)  # each prediction's pred_meta: responder, profile, budget


def predict(options: PredictOptions, *, progress: ProgressFactory = no_progress) -> PredictResult:
    """Predict a reply (text + sticker) for every assistant turn of ``options.data`` into ``options.out``.

    The LLM store defaults to ``<out>.llm.sqlite`` (a config file or ``store`` flag wins); PEGS generators
    write new stickers to ``<out stem>-generated-stickers``."""
    import asyncio

    from stickerconv.data.io import open_source, output_layout
    from stickerconv.data.samples import STYLES
    from stickerconv.evaluate.predict import load_items
    from stickerconv.evaluate.predict import predict as predict_items
    from stickerconv.llm import LLMConfig, LLMFactory
    from stickerconv.responders import RESPONDERS, build_responder
    from stickerconv.stickers.index import StickerIndex

    check_choice("responder", options.responder, RESPONDERS)
    check_choice("style", options.style, STYLES)
    out = options.out
    output_layout(out)
    source = open_source(options.data, ("conversations", "samples"))
    items = load_items(source, style=options.style, image_root=options.image_root)  # type: ignore[arg-type]
    items = items[: options.limit or None]
    if not items:
        raise PipelineError(f"{options.data}: no assistant turns to predict")
    config = LLMConfig.resolve(
        options.config,
        defaults={"store": out.with_name(out.name + ".llm.sqlite")},
        llm=options.llm,
        cache=options.cache,
    )
    index = StickerIndex.load(options.stickers) if options.stickers is not None else None
    responder = build_responder(
        options.responder,
        LLMFactory(config),
        index,
        checkpoint=options.checkpoint,
        generated_dir=out.with_name(out.stem + "-generated-stickers"),
        max_new_tokens=options.reply_budget(),
        profile=options.profile,
    )
    provenance = responder.describe() | {"profile": options.profile}
    with progress(f"predicting ({options.responder})") as update:
        count = asyncio.run(
            predict_items(
                responder,
                items,
                out,
                concurrency=options.concurrency,
                image_root=options.image_root,
                on_progress=update,
                provenance=provenance,
            )
        )
    log.info("%d predictions in %s", count, out)
    return PredictResult(out, count, source.describe(), provenance)


# ------------------------------------------------------------------------------------------------ score
@dataclass(frozen=True)
class ScoreOptions:
    """``eval score``: score prediction files side by side."""

    preds: Sequence[Path]  # one predictions file per system
    out: Path  # folder for scores.json, report.md and metrics.png
    names: Sequence[str] | None = None  # one per file (default: the file stems)
    metrics: Sequence[str] | None = None  # metric names or groups (default: all)
    encoder: str = "proxy"  # sticker metrics: proxy, clip[:MODEL] or none
    stickers: Path | None = None  # the library the proxy encoder reads sticker texts from
    image_root: Path | None = None  # where sticker image paths resolve (CLIP)
    judge_llm: str | None = None  # LLM judges (empathy, consistency, ranking) when given
    config: Path | None = None  # LLM config file for the judges; role "judge"
    judge_items: int | None = None  # judge a seeded subset of this many items
    judge_n: int | None = None  # samples per judged item
    epitome: Path | None = None  # EPITOME classifiers folder (ER/, IP/, EX/)
    bootstrap: int = 1000
    seed: int = 0


@dataclass(frozen=True)
class ScoreResult:
    scores: dict[str, dict[str, MetricResult]]  # system -> metric -> result
    report: Path  # report.md (scores.json and metrics.png beside it)
    samples: dict[str, int]  # system -> prediction records scored
    sources: list[str] = field(default_factory=list)  # what was read, one line per file


def score(options: ScoreOptions, *, progress: ProgressFactory = no_progress) -> ScoreResult:
    """Text, sticker, EPITOME and (with ``judge_llm``) LLM-judge metrics of every system, and the report.

    The judges' store defaults to ``<out>/judge.llm.sqlite``."""
    from stickerconv.data.io import open_source
    from stickerconv.evaluate.predict import load_predictions
    from stickerconv.evaluate.report import write_report
    from stickerconv.evaluate.score import score_predictions
    from stickerconv.evaluate.text.scorer import TextScorer

    check_choice("encoder", options.encoder.partition(":")[0], ENCODERS)
    names = list(options.names or [p.stem for p in options.preds])
    if len(names) != len(options.preds):
        raise PipelineError(f"{len(names)} --name for {len(options.preds)} --pred; give one name per file")
    if len(set(names)) != len(names):
        raise PipelineError(f"system names must differ: {', '.join(names)} (use --name)")
    sources = {name: open_source(path, ("predictions",)) for name, path in zip(names, options.preds, strict=True)}
    encoder = _sticker_encoder(options)
    epitome = None
    if options.epitome is not None:
        from stickerconv.evaluate.judges.epitome import EpitomeScorer

        epitome = EpitomeScorer(options.epitome)
    systems = {name: load_predictions(source) for name, source in sources.items()}
    scorer, wanted = TextScorer(), list(options.metrics) if options.metrics else None
    scores: dict[str, dict[str, MetricResult]] = {}
    for name, records in systems.items():
        scores[name] = score_predictions(
            records, scorer, wanted, encoder=encoder, bootstrap=options.bootstrap, seed=options.seed
        )
        if epitome is not None:
            scores[name] |= epitome.score(records, bootstrap=options.bootstrap, seed=options.seed)
        log.info("%s: %d samples scored", name, len(records))
    if options.judge_llm is not None:
        _judge(options, systems, scores, progress)
    scores = {name: with_profile(results, systems[name]) for name, results in scores.items()}
    report = write_report(scores, options.out)
    samples = {name: len(records) for name, records in systems.items()}
    return ScoreResult(scores, report, samples, [source.describe() for source in sources.values()])


def with_profile(results: dict[str, MetricResult], records: Sequence[Any]) -> dict[str, MetricResult]:
    """The results with the predictions' profile (``pred_meta.profile``, written by ``eval predict``) in their
    signatures, before the version: a score of a paper-profile run must say so wherever it is quoted.
    Predictions made before profiles existed carry none and their signatures stay as they were."""
    profiles = {(record.get("pred_meta") or {}).get("profile") for record in records} - {None}
    if not profiles:
        return results
    profile = profiles.pop() if len(profiles) == 1 else "mixed"

    def stamped(result: MetricResult) -> MetricResult:
        fields = {k: v for k, v in result.signature.items() if k != "version"} | {"profile": profile}
        if "version" in result.signature:
            fields["version"] = result.signature["version"]
        return result.model_copy(update={"signature": fields})

    return {name: stamped(result) for name, result in results.items()}


ENCODERS = ("proxy", "clip", "none")  # kinds of sticker encoder; proxy and clip take an optional ":MODEL"


def _sticker_encoder(options: ScoreOptions) -> Any:
    """The image-text encoder of the sticker metrics, or None (``encoder="none"``: no sticker metrics)."""
    if options.encoder == "none":
        return None
    from stickerconv.evaluate.multimodal.encoders import load_encoder
    from stickerconv.stickers.library import StickerLibrary

    library = StickerLibrary.load(options.stickers) if options.stickers is not None else None
    return load_encoder(options.encoder, image_root=options.image_root, library=library)


def _judge(
    options: ScoreOptions,
    systems: Mapping[str, list[dict[str, Any]]],
    scores: dict[str, dict[str, MetricResult]],
    progress: ProgressFactory,
) -> None:
    """Add the LLM judges' empathy and consistency, and each system's ``rank`` among them, to ``scores``."""
    import asyncio

    from stickerconv.evaluate.judges.llm_judges import JudgeConfig
    from stickerconv.evaluate.score import judge_subset, judge_systems
    from stickerconv.llm import LLMConfig, LLMFactory

    sizes = {len(records) for records in systems.values()}
    if len(sizes) != 1:
        raise PipelineError(f"judging compares the same items: the files hold {sorted(sizes)} samples")
    subset = judge_subset(sizes.pop(), options.judge_items, options.seed)
    config = LLMConfig.resolve(
        options.config, defaults={"store": options.out / "judge.llm.sqlite"}, llm=options.judge_llm
    )
    judge_config = JudgeConfig(n=options.judge_n, seed=options.seed, bootstrap=options.bootstrap)
    options.out.mkdir(parents=True, exist_ok=True)
    with progress("judging"):
        chat = LLMFactory(config).chat_model("judge")
        per_system, ranking = asyncio.run(judge_systems(systems, chat, judge_config, subset))
    for name, results in per_system.items():
        scores[name] |= results
        if f"rank_{name}" in ranking:
            scores[name]["rank"] = ranking[f"rank_{name}"]


# ------------------------------------------------------------------------------------------------ retrieval
@dataclass(frozen=True)
class RetrievalOptions:
    """``eval retrieval``: the retrieval protocols (1+9, 1+999, full pool) of one scorer."""

    data: Path  # test samples or predictions, any layout
    stickers: Path  # the pool, and the index of the index/tool scorers
    out: Path | None = None  # JSON of the results: {"all": {...}, "seen": {...}, "unseen": {...}}
    train: Path | None = None  # training samples: also the seen/unseen split
    context: str = "input_text"  # sample field the retriever reads
    bootstrap: int = 1000
    seed: int = 0  # seeds the sampled negatives and the intervals
    scorer: str = "index"  # one of stickerconv.evaluate.retrieval.SCORERS; --checkpoint ranks with PEGS
    checkpoint: Path | None = None  # PEGS checkpoint folder
    image_root: Path | None = None  # PEGS: root of the samples' image paths (default: stickers)
    llm: str | None = None  # tool scorer
    config: Path | None = None  # tool scorer: LLM config file; role "responder"
    cache: str | None = None  # tool scorer
    concurrency: int = 4  # tool scorer: queries written at once


@dataclass(frozen=True)
class RetrievalResult:
    groups: dict[str, dict[str, MetricResult]]  # "all", and "seen"/"unseen" with train -> metric -> result
    empty_groups: list[str]  # split groups without a test sample (left out of ``groups``)
    source: str
    sent_share: float | None = None  # PEGS: share of ranked samples where it chose to send a sticker itself
    out: Path | None = None


def retrieval(options: RetrievalOptions, *, progress: ProgressFactory = no_progress) -> RetrievalResult:
    """Rank the gold sticker of every test sample with the index, the tool baseline's forced query or a PEGS
    checkpoint; with ``train`` also on the seen and unseen stickers. Writes ``out`` when given; the tool
    scorer's LLM store defaults to ``<out stem>.llm.sqlite`` beside it."""
    import json

    from stickerconv.data.io import open_source
    from stickerconv.data.samples import load_sample_records
    from stickerconv.evaluate.retrieval import SCORERS
    from stickerconv.evaluate.retrieval.protocols import RetrievalConfig, score_retrieval_groups

    check_choice("scorer", options.scorer, SCORERS)
    if options.checkpoint is not None and options.scorer != "index":
        raise PipelineError("--checkpoint ranks with PEGS: leave out --scorer")
    source = open_source(options.data, ("samples", "predictions"))
    records = load_sample_records(source)
    train = load_sample_records(options.train) if options.train is not None else None
    scorer, sent_share = _retrieval_scorer(options, records, progress)
    config = RetrievalConfig(context=options.context, neg_seed=options.seed)
    groups = score_retrieval_groups(records, scorer, scorer.pool, config, options.bootstrap, options.seed, train)  # type: ignore[attr-defined]
    empty = [group for group in ("seen", "unseen") if train is not None and group not in groups]
    if options.out is not None:
        payload = {
            group: {name: result.model_dump(mode="json", exclude={"per_item"}) for name, result in results.items()}
            for group, results in groups.items()
        }
        options.out.parent.mkdir(parents=True, exist_ok=True)
        options.out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return RetrievalResult(groups, empty, source.describe(), sent_share, options.out)


def _retrieval_scorer(
    options: RetrievalOptions, records: Sequence[Mapping[str, Any]], progress: ProgressFactory
) -> tuple[Scorer, float | None]:
    """The scorer the options name, ready to rank ``records`` (PEGS and the tool baseline do their model work
    here, once per sample), and PEGS's share of samples where it chose to send a sticker itself."""
    from stickerconv.evaluate.retrieval.protocols import IndexScorer, retrieval_items
    from stickerconv.stickers.index import StickerIndex

    samples = [item.sample for item in retrieval_items(records, options.context)]
    if options.checkpoint is not None:
        from stickerconv.evaluate.retrieval.pegs_scorer import PegsScorer
        from stickerconv.stickers.library import StickerLibrary

        library = StickerLibrary.load(options.stickers)
        pegs = PegsScorer.from_checkpoint(options.checkpoint, library, options.image_root or options.stickers)
        with progress("PEGS: embedding the samples") as update:
            pegs.prepare(samples, on_progress=update)
        return pegs, pegs.sent_share
    index = StickerIndex.load(options.stickers)
    if options.scorer == "index":
        return IndexScorer(index), None
    from stickerconv.evaluate.retrieval.tool_scorer import ToolScorer
    from stickerconv.llm import LLMConfig, LLMFactory
    from stickerconv.responders import build_responder

    out = options.out
    defaults = {"store": out.with_name(out.stem + ".llm.sqlite")} if out is not None else None
    config = LLMConfig.resolve(options.config, defaults=defaults, llm=options.llm, cache=options.cache)
    responder = build_responder("tool", LLMFactory(config), index)
    with progress("tool baseline: writing sticker queries") as update:
        return ToolScorer.build(responder, samples, options.concurrency, update), None  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ epitome
MECHANISMS = ("ER", "IP", "EX")  # EPITOME's empathy mechanisms: emotional reactions, interpretations, explorations


@dataclass(frozen=True)
class EpitomeTrainOptions:
    """``eval epitome-train``: the three EPITOME classifiers from annotated files."""

    data: Mapping[str, Path]  # mechanism (ER, IP, EX) -> annotations file in the public EPITOME format
    out: Path  # folder for ER/, IP/, EX/
    base_model: str = "roberta-base"
    epochs: int = 4
    batch_size: int = 32
    seed: int = 0


@dataclass(frozen=True)
class EpitomeTrainResult:
    reports: dict[str, TrainReport]  # mechanism -> training report
    missing: list[str]  # mechanisms still without a classifier under out


def train_epitome(options: EpitomeTrainOptions, *, progress: ProgressFactory = no_progress) -> EpitomeTrainResult:
    """Train one classifier per given mechanism into ``out/<MECH>``; ``eval score --epitome out`` uses them."""
    from stickerconv.evaluate.judges.epitome import TrainConfig, train_classifier

    files = {}
    for mechanism, path in options.data.items():
        if mechanism.upper() not in MECHANISMS:
            raise PipelineError(f"--data {mechanism}={path}: write MECH=FILE with MECH one of {', '.join(MECHANISMS)}")
        files[mechanism.upper()] = Path(path)
    config = TrainConfig(
        base_model=options.base_model, epochs=options.epochs, batch_size=options.batch_size, seed=options.seed
    )
    reports = {}
    for mechanism, path in files.items():
        with progress(f"training {mechanism}"):
            reports[mechanism] = train_classifier(mechanism, path, options.out / mechanism, config)
    missing = [m for m in MECHANISMS if not (options.out / m).is_dir()]
    return EpitomeTrainResult(reports, missing)
