"""``stickerconv eval ...``: run a responder over a test set, score prediction files, report.

Each command parses its flags into the options object of :mod:`stickerconv.pipelines.evaluation` (whose
defaults are the flags' defaults), runs that pipeline and prints its result.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic_core import to_jsonable_python

from stickerconv.cli.common import (
    CacheOption,
    ConfigOption,
    JsonOption,
    LLMOption,
    ProfileOption,
    StickersOption,
    UserError,
    console,
    progress_bar,
)
from stickerconv.data.samples import STYLES
from stickerconv.evaluate.retrieval import SCORERS
from stickerconv.pipelines import evaluation as pipeline
from stickerconv.pipelines.evaluation import (
    ENCODERS,
    MECHANISMS,
    EpitomeTrainOptions,
    PredictOptions,
    RetrievalOptions,
    ScoreOptions,
)
from stickerconv.responders import RESPONDERS

eval_app = typer.Typer(help="Predict with a responder, score predictions, compare systems.", no_args_is_help=True)

BootstrapOption = Annotated[int, typer.Option(min=0, help="Bootstrap resamples behind each 95% interval (0: none).")]


def _print_json(payload: Any) -> None:
    """The result as JSON on stdout, scores without their per-item values (the files keep what they keep)."""
    console.print_json(json.dumps(to_jsonable_python(payload, exclude_none=False), ensure_ascii=False))


def _results_json(results: dict[str, Any]) -> dict[str, Any]:
    return {name: result.model_dump(mode="json", exclude={"per_item"}) for name, result in results.items()}


@eval_app.command("predict")
def predict(
    responder: Annotated[str, typer.Option(help=f"One of {', '.join(RESPONDERS)}.")],
    data: Annotated[
        Path, typer.Option(help="Test conversations or samples (.jsonl/.json/.parquet, a run folder; told by content).")
    ],
    out: Annotated[Path, typer.Option(help="Predictions file to write: .json (one JSON array), .jsonl or .parquet.")],
    stickers: StickersOption = None,
    llm: LLMOption = None,
    config: ConfigOption = None,
    concurrency: Annotated[int, typer.Option(min=1)] = PredictOptions.concurrency,
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N samples.")] = None,
    style: Annotated[str, typer.Option(help=f"Sample rendering: {' or '.join(STYLES)}.")] = PredictOptions.style,
    image_root: Annotated[str | None, typer.Option(help="Prefix cut from image paths in the samples.")] = None,
    cache: CacheOption = None,
    checkpoint: Annotated[Path | None, typer.Option(help="PEGS checkpoint folder (pegs-* responders).")] = None,
    profile: ProfileOption = PredictOptions.profile,
    max_new_tokens: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Reply budget of every responder (default: the profile's: PEGS the checkpoint's, 64 unless trained "
            "otherwise, or 512 under --profile paper; the LLM baselines 200 under both).",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Predict a reply (text + sticker) for every assistant turn; rerun to resume after a crash.
    The LLM's role is 'responder'; its store defaults to OUT.llm.sqlite."""
    options = PredictOptions(
        responder=responder,
        data=data,
        out=out,
        stickers=stickers,
        llm=llm,
        config=config,
        cache=cache,
        concurrency=concurrency,
        limit=limit,
        style=style,
        image_root=image_root,
        checkpoint=checkpoint,
        profile=profile,
        max_new_tokens=max_new_tokens,
    )
    result = pipeline.predict(options, progress=progress_bar)
    if as_json:
        _print_json(result)
        return
    console.print(result.source)
    budget = result.provenance.get("max_new_tokens", "?")
    console.print(f"{result.predictions} predictions in {result.out} ({profile} profile, at most {budget} new tokens)")


