"""``stickerconv demo``: from nothing to a running sticker chat, on the embedded defaults or on the user's model.

The demo itself is ``stickerconv.pipelines.demo.run_demo`` (steps, caching, the report); this command parses the
options, shows each step's result in a few lines as it finishes (the run folder's ``REPORT.md`` holds the
rest), then serves the chat.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.console import RenderableType
from rich.padding import Padding
from rich.table import Table

from stickerconv.cli.common import ConfigOption, JsonOption, LLMOption, console, err, progress_bar
from stickerconv.pipelines.demo import DemoOptions, StepReport, run_demo
from stickerconv.pipelines.demo_report import Figure, Headline

_DEFAULTS = DemoOptions()  # the demo's defaults live with its options
_STARTS = {"new": "", "resuming": ": resuming", "redoing": ": options changed, redoing it"}


def demo(
    out: Annotated[Path, typer.Option(help="Run folder: every step's output and demo-state.json.")] = _DEFAULTS.out,
    n_personas: Annotated[
        int, typer.Option(min=2, help="User profiles to generate; one session each.")
    ] = _DEFAULTS.n_personas,
    max_turns: Annotated[int, typer.Option(min=1, max=20, help="Turns per simulated session.")] = _DEFAULTS.max_turns,
    test_share: Annotated[
        float, typer.Option(min=0.05, max=0.9, help="Share of personas held out for testing.")
    ] = _DEFAULTS.test_share,
    pegs_preset: Annotated[str, typer.Option(help="PEGS preset (small, tiny) or config JSON.")] = _DEFAULTS.pegs_preset,
    pegs_steps: Annotated[
        int, typer.Option(min=1, help="Optimiser steps of each PEGS alignment stage.")
    ] = _DEFAULTS.pegs_steps,
    joint_steps: Annotated[
        int, typer.Option(min=1, help="Optimiser steps of the PEGS joint (dialogue) stage.")
    ] = _DEFAULTS.joint_steps,
    vision_steps: Annotated[
        int, typer.Option(min=1, help="Steps of the PEGS vision pretraining.")
    ] = _DEFAULTS.vision_steps,
    eval_items: Annotated[
        int | None, typer.Option(min=1, help="Test turns each system answers (default all).")
    ] = _DEFAULTS.eval_items,
    pack_limit: Annotated[int | None, typer.Option(min=8, help="Only the first N emoji of the pack (quick tries).")] = (
        _DEFAULTS.pack_limit
    ),
    llm: LLMOption = None,
    config: ConfigOption = None,
    seed: Annotated[int, typer.Option()] = _DEFAULTS.seed,
    serve: Annotated[bool, typer.Option(help="Serve the chat page at the end (--no-serve: stop after the report).")] = (
        True
    ),
    responder: Annotated[
        str, typer.Option(help="What the chat page talks to: pegs-ret, tool or text.")
    ] = _DEFAULTS.responder,
    host: Annotated[str, typer.Option()] = _DEFAULTS.host,
    port: Annotated[int, typer.Option(min=0, max=65535)] = _DEFAULTS.port,
    as_json: JsonOption = False,
) -> None:
    """Build everything from scratch (sticker pack, index, personas, simulated sessions, dataset statistics,
    a trained PEGS, an evaluation of the baselines and PEGS), then serve the web chat. The LLM steps run on
    the embedded model, or on yours with --llm / --config. Steps are cached in OUT: rerun to resume or to
    reuse what is built; the console shows each step's result, OUT/REPORT.md everything."""
    given = locals()  # first: the parameters alone, named as DemoOptions' fields
    options = DemoOptions(**{name: value for name, value in given.items() if name in DemoOptions.model_fields})
    with library_bars_off():
        result = run_demo(options, progress=progress_bar, on_step=None if as_json else _print_step)
        if as_json:
            typer.echo(result.model_dump_json(indent=2))
        else:
            console.print(f"total time {result.seconds / 60:.1f} min ({result.seconds:.0f}s)")
            console.print(f"report: {result.report}")
        if serve:
            from stickerconv.pipelines.serving import build_app, run_app, summary

            app = build_app(options.serve_options())
            console.print(summary(app, options.host, options.port))
            run_app(app, options.host, options.port)


@contextmanager
def library_bars_off() -> Iterator[None]:
    """No tqdm bars of the libraries' own (transformers' sub-second "Loading weights", the one-time GGUF
    conversion) between the demo's step tables: it shows its own progress. tqdm reads ``TQDM_DISABLE`` when
    it is first imported, which the command comes before; processes the demo starts inherit it."""
    before = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = before


def _print_step(report: StepReport) -> None:
    """A step's heading when it starts, its result when it is done; a failure names the step's log."""
    head = f"[bold][{report.number}/{report.total}] {report.title}[/]"
    if report.status == "failed":
        err.print(f"{report.title}: what it did is logged in {report.log}")
    elif report.status == "cached":
        console.print(f"{head}: cached (took {report.seconds or 0:.0f}s when built)")
    elif report.status in _STARTS:
        console.print(head + _STARTS[report.status])
    if report.status in ("cached", "built"):
        console.print(_shown(report))


def _shown(report: StepReport) -> RenderableType:
    """The evaluation's table, or the step's rows as an indented two-column grid (with this run's time)."""
    if report.headline is not None:
        return _headline_table(report.headline)
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim")
    grid.add_column()
    timed = [("time", f"{report.seconds:.0f}s")] if report.status == "built" and report.seconds is not None else []
    for name, value in [*report.rows, *timed]:
        grid.add_row(name, value)
    return Padding(grid, (0, 0, 0, 2))


def _cell(figure: Figure | None) -> str:
    """The score over its interval (``0.30`` / ``0.10-0.50``), narrow enough for 80 columns."""
    if figure is None:
        return "-"
    return f"{figure.score:.2f}" + (f"\n{figure.ci[0]:.2f}-{figure.ci[1]:.2f}" if figure.ci else "")


def _headline_table(headline: Headline) -> Table:
    title = f"held-out turns: {headline.samples}; cells: score [95% interval]"
    table = Table(title=title, title_justify="left", caption=headline.reading, caption_justify="left")
    table.box = box.SIMPLE_HEAD
    table.add_column("responder")
    for heading in headline.headings:
        table.add_column(heading, justify="right")
    for row in headline.rows:
        table.add_row(row.responder, *(_cell(cell) for cell in row.cells))
    return table
