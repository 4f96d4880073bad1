"""``stickerconv data ...``: load, validate, describe, split and convert StickerConv datasets.

Commands parse options, call :mod:`stickerconv.data` and print; the data modules are imported inside
the commands so that ``stickerconv --help`` stays instant.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, cast

import typer
from rich.markup import escape
from rich.table import Table

from stickerconv.cli.common import UserError, console, err, progress_bar

if TYPE_CHECKING:
    from stickerconv.data.io import Layout

data_app = typer.Typer(help="Load, validate, describe, split and convert StickerConv datasets.", no_args_is_help=True)

FileArg = Annotated[
    Path,
    typer.Argument(help="Conversations: .jsonl/.json/.parquet (layout told by content), a run folder or a folder."),
]
StickersOption = Annotated[
    Path | None, typer.Option("--stickers", help="Sticker library folder to resolve sticker references against.")
]


def _resolver(stickers: Path | None):
    if stickers is None:
        return None
    from stickerconv.data.resolve import StickerResolver
    from stickerconv.stickers.library import StickerLibrary

    return StickerResolver(StickerLibrary.load(stickers))


@data_app.command("pull")
def pull(
    out: Annotated[Path, typer.Option(help="Folder for <split>.jsonl in the published format.")],
    hub_id: Annotated[str, typer.Argument(help="Hugging Face dataset id.")] = "NEUDM/StickerConv",
    from_file: Annotated[
        list[Path] | None,
        typer.Option("--from-file", help="Load these hand-downloaded files instead (repeatable; split = file name)."),
    ] = None,
) -> None:
    """Download the published dataset from the Hugging Face Hub (or load downloaded files) as JSONL."""
    from stickerconv.data.hub import HubUnavailable
    from stickerconv.data.hub import pull as pull_dataset

    try:
        report = pull_dataset(hub_id, out, from_files=from_file or [])
    except HubUnavailable as exc:
        raise UserError(str(exc)) from None
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
    ] = False,
    max_shown: Annotated[int, typer.Option(min=0, help="Problems to print (0: all).")] = 200,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON (every problem).")] = False,
) -> None:
    """Check schema and semantics; print every problem as file:line: field: message; exit 1 if any.
    Conversations, samples, predictions and chat examples are told apart by their keys."""
    from dataclasses import asdict

    from stickerconv.data.io import open_source, output_layout
    from stickerconv.data.validate import validate as run_validate

    if fix_out is not None:
        output_layout(fix_out)
    source = open_source(file)
    resolver = _resolver(stickers)
    with progress_bar("validating") as update:
        report = run_validate(
            source, resolver=resolver, require_images=require_images, fix_out=fix_out, on_progress=update
        )
    if as_json:
        console.print_json(json.dumps(asdict(report) | {"ok": report.ok}))
    else:
        console.print(escape(source.describe()), highlight=False)
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
    from stickerconv.data.io import open_source
    from stickerconv.data.stats import compute_stats, profile_emotions

    source = open_source(file, ("conversations",))
    emotions = None
    if profiles is not None:
        from stickerconv.agent4sc.personas import load_personas

        emotions = profile_emotions(p.model_dump() for p in load_personas(profiles))
    with progress_bar("reading") as update:
        result = compute_stats(source, emotions, on_progress=update)
    if result["sessions"] == 0:
        raise UserError(f"{file}: no countable sessions ({result['skipped_records']} malformed record(s))")
    if out is not None:
        from stickerconv.data.plots import write_plots
        from stickerconv.data.report import write_report

        out.mkdir(parents=True, exist_ok=True)
        (out / "stats.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        report = write_report(result, write_plots(result, out), out)
    if as_json:
        console.print_json(json.dumps(result, ensure_ascii=False))
    else:
        console.print(escape(source.describe()), highlight=False)
        _print_stats(result)
    if result["skipped_records"]:
        err.print(f"warning: {result['skipped_records']} malformed record(s) skipped; run `stickerconv data validate`")
    if out is not None:
        console.print(f"wrote {out / 'stats.json'}, the plots and {report}")


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
    out: Annotated[Path, typer.Option(help="Folder for quality.json, the plot and quality.md.")] = Path("quality"),
    name: Annotated[list[str] | None, typer.Option("--name", help="Column name per file (default: its name).")] = None,
    self_bleu_sample: Annotated[int, typer.Option(min=2, help="Utterances per role sampled for self-BLEU.")] = 1000,
    judge_llm: Annotated[
        str | None, typer.Option(help="Also judge empathy and consistency of a sample (local, openai:MODEL).")
    ] = None,
    judge_items: Annotated[int, typer.Option(min=1, help="Assistant turns judged per file.")] = 50,
    judge_n: Annotated[int | None, typer.Option(min=1, help="Judge samples per item (default 5).")] = None,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """What a dataset is worth: diversity, repetition, sticker use, sticker/text agreement, sentiment by turn."""
    from stickerconv.evaluate.quality.metrics import QualityConfig, dataset_quality
    from stickerconv.evaluate.quality.report import write_quality

    names = name or [f.name if f.is_dir() else f.stem for f in files]
    if len(names) != len(files) or len(set(names)) != len(names):
        raise UserError(f"give one distinct --name per file ({len(files)} files, names: {', '.join(names)})")
    config = QualityConfig(self_bleu_sample=self_bleu_sample, seed=seed)
    results = []
    for label, file in zip(names, files, strict=True):
        with progress_bar(f"measuring {label}") as update:
            result = dataset_quality(file, config, on_progress=update)
        if result["sessions"] == 0:
            raise UserError(f"{file}: no countable sessions ({result['skipped']} malformed record(s))")
        if result["skipped"]:
            err.print(
                f"warning: {file}: {result['skipped']} malformed record(s) skipped; see `stickerconv data validate`"
            )
        if judge_llm is not None:
            result["judges"] = _judge_quality(file, label, judge_llm, judge_items, judge_n, seed, out)
        results.append(result)
    report = write_quality(results, names, out)
    console.print(f"wrote {out / 'quality.json'}, the plot and {report}")


def _judge_quality(file: Path, label: str, llm: str, items: int, n: int | None, seed: int, out: Path) -> dict:
    import asyncio

    from stickerconv.evaluate.judges.llm_judges import JudgeConfig
    from stickerconv.evaluate.quality.metrics import judge_items, judge_quality
    from stickerconv.llm import LLMConfig, LLMFactory

    out.mkdir(parents=True, exist_ok=True)
    factory = LLMFactory(LLMConfig(llm=llm, store=out / "judge.llm.sqlite"))
    records = judge_items(file, items, seed)
    with progress_bar(f"judging {label}"):
        return asyncio.run(judge_quality(records, factory.chat_model("judge"), JudgeConfig(n=n, seed=seed)))


@data_app.command("split")
def split(
    file: FileArg,
    out: Annotated[Path, typer.Option(help="Folder for train/validation/test files and split.json.")],
    ratios: Annotated[str, typer.Option(help="train,validation,test shares summing to 1.")] = "0.8,0.1,0.1",
    seed: Annotated[int, typer.Option(help="Shuffle seed; the same seed gives the same split.")] = 0,
    layout: Annotated[
        str, typer.Option("--format", help="Split files: jsonl (JSON Lines), json (one JSON array) or parquet.")
    ] = "jsonl",
) -> None:
    """Split by persona: no persona appears in two splits."""
    from stickerconv.data.io import LAYOUT_SUFFIXES, open_source
    from stickerconv.data.split import split_file

    if layout not in LAYOUT_SUFFIXES.values():
        raise UserError(f"--format {layout!r}: choose from {', '.join(LAYOUT_SUFFIXES.values())}")
    source = open_source(file, ("conversations",))

    try:
        shares = [float(r) for r in ratios.split(",")]
    except ValueError:
        raise UserError(f"--ratios must be numbers like 0.8,0.1,0.1, got {ratios!r}") from None
    with progress_bar("reading") as update:
        report = split_file(source, out, ratios=shares, seed=seed, layout=cast("Layout", layout), on_progress=update)
    console.print(escape(source.describe()), highlight=False)
    for name, count in report.sessions.items():
        console.print(f"{name}: {count:,} sessions, {report.groups[name]:,} personas -> {report.files[name]}")


@data_app.command("convert")
def convert(
    file: FileArg,
    to: Annotated[str, typer.Option("--to", help="samples (paper §4.4), chat (one example a session) or hf.")],
    out: Annotated[
        Path, typer.Option(help="Output file (samples, chat: .jsonl, .json = one JSON array, .parquet) or folder (hf).")
    ],
    style: Annotated[str, typer.Option(help="Prompt style of samples: v1.5 (USER:/ASSISTANT:) or v0 (### Human:).")] = (
        "v1.5"
    ),
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
    ] = False,
) -> None:
    """Turn conversations into training data: per-turn samples, chat messages or an HF dataset."""
    from stickerconv.data.chat import DEFAULT_SYSTEM_PROMPT
    from stickerconv.data.convert import TARGETS, ImageLocator
    from stickerconv.data.convert import convert as run_convert
    from stickerconv.data.io import LAYOUT_NAMES, open_source, output_layout
    from stickerconv.data.samples import STYLES

    if to not in TARGETS:
        raise UserError(f"--to {to!r}: choose from {', '.join(TARGETS)}")
    if style not in STYLES:
        raise UserError(f"--style {style!r}: choose from {', '.join(STYLES)}")
    if image_dir is not None and not image_dir.is_dir():
        raise UserError(f"--image-dir {image_dir} is not a folder")
    written = "a dataset folder" if to == "hf" else LAYOUT_NAMES[output_layout(out)]
    source = open_source(file, ("conversations",))
    locator = ImageLocator(_resolver(stickers), image_root, image_dir)
    prompt = DEFAULT_SYSTEM_PROMPT if system_prompt is None else system_prompt or None
    with progress_bar("reading") as update:
        report = run_convert(
            source,
            to,
            out,
            style=style,
            locator=locator,
            system_prompt=prompt,
            require_images=require_images,
            on_progress=update,
        )
    what = {"samples": "samples", "chat": "chat examples", "hf": "dataset rows"}[to]
    console.print(escape(source.describe()), highlight=False)
    console.print(
        f"{report.sessions:,} sessions, {report.turns:,} turns, {report.stickers:,} stickers -> "
        f"{report.written:,} {what} in {out} ({written})"
    )
    if report.unknown_stickers:
        err.print(f"warning: {report.unknown_stickers:,} sticker(s) are not in {stickers}; kept their own paths")
    if report.images is not None:
        console.print(f"images embedded: {report.images:,}; not found: {report.unresolved_images:,}")