@eval_app.command("score")
def score(
    pred: Annotated[
        list[Path], typer.Option("--pred", help="Predictions file, any layout (repeat to compare systems).")
    ],
    out: Annotated[Path, typer.Option(help="Folder for scores.json, report.md and metrics.png.")],
    metrics: Annotated[
        str | None,
        typer.Option(
            help="Metrics or groups, comma-separated: bleu, sacrebleu, rouge, meteor, cider, bertscore, dist (all).",
        ),
    ] = None,
    name: Annotated[
        list[str] | None, typer.Option("--name", help="System name per --pred (default: file stem).")
    ] = None,
    encoder: Annotated[
        str,
        typer.Option(
            help=f"Sticker metrics, one of {', '.join(ENCODERS)}: proxy (offline, MiniLM over sticker text), "
            "clip[:MODEL], or none."
        ),
    ] = ScoreOptions.encoder,
    stickers: StickersOption = None,  # the proxy encoder reads sticker texts from it
    image_root: Annotated[Path | None, typer.Option(help="Where sticker image paths resolve (CLIP).")] = None,
    judge_llm: Annotated[
        str | None, typer.Option(help="LLM judge (local, openai:MODEL): empathy, consistency, ranking.")
    ] = None,
    config: ConfigOption = None,
    judge_items: Annotated[int | None, typer.Option(min=1, help="Judge a seeded subset of this many items.")] = None,
    judge_n: Annotated[int | None, typer.Option(min=1, help="Samples per item (default 5, 5 and 3).")] = None,
    epitome: Annotated[
        Path | None, typer.Option(help="EPITOME classifiers folder (ER/, IP/, EX/ from `eval epitome-train`).")
    ] = None,
    bootstrap: BootstrapOption = ScoreOptions.bootstrap,
    seed: Annotated[int, typer.Option()] = ScoreOptions.seed,
    as_json: JsonOption = False,
) -> None:
    """Score prediction files and write a side-by-side report. The judges' LLM role is 'judge'; their store
    defaults to OUT/judge.llm.sqlite."""
    wanted = tuple(m.strip() for m in metrics.split(",") if m.strip()) if metrics else None
    options = ScoreOptions(
        preds=tuple(pred),
        out=out,
        names=tuple(name) if name else None,
        metrics=wanted,
        encoder=encoder,
        stickers=stickers,
        image_root=image_root,
        judge_llm=judge_llm,
        config=config,
        judge_items=judge_items,
        judge_n=judge_n,
        epitome=epitome,
        bootstrap=bootstrap,
        seed=seed,
    )
    _print_score(pipeline.score(options, progress=progress_bar), as_json)


def _print_score(result: pipeline.ScoreResult, as_json: bool) -> None:
    if as_json:
        scores = {system: _results_json(results) for system, results in result.scores.items()}
        _print_json({"report": result.report, "samples": result.samples, "scores": scores})
        return
    for line in result.sources:
        console.print(line)
    for system, count in result.samples.items():
        console.print(f"{system}: {count} samples scored")
    console.print(f"report: {result.report}")


