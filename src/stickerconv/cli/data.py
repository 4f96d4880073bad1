"""``stickerconv data ...``: load, validate, describe, split and convert StickerConv datasets.

Each command parses its flags into the options object of :mod:`stickerconv.pipelines.dataset` (whose
defaults are the flags' defaults), runs that pipeline and prints its result.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic_core import to_jsonable_python
from rich.markup import escape
from rich.table import Table

from stickerconv.cli.common import ConfigOption, JsonOption, StickersOption, UserError, console, err, progress_bar
from stickerconv.data.convert import TARGETS
from stickerconv.data.samples import STYLES
from stickerconv.pipelines import dataset as pipeline
from stickerconv.pipelines.dataset import (
    ConvertOptions,
    QualityOptions,
    SplitOptions,
    StatsOptions,
    ValidateOptions,
)

data_app = typer.Typer(help="Load, validate, describe, split and convert StickerConv datasets.", no_args_is_help=True)

FileArg = Annotated[
    Path,
    typer.Argument(help="Conversations: .jsonl/.json/.parquet (layout told by content), a run folder or a folder."),
]


def _print_json(payload: Any) -> None:
    console.print_json(json.dumps(to_jsonable_python(payload), ensure_ascii=False))


@data_app.command("pull")
def pull(
    out: Annotated[Path, typer.Option(help="Folder for <split>.jsonl in the published format.")],
    hub_id: Annotated[str, typer.Argument(help="Hugging Face dataset id.")] = "NEUDM/StickerConv",
    from_file: Annotated[
        list[Path] | None,
        typer.Option("--from-file", help="Load these hand-downloaded files instead (repeatable; split = file name)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Download the published dataset from the Hugging Face Hub (or load downloaded files) as JSONL."""
    from stickerconv.data.hub import HubUnavailable
    from stickerconv.data.hub import pull as pull_dataset

    try:
        report = pull_dataset(hub_id, out, from_files=from_file or [])
    except HubUnavailable as exc:
        raise UserError(str(exc)) from None
    if as_json:
        _print_json(report)
        return
    for split, count in report.sessions.items():
        console.print(f"{split}: {count:,} sessions -> {out / (split + '.jsonl')}")


@data_app.command("validate")
def validate(
    file: FileArg,
    stickers: StickersOption = None,
    fix_out: Annotated[
        Path | None,
        typer.Option(
            "--fix-out", help="Write the valid records (first copies of duplicates) here: .jsonl, .json or .parquet."
        ),
    ] = None,
    require_images: Annotated[
        bool, typer.Option("--require-images", help="Count library stickers without an image file as problems.")
    ] = ValidateOptions.require_images,
    max_shown: Annotated[int, typer.Option(min=0, help="Problems to print (0: all).")] = 200,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON (every problem).")] = False,
) -> None:
    """Check schema and semantics; print every problem as file:line: field: message; exit 1 if any.
    Conversations, samples, predictions and chat examples are told apart by their keys."""
    options = ValidateOptions(file=file, stickers=stickers, fix_out=fix_out, require_images=require_images)
    result = pipeline.validate(options, progress=progress_bar)
    report = result.report
    if as_json:
        console.print_json(json.dumps(asdict(report) | {"ok": report.ok}))
    else:
        console.print(escape(result.source), highlight=False)
        shown = report.problems if max_shown == 0 else report.problems[:max_shown]
        for problem in shown:
            console.print(escape(str(problem)), highlight=False, soft_wrap=True)
        if len(shown) < len(report.problems):
            console.print(f"... and {len(report.problems) - len(shown):,} more (--max-shown 0 prints all)")
        if report.missing_images:
            err.print(
                f"warning: {len(report.missing_images):,} sticker(s) are in the library but their image file is "
                f"missing (first: {escape(str(report.missing_images[0]))}); --require-images makes this an error",
                highlight=False,
            )
        checked = f", {report.stickers_checked:,} stickers" if report.kind == "conversations" else ""
        verdict = "[green]valid[/]" if report.ok else f"[red]{len(report.problems):,} problem(s)[/]"
        console.print(f"{report.records:,} records ({report.kind}){checked}: {report.valid:,} valid; {verdict}")
        if fix_out is not None:
            console.print(f"wrote {report.written:,} valid records to {fix_out}")
    if not report.ok:
        raise typer.Exit(1)


