"""``stickerconv eval ...``: run a responder over a test set, score prediction files, report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stickerconv.cli.common import UserError, console, progress_bar

eval_app = typer.Typer(help="Predict with a responder, score predictions, compare systems.", no_args_is_help=True)


@eval_app.command("predict")
def predict(
    responder: Annotated[str, typer.Option(help="text, tool (LLM baselines), pegs-ret, pegs-gen or pegs-rag.")],
    data: Annotated[
        Path, typer.Option(help="Test conversations or samples (.jsonl/.json/.parquet, a run folder; told by content).")
    ],
    out: Annotated[Path, typer.Option(help="Predictions file to write: .json (one JSON array), .jsonl or .parquet.")],
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
    checkpoint: Annotated[Path | None, typer.Option(help="PEGS checkpoint folder (pegs-* responders).")] = None,
) -> None:
    """Predict a reply (text + sticker) for every assistant turn; rerun to resume after a crash."""
    import asyncio

    from stickerconv.data.io import open_source, output_layout
    from stickerconv.evaluate.predict import load_items
    from stickerconv.evaluate.predict import predict as run_predict
    from stickerconv.llm import LLMConfig, LLMFactory
    from stickerconv.responders import build_responder
    from stickerconv.stickers.index import StickerIndex

    if style not in ("v0", "v1.5"):
        raise UserError(f"unknown style {style!r}; choose v1.5 or v0")
    output_layout(out)
    source = open_source(data, ("conversations", "samples"))
    items = load_items(source, style=style, image_root=image_root)[: limit or None]
    console.print(source.describe())
    if not items:
        raise UserError(f"{data}: no assistant turns to predict")
    cfg = LLMConfig.load(config) if config else LLMConfig()
    overrides = {"llm": llm, "cache": cache, "store": out.with_name(out.name + ".llm.sqlite")}
    cfg = LLMConfig.model_validate(cfg.model_dump(exclude_unset=True) | {k: v for k, v in overrides.items() if v})
    factory = LLMFactory(cfg)
    index = StickerIndex.load(stickers) if stickers is not None else None
    generated = out.with_name(out.stem + "-generated-stickers")  # where pegs-gen/rag put new stickers
    chosen = build_responder(responder, factory, index, checkpoint=checkpoint, generated_dir=generated)
    with progress_bar(f"predicting ({responder})") as update:
        count = asyncio.run(
            run_predict(chosen, items, out, concurrency=concurrency, image_root=image_root, on_progress=update)
        )
    console.print(f"{count} predictions in {out}")


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
        str, typer.Option(help="Sticker metrics: proxy (offline, MiniLM over sticker text), clip[:MODEL], or none.")
    ] = "proxy",
    stickers: Annotated[Path | None, typer.Option(help="Sticker library the proxy encoder reads texts from.")] = None,
    image_root: Annotated[Path | None, typer.Option(help="Where sticker image paths resolve (CLIP).")] = None,
    judge_llm: Annotated[
        str | None, typer.Option(help="LLM judge (local, openai:MODEL): empathy, consistency, ranking.")
    ] = None,
    judge_items: Annotated[int | None, typer.Option(min=1, help="Judge a seeded subset of this many items.")] = None,
    judge_n: Annotated[int | None, typer.Option(min=1, help="Samples per item (default 5, 5 and 3).")] = None,
    epitome: Annotated[
        Path | None, typer.Option(help="EPITOME classifiers folder (ER/, IP/, EX/ from `eval epitome-train`).")
    ] = None,
    bootstrap: Annotated[
        int, typer.Option(min=0, help="Bootstrap resamples behind each 95% interval (0: none).")
    ] = 1000,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Score prediction files and write a side-by-side report."""
    import asyncio

    from stickerconv.data.io import open_source
    from stickerconv.evaluate.predict import load_predictions
    from stickerconv.evaluate.report import write_report
    from stickerconv.evaluate.score import judge_subset, judge_systems, score_predictions
    from stickerconv.evaluate.text.scorer import TextScorer

    names = name or [p.stem for p in pred]
    if len(names) != len(pred):
        raise UserError(f"{len(names)} --name for {len(pred)} --pred; give one name per file")
    if len(set(names)) != len(names):
        raise UserError(f"system names must differ: {', '.join(names)} (use --name)")
    sources = {system: open_source(path, ("predictions",)) for system, path in zip(names, pred, strict=True)}
    wanted = [m.strip() for m in metrics.split(",") if m.strip()] if metrics else None
    sticker_encoder = None
    if encoder != "none":
        from stickerconv.evaluate.multimodal.encoders import load_encoder
        from stickerconv.stickers.library import StickerLibrary

        library = StickerLibrary.load(stickers) if stickers is not None else None
        sticker_encoder = load_encoder(encoder, image_root=image_root, library=library)
    scorer = TextScorer()
    epitome_scorer = None
    if epitome is not None:
        from stickerconv.evaluate.judges.epitome import EpitomeScorer

        epitome_scorer = EpitomeScorer(epitome)
    systems = {system: load_predictions(source) for system, source in sources.items()}
    for source in sources.values():
        console.print(source.describe())
    scores = {}
    for system, records in systems.items():
        scores[system] = score_predictions(
            records, scorer, wanted, encoder=sticker_encoder, bootstrap=bootstrap, seed=seed
        )
        if epitome_scorer is not None:
            scores[system] |= epitome_scorer.score(records, bootstrap=bootstrap, seed=seed)
        console.print(f"{system}: {len(records)} samples scored")
    if judge_llm is not None:
        from stickerconv.evaluate.judges.llm_judges import JudgeConfig
        from stickerconv.llm import LLMConfig, LLMFactory

        sizes = {len(r) for r in systems.values()}
        if len(sizes) != 1:
            raise UserError(f"judging compares the same items: the files hold {sorted(sizes)} samples")
        subset = judge_subset(sizes.pop(), judge_items, seed)
        factory = LLMFactory(LLMConfig(llm=judge_llm, store=out / "judge.llm.sqlite"))
        config = JudgeConfig(n=judge_n, seed=seed, bootstrap=bootstrap)
        out.mkdir(parents=True, exist_ok=True)
        with progress_bar("judging"):
            per_system, ranking = asyncio.run(judge_systems(systems, factory.chat_model("judge"), config, subset))
        for system, results in per_system.items():
            scores[system] |= results
            for metric, result in ranking.items():
                if metric == f"rank_{system}":
                    scores[system]["rank"] = result
    report = write_report(scores, out)
    console.print(f"report: {report}")


