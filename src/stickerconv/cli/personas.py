"""``stickerconv personas generate | check``: parse, call ``pipelines.personas``, print."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from stickerconv.cli.common import (
    CacheOption,
    ConfigOption,
    JsonOption,
    LLMOption,
    StoreOption,
    UserError,
    console,
    progress_bar,
)
from stickerconv.pipelines.personas import PersonaOptions, check_personas, generate_personas

personas_app = typer.Typer(help="Check and generate user personas.", no_args_is_help=True)


@personas_app.command("generate")
def personas_generate(
    n_personas: Annotated[int, typer.Option("--n-personas", min=1, help="How many profiles the output should hold.")],
    out: Annotated[Path, typer.Option("--out", help="JSONL file of generated profiles (appended, resumable).")],
    seeds: Annotated[Path | None, typer.Option(help="Seed profiles (JSON/JSONL); default: the shipped seeds.")] = (
        PersonaOptions.seeds
    ),
    threshold: Annotated[
        float, typer.Option(help="Reject a situation whose ROUGE-L F1 to any kept one is this or more.")
    ] = PersonaOptions.threshold,
    seed: Annotated[int, typer.Option(help="Random seed of the example sampling.")] = PersonaOptions.seed,
    llm: LLMOption = None,
    config: ConfigOption = None,
    store: StoreOption = None,
    cache: CacheOption = None,
    as_json: JsonOption = False,
) -> None:
    """Self-instruct generation of user profiles with ROUGE-L de-duplication (method reference §2.4)."""
    options = PersonaOptions(n_personas, out, seeds, threshold, seed, llm, config, store, cache)
    result = generate_personas(options, progress=progress_bar)
    report = result.report
    if as_json:
        console.print_json(json.dumps(result.to_dict()))
    else:
        console.print(
            f"{report.accepted}/{n_personas} profiles in {out} ({report.new} new; {report.rejected_similar} rejected "
            f"as too similar, {report.failed_calls} failed calls); candidates logged in {result.candidates}"
        )
    if not result.complete:
        raise UserError(
            f"stopped at {report.accepted} of {n_personas} profiles: too many near-duplicates or failed calls; "
            "run the same command again to continue, or raise --threshold"
        )


@personas_app.command("check")
def personas_check(
    path: Annotated[Path, typer.Argument(help="Profiles, JSON or JSONL.")], as_json: JsonOption = False
) -> None:
    """Load profiles, validate them and show how their emotions normalise to the 7 labels."""
    check = check_personas(path)
    if as_json:
        console.print_json(json.dumps(check.to_dict()))
    else:
        table = Table(title=f"{check.profiles} profiles in {path}", title_justify="left")
        for column in ("raw emotion", "count", "label"):
            table.add_column(column)
        for emotion in check.emotions:
            table.add_row(escape(emotion.raw), str(emotion.count), emotion.label or "(unknown)")
        console.print(table)
    if check.unknown:
        raise UserError(f"{len(check.unknown)} raw emotion(s) do not map to the 7 labels: {', '.join(check.unknown)}")
