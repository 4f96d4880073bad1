"""``stickerconv eval ...``: run a responder over a test set, score prediction files, report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stickerconv.cli_common import UserError, console, progress_bar

eval_app = typer.Typer(help="Predict with a responder, score predictions, compare systems.", no_args_is_help=True)


@eval_app.command("predict")
def predict(
    responder: Annotated[str, typer.Option(help="text (text-only LLM) or tool (LLM + sticker tool).")],
    data: Annotated[Path, typer.Option(help="Test conversations (JSONL/JSON/parquet/run folder) or a samples file.")],
    out: Annotated[Path, typer.Option(help="Predictions file to write (a JSON array of samples + predictions).")],
    stickers: Annotated[
        Path | None, typer.Option(help="Indexed sticker library (the tool responder needs one).")
    ] = None,
    llm: Annotated[str | None, typer.Option("--llm", help="local (default), local:/path.gguf or openai:MODEL.")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="LLM config file; role 'responder'.")] = None,
    concurrency: Annotated[int, typer.Option(min=1)] = 4,
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N samples.")] = None,
    style: Annotated[str, typer.Option(help="Sample rendering: v1.5 (default) or v0.")] = "v1.5",
    image_root: Annotated[str | None, typer.Option(help="Prefix cut from image paths in the samples.")] = None,
    cache: Annotated[str | None, typer.Option(help="use (default), replay, refresh or off.")] = None,
) -> None:
    """Predict a reply (text + sticker) for every assistant turn; rerun to resume after a crash."""
    import asyncio

    from stickerconv.evaluate.predict import load_items
    from stickerconv.evaluate.predict import predict as run_predict
    from stickerconv.llm import LLMConfig, LLMFactory
    from stickerconv.responders import build_responder
    from stickerconv.stickers.index import StickerIndex

    if style not in ("v0", "v1.5"):
        raise UserError(f"unknown style {style!r}; choose v1.5 or v0")
    items = load_items(data, style=style, image_root=image_root)[: limit or None]
    if not items:
        raise UserError(f"{data}: no assistant turns to predict")
    cfg = LLMConfig.load(config) if config else LLMConfig()
    overrides = {"llm": llm, "cache": cache, "store": out.with_name(out.name + ".llm.sqlite")}
    cfg = LLMConfig.model_validate(cfg.model_dump(exclude_unset=True) | {k: v for k, v in overrides.items() if v})
    factory = LLMFactory(cfg)
    index = StickerIndex.load(stickers) if stickers is not None else None
    chosen = build_responder(responder, factory, index)
    with progress_bar(f"predicting ({responder})") as update:
        count = asyncio.run(
            run_predict(chosen, items, out, concurrency=concurrency, image_root=image_root, on_progress=update)
        )
    console.print(f"{count} predictions in {out}")


@eval_app.command("score")
def score(
    pred: Annotated[list[Path], typer.Option("--pred", help="Predictions file (repeat to compare systems).")],
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
    bootstrap: Annotated[
        int, typer.Option(min=0, help="Bootstrap resamples behind each 95% interval (0: none).")
    ] = 1000,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Score prediction files and write a side-by-side report."""
    from stickerconv.evaluate.predict import load_predictions
    from stickerconv.evaluate.report import write_report
    from stickerconv.evaluate.score import score_predictions
    from stickerconv.evaluate.text import TextScorer

    names = name or [p.stem for p in pred]
    if len(names) != len(pred):
        raise UserError(f"{len(names)} --name for {len(pred)} --pred; give one name per file")
    if len(set(names)) != len(names):
        raise UserError(f"system names must differ: {', '.join(names)} (use --name)")
    wanted = [m.strip() for m in metrics.split(",") if m.strip()] if metrics else None
    scorer = TextScorer()
    scores = {}
    for system, path in zip(names, pred, strict=True):
        records = load_predictions(path)
        scores[system] = score_predictions(records, scorer, wanted, bootstrap=bootstrap, seed=seed)
        console.print(f"{system}: {len(records)} samples scored")
    report = write_report(scores, out)
    console.print(f"report: {report}")