@eval_app.command("retrieval")
def retrieval(
    data: Annotated[Path, typer.Option(help="Test samples or predictions, any layout (told by content).")],
    stickers: Annotated[
        Path, typer.Option(help="Sticker library: the pool, and the retriever's index unless --checkpoint.")
    ],
    out: Annotated[Path | None, typer.Option(help="Write the results as JSON here.")] = None,
    train: Annotated[Path | None, typer.Option(help="Training samples: also report unseen vs seen stickers.")] = None,
    context: Annotated[str, typer.Option(help="Sample field the retriever reads: input_text or query.")] = "input_text",
    bootstrap: Annotated[int, typer.Option(min=0)] = 1000,
    seed: Annotated[int, typer.Option(help="Seeds the sampled negatives and the intervals.")] = 0,
    checkpoint: Annotated[
        Path | None,
        typer.Option(help="PEGS checkpoint folder: rank by its [IMG] retrieval embedding instead of the index."),
    ] = None,
    image_root: Annotated[
        Path | None, typer.Option(help="PEGS: root of the samples' image paths (default: --stickers).")
    ] = None,
    scorer_name: Annotated[
        str,
        typer.Option(
            "--scorer",
            help="index (the index over the dialogue text) or tool (the LLM + tool baseline's forced query); "
            "--checkpoint ranks with PEGS instead.",
        ),
    ] = "index",
    llm: Annotated[
        str | None, typer.Option("--llm", help="tool: local (default), local:/path.gguf or openai:MODEL.")
    ] = (None),
    llm_config: Annotated[
        Path | None, typer.Option("--config", help="tool: LLM config file; role 'responder'.")
    ] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="tool: queries written at once.")] = 4,
) -> None:
    """Sticker retrieval protocols (1+9, 1+999, full pool) of the index's own embedding retriever, of the
    LLM + tool baseline (its query when made to send a sticker), or of a PEGS checkpoint (greedy reply,
    then the forced [IMG] block's retrieval embedding per sample)."""
    import json

    from stickerconv.data.io import open_source
    from stickerconv.data.samples import load_sample_records
    from stickerconv.evaluate.retrieval.protocols import (
        IndexScorer,
        RetrievalConfig,
        retrieval_items,
        score_retrieval,
        split_seen,
    )

    if scorer_name not in ("index", "tool"):
        raise UserError(f"--scorer {scorer_name!r}: choose index or tool (or give --checkpoint for PEGS)")
    if checkpoint is not None and scorer_name != "index":
        raise UserError("--checkpoint ranks with PEGS: leave out --scorer")
    source = open_source(data, ("samples", "predictions"))
    records = load_sample_records(source)
    console.print(source.describe())
    train_records = load_sample_records(train) if train is not None else None
    config = RetrievalConfig(context=context, neg_seed=seed)
    if checkpoint is not None:
        from stickerconv.evaluate.retrieval.pegs_scorer import PegsScorer
        from stickerconv.stickers.library import StickerLibrary

        scorer = PegsScorer.from_checkpoint(checkpoint, StickerLibrary.load(stickers), image_root or stickers)
        with progress_bar("PEGS: embedding the samples") as update:
            scorer.prepare([item.sample for item in retrieval_items(records, context)], on_progress=update)
        if scorer.sent_share is not None:
            console.print(f"PEGS chose to send a sticker itself in {scorer.sent_share:.0%} of the ranked samples")
    elif scorer_name == "tool":
        from stickerconv.evaluate.retrieval.tool_scorer import ToolScorer
        from stickerconv.llm import LLMConfig, LLMFactory
        from stickerconv.responders import build_responder
        from stickerconv.stickers.index import StickerIndex

        cfg = LLMConfig.load(llm_config) if llm_config else LLMConfig()
        overrides = {"llm": llm, "store": out.with_name(out.stem + ".llm.sqlite") if out else None}
        cfg = LLMConfig.model_validate(cfg.model_dump(exclude_unset=True) | {k: v for k, v in overrides.items() if v})
        responder = build_responder("tool", LLMFactory(cfg), StickerIndex.load(stickers))
        with progress_bar("tool baseline: writing sticker queries") as update:
            scorer = ToolScorer.build(
                responder, [item.sample for item in retrieval_items(records, context)], concurrency, update
            )
    else:
        from stickerconv.stickers.index import StickerIndex

        scorer = IndexScorer(StickerIndex.load(stickers))
    groups = {"all": None}
    if train_records is not None:
        split = split_seen(train_records, records)
        groups |= {"seen": split.seen, "unseen": split.unseen}
    payload = {}
    for group, indices in groups.items():
        if indices is not None and not indices:
            console.print(f"{group}: no test sample with a gold sticker in this group")
            continue
        results = score_retrieval(records, scorer, scorer.pool, config, bootstrap, seed, indices)
        payload[group] = {k: v.model_dump(mode="json", exclude={"per_item"}) for k, v in results.items()}
        for result in results.values():
            console.print(f"{group}: {result}", markup=False, highlight=False)  # signatures hold [...]
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