@eval_app.command("retrieval")
def retrieval(
    data: Annotated[Path, typer.Option(help="Test samples or predictions, any layout (told by content).")],
    stickers: Annotated[
        Path, typer.Option(help="Sticker library: the pool, and the retriever's index unless --checkpoint.")
    ],
    out: Annotated[Path | None, typer.Option(help="Write the results as JSON here.")] = None,
    train: Annotated[Path | None, typer.Option(help="Training samples: also report unseen vs seen stickers.")] = None,
    context: Annotated[
        str, typer.Option(help="Sample field the retriever reads: input_text or query.")
    ] = RetrievalOptions.context,
    bootstrap: BootstrapOption = RetrievalOptions.bootstrap,
    seed: Annotated[int, typer.Option(help="Seeds the sampled negatives and the intervals.")] = RetrievalOptions.seed,
    checkpoint: Annotated[
        Path | None,
        typer.Option(help="PEGS checkpoint folder: rank by its [IMG] retrieval embedding instead of the index."),
    ] = None,
    image_root: Annotated[
        Path | None, typer.Option(help="PEGS: root of the samples' image paths (default: --stickers).")
    ] = None,
    scorer: Annotated[
        str,
        typer.Option(
            help=f"{' or '.join(SCORERS)}: "
            + "; ".join(f"{k}, {v}" for k, v in SCORERS.items())
            + "; --checkpoint ranks with PEGS instead.",
        ),
    ] = RetrievalOptions.scorer,
    llm: LLMOption = None,
    config: ConfigOption = None,
    cache: CacheOption = None,
    concurrency: Annotated[
        int, typer.Option(min=1, help="tool: queries written at once.")
    ] = RetrievalOptions.concurrency,
    as_json: JsonOption = False,
) -> None:
    """Sticker retrieval protocols (1+9, 1+999, full pool) of the index's own embedding retriever, of the
    LLM + tool baseline (its query when made to send a sticker; LLM role 'responder', store OUT-stem.llm.sqlite),
    or of a PEGS checkpoint (greedy reply, then the forced [IMG] block's retrieval embedding per sample)."""
    options = RetrievalOptions(
        data=data,
        stickers=stickers,
        out=out,
        train=train,
        context=context,
        bootstrap=bootstrap,
        seed=seed,
        scorer=scorer,
        checkpoint=checkpoint,
        image_root=image_root,
        llm=llm,
        config=config,
        cache=cache,
        concurrency=concurrency,
    )
    _print_retrieval(pipeline.retrieval(options, progress=progress_bar), as_json)


def _print_retrieval(result: pipeline.RetrievalResult, as_json: bool) -> None:
    if as_json:
        _print_json({group: _results_json(results) for group, results in result.groups.items()})
        return
    console.print(result.source)
    if result.sent_share is not None:
        console.print(f"PEGS chose to send a sticker itself in {result.sent_share:.0%} of the ranked samples")
    for group in result.empty_groups:
        console.print(f"{group}: no test sample with a gold sticker in this group")
    for group, results in result.groups.items():
        for metric in results.values():
            console.print(f"{group}: {metric}", markup=False, highlight=False)  # signatures hold [...]


@eval_app.command("epitome-train")
def epitome_train(
    data: Annotated[
        list[str],
        typer.Option(
            help="Annotations per mechanism as MECH=FILE (ER=emotional-reactions.csv, IP=..., EX=...); repeat.",
        ),
    ],
    out: Annotated[Path, typer.Option(help="Folder for the three classifiers (ER/, IP/, EX/).")],
    base_model: Annotated[
        str, typer.Option(help="RoBERTa-style model: a hub id or a local folder.")
    ] = EpitomeTrainOptions.base_model,
    epochs: Annotated[int, typer.Option(min=1)] = EpitomeTrainOptions.epochs,
    batch_size: Annotated[int, typer.Option(min=1)] = EpitomeTrainOptions.batch_size,
    seed: Annotated[int, typer.Option()] = EpitomeTrainOptions.seed,
    as_json: JsonOption = False,
) -> None:
    """Train the EPITOME empathy classifiers (the original weights were never published) from
    annotated files in the public EPITOME format; `eval score --epitome OUT` then uses them."""
    files = {}
    for item in data:
        mechanism, sep, path = item.partition("=")
        if not sep:
            raise UserError(f"--data {item}: write MECH=FILE with MECH one of {', '.join(MECHANISMS)}")
        files[mechanism] = Path(path)
    options = EpitomeTrainOptions(
        data=files, out=out, base_model=base_model, epochs=epochs, batch_size=batch_size, seed=seed
    )
    result = pipeline.train_epitome(options, progress=progress_bar)
    if as_json:
        _print_json(result)
        return
    for mechanism, report in result.reports.items():
        console.print(
            f"{mechanism}: {report.n_train} train / {report.n_dev} dev, loss {report.final_loss:.3f}, "
            f"dev accuracy {report.dev_accuracy}, macro-F1 {report.dev_macro_f1} -> {report.out_dir}"
        )
    if result.missing:
        console.print(f"still missing for `eval score --epitome {out}`: {', '.join(result.missing)}")