@data_app.command("stats")
def stats(
    file: FileArg,
    out: Annotated[Path | None, typer.Option(help="Folder for stats.json, PNG plots and report.md.")] = None,
    profiles: Annotated[
        Path | None,
        typer.Option(help="Profiles (published format) to read persona emotions from, joined on persona+situation."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the statistics as JSON.")] = False,
) -> None:
    """The paper's dataset statistics; with --out also plots and a Markdown report."""
    result = pipeline.stats(StatsOptions(file=file, out=out, profiles=profiles), progress=progress_bar)
    if as_json:
        console.print_json(json.dumps(result.stats, ensure_ascii=False))
    else:
        console.print(escape(result.source), highlight=False)
        _print_stats(result.stats)
    if result.stats["skipped_records"]:
        err.print(
            f"warning: {result.stats['skipped_records']} malformed record(s) skipped; run `stickerconv data validate`"
        )
    if result.report is not None:
        console.print(f"wrote {result.stats_file}, the plots and {result.report}")


def _print_stats(result: dict) -> None:
    table = Table(title=f"StickerConv statistics: {escape(result['source'])}", show_header=False)
    table.add_column("statistic")
    table.add_column("value", justify="right")
    stickers, words = result["stickers"], result["words_per_utterance"]
    rows = [
        ("sessions", f"{result['sessions']:,}"),
        ("unique personas / scenarios", f"{result['unique_personas']:,} / {result['unique_scenarios']:,}"),
        ("turns per session (mean / max)", f"{result['turns']['mean']:.2f} / {result['turns']['max']}"),
        ("words per utterance user / assistant", f"{words['user']['mean']:.1f} / {words['system']['mean']:.1f}"),
        ("stickers total / unique", f"{stickers['total']:,} / {stickers['unique']:,}"),
        ("stickers per session (mean)", f"{stickers['per_session']['mean']:.2f}"),
    ]
    for role, name in (("user", "user"), ("system", "assistant")):
        use = stickers["by_role"][role]
        rows.append((f"{name} stickers (share of turns)", f"{use['stickers']:,} ({use['share_of_turns']:.1%})"))
        top = max(result["sticker_emotions"][role].items(), key=lambda kv: kv[1])
        rows.append((f"{name} sticker emotion, most common", f"{top[0]} ({top[1]:,})"))
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)


@data_app.command("quality")
def quality(
    files: Annotated[list[Path], typer.Argument(help="Conversation files or run folders, compared side by side.")],
    out: Annotated[Path, typer.Option(help="Folder for quality.json, the plot and quality.md.")] = QualityOptions.out,
    name: Annotated[list[str] | None, typer.Option("--name", help="Column name per file (default: its name).")] = None,
    self_bleu_sample: Annotated[
        int, typer.Option(min=2, help="Utterances per role sampled for self-BLEU.")
    ] = QualityOptions.self_bleu_sample,
    judge_llm: Annotated[
        str | None, typer.Option(help="Also judge empathy and consistency of a sample (local, openai:MODEL).")
    ] = None,
    config: ConfigOption = None,
    judge_items: Annotated[
        int, typer.Option(min=1, help="Assistant turns judged per file.")
    ] = QualityOptions.judge_items,
    judge_n: Annotated[int | None, typer.Option(min=1, help="Judge samples per item (default 5).")] = None,
    seed: Annotated[int, typer.Option()] = QualityOptions.seed,
    as_json: JsonOption = False,
) -> None:
    """What a dataset is worth: diversity, repetition, sticker use, sticker/text agreement, sentiment by turn.
    The judge's LLM role is 'judge'; its store defaults to OUT/judge.llm.sqlite."""
    options = QualityOptions(
        files=tuple(files),
        out=out,
        names=tuple(name) if name else None,
        self_bleu_sample=self_bleu_sample,
        judge_llm=judge_llm,
        config=config,
        judge_items=judge_items,
        judge_n=judge_n,
        seed=seed,
    )
    result = pipeline.quality(options, progress=progress_bar)
    for file, measured in zip(files, result.results, strict=True):
        if measured["skipped"]:
            err.print(
                f"warning: {file}: {measured['skipped']} malformed record(s) skipped; see `stickerconv data validate`"
            )
    if as_json:
        _print_json(dict(zip(result.names, result.results, strict=True)))
        return
    console.print(f"wrote {out / 'quality.json'}, the plot and {result.report}")


@data_app.command("split")
def split(
    file: FileArg,
    out: Annotated[Path, typer.Option(help="Folder for train/validation/test files and split.json.")],
    ratios: Annotated[str, typer.Option(help="train,validation,test shares summing to 1.")] = ",".join(
        map(str, SplitOptions.ratios)
    ),
    seed: Annotated[int, typer.Option(help="Shuffle seed; the same seed gives the same split.")] = SplitOptions.seed,
    layout: Annotated[
        str, typer.Option("--format", help="Split files: jsonl (JSON Lines), json (one JSON array) or parquet.")
    ] = SplitOptions.layout,
    as_json: JsonOption = False,
) -> None:
    """Split by persona (no persona in two splits), following each dialogue's sticker pool where it has one."""
    try:
        shares = tuple(float(r) for r in ratios.split(","))
    except ValueError:
        raise UserError(f"--ratios must be numbers like 0.8,0.1,0.1, got {ratios!r}") from None
    options = SplitOptions(file=file, out=out, ratios=shares, seed=seed, layout=layout)
    result = pipeline.split(options, progress=progress_bar)
    report = result.report
    if as_json:
        _print_json(report)
        return
    console.print(escape(result.source), highlight=False)
    if report.by_pool:
        console.print("split by sticker pool: test pool -> test, train pool -> train and validation")
    for name, count in report.sessions.items():
        console.print(f"{name}: {count:,} sessions, {report.groups[name]:,} personas -> {report.files[name]}")


@data_app.command("convert")
def convert(
    file: FileArg,
    to: Annotated[
        str,
        typer.Option("--to", help=f"{', '.join(TARGETS)}: samples (paper §4.4), chat (one example a session) or hf."),
    ],
    out: Annotated[
        Path, typer.Option(help="Output file (samples, chat: .jsonl, .json = one JSON array, .parquet) or folder (hf).")
    ],
    style: Annotated[
        str,
        typer.Option(
            help=f"Prompt style of samples, {' or '.join(STYLES)}: v1.5 (USER:/ASSISTANT:) or v0 (### Human:)."
        ),
    ] = ConvertOptions.style,
    stickers: StickersOption = None,
    image_root: Annotated[
        str | None, typer.Option(help="Path prefix that image paths are made relative to (default: SER30K Images/).")
    ] = None,
    image_dir: Annotated[
        Path | None, typer.Option(help="hf: folder holding the images under their relative paths (e.g. SER30K Images).")
    ] = None,
    system_prompt: Annotated[str | None, typer.Option(help="chat: system message ('' for none).")] = None,
    require_images: Annotated[
        bool, typer.Option("--require-images", help="hf: fail (write nothing) when a sticker image is not found.")
    ] = ConvertOptions.require_images,
    as_json: JsonOption = False,
) -> None:
    """Turn conversations into training data: per-turn samples, chat messages or an HF dataset."""
    options = ConvertOptions(
        file=file,
        to=to,
        out=out,
        style=style,
        stickers=stickers,
        image_root=image_root,
        image_dir=image_dir,
        system_prompt=system_prompt,
        require_images=require_images,
    )
    result = pipeline.convert(options, progress=progress_bar)
    report = result.report
    if as_json:
        _print_json(report)
        return
    what = {"samples": "samples", "chat": "chat examples", "hf": "dataset rows"}[to]
    console.print(escape(result.source), highlight=False)
    console.print(
        f"{report.sessions:,} sessions, {report.turns:,} turns, {report.stickers:,} stickers -> "
        f"{report.written:,} {what} in {out} ({result.written})"
    )
    if report.unknown_stickers:
        err.print(f"warning: {report.unknown_stickers:,} sticker(s) are not in {stickers}; kept their own paths")
    if report.images is not None:
        console.print(f"images embedded: {report.images:,}; not found: {report.unresolved_images:,}")