@eval_app.command("epitome-train")
def epitome_train(
    data: Annotated[
        list[Path],
        typer.Option(
            help="Annotations per mechanism as MECH=FILE (ER=emotional-reactions.csv, IP=..., EX=...); repeat.",
        ),
    ],
    out: Annotated[Path, typer.Option(help="Folder for the three classifiers (ER/, IP/, EX/).")],
    base_model: Annotated[str, typer.Option(help="RoBERTa-style model: a hub id or a local folder.")] = "roberta-base",
    epochs: Annotated[int, typer.Option(min=1)] = 4,
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Train the EPITOME empathy classifiers (the original weights were never published) from
    annotated files in the public EPITOME format; `eval score --epitome OUT` then uses them."""
    from stickerconv.evaluate.judges.epitome import TrainConfig, train_classifier

    files = {}
    for item in data:
        mechanism, sep, path = str(item).partition("=")
        if not sep or mechanism.upper() not in ("ER", "IP", "EX"):
            raise UserError(f"--data {item}: write MECH=FILE with MECH one of ER, IP, EX")
        files[mechanism.upper()] = Path(path)
    config = TrainConfig(base_model=base_model, epochs=epochs, batch_size=batch_size, seed=seed)
    for mechanism, path in files.items():
        with progress_bar(f"training {mechanism}"):
            report = train_classifier(mechanism, path, out / mechanism, config)
        console.print(
            f"{mechanism}: {report.n_train} train / {report.n_dev} dev, loss {report.final_loss:.3f}, "
            f"dev accuracy {report.dev_accuracy}, macro-F1 {report.dev_macro_f1} -> {report.out_dir}"
        )
    missing = [m for m in ("ER", "IP", "EX") if not (out / m).is_dir()]
    if missing:
        console.print(f"still missing for `eval score --epitome {out}`: {', '.join(missing)}")
