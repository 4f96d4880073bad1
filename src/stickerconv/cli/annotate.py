"""``stickerconv stickers annotate``: describe a library's stickers with a vision model (method reference §3).

The command parses the flags into ``AnnotateLibraryOptions``, runs ``pipelines.annotation.annotate_library``
with a progress bar per stage and prints the report.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from stickerconv.cli.common import (
    CacheOption,
    ConfigOption,
    JsonOption,
    StoreOption,
    console,
    err,
    progress_bar,
)
from stickerconv.stickers.annotate import AnnotateOptions

_STAGES = AnnotateOptions()
# The command's own options, named here so that the signature below reads as the list of flags.
_LibDir = Annotated[Path, typer.Argument(help="Sticker library folder (stickers.jsonl + images).")]
_Vlm = Annotated[
    str | None,
    typer.Option(
        "--vlm", help="Vision model for filter and captions: openai:MODEL (OpenAI, vLLM, Ollama); local has no vision."
    ),
]
_KnowledgeLlm = Annotated[
    str | None,
    typer.Option("--llm", help="Text model of the knowledge summary: openai:MODEL or local; default: the --vlm model."),
]
_BaseUrl = Annotated[
    str | None, typer.Option(help="OpenAI-compatible server URL (else OPENAI_BASE_URL), e.g. vLLM or Ollama.")
]
_Samples = Annotated[int, typer.Option(min=1, help="Filter samples per sticker; kept if #yes >= #no.")]
_Concurrency = Annotated[int, typer.Option(min=1, help="Stickers in flight at once.")]
_Limit = Annotated[int | None, typer.Option(min=1, help="Only the next N stickers not started yet.")]
_MaxImageSide = Annotated[
    int, typer.Option(min=64, help="Images are scaled down to this longest side (px) before sending.")
]
_SkipFilter = Annotated[bool, typer.Option(help="Caption every sticker without the suitability filter.")]
_Overwrite = Annotated[bool, typer.Option(help="Annotate stickers that already have text too (old text kept in meta).")]
_AdoptLabels = Annotated[
    bool, typer.Option(help="Stickers without a label take the proposed one (marked in meta.label_source).")
]
_RetryFailed = Annotated[bool, typer.Option(help="Ask again for stickers whose answers were refused or malformed.")]


def annotate(
    lib_dir: _LibDir,
    vlm: _Vlm = None,
    llm: _KnowledgeLlm = None,
    base_url: _BaseUrl = None,
    samples: _Samples = _STAGES.samples,
    concurrency: _Concurrency = _STAGES.concurrency,
    limit: _Limit = _STAGES.limit,
    max_image_side: _MaxImageSide = _STAGES.max_side,
    skip_filter: _SkipFilter = _STAGES.skip_filter,
    overwrite: _Overwrite = _STAGES.overwrite,
    adopt_labels: _AdoptLabels = _STAGES.adopt_labels,
    retry_failed: _RetryFailed = _STAGES.retry_failed,
    config: ConfigOption = None,
    store: StoreOption = None,
    cache: CacheOption = None,
    as_json: JsonOption = False,
) -> None:
    """Annotate stickers with a vision model: suitability filter, five-question captions, knowledge summary.

    --llm is the text model of the knowledge summary (default: the --vlm model); --config gives the roles
    sticker_vlm and sticker_knowledge; the cache and ledger default to LIB_DIR/annotate/llm.sqlite.
    Resumable: each stage appends to LIB_DIR/annotate/*.jsonl; run the same command again to continue.
    """
    from stickerconv.pipelines.annotation import AnnotateLibraryOptions, annotate_library

    stages = AnnotateOptions(
        samples=samples,
        concurrency=concurrency,
        limit=limit,
        max_side=max_image_side,
        skip_filter=skip_filter,
        overwrite=overwrite,
        adopt_labels=adopt_labels,
        retry_failed=retry_failed,
    )
    options = AnnotateLibraryOptions(
        lib_dir, vlm=vlm, llm=llm, base_url=base_url, config=config, store=store, cache=cache, stages=stages
    )
    result = annotate_library(options, progress=progress_bar)
    if result.report is None:
        console.print(_NOTHING[result.skipped].format(lib_dir=lib_dir))
    elif as_json:
        typer.echo(json.dumps(result.report, ensure_ascii=False, indent=2))
    else:
        _print_report(result.report, lib_dir)


_NOTHING = {
    "emoji_pack": "{lib_dir} is the embedded emoji pack: its texts and labels come from emoji metadata, so it needs "
    "no annotation (--overwrite annotates it with a vision model anyway)",
    "complete": "nothing to annotate in {lib_dir}: every sticker has a description, emotion and recommendation "
    "(--overwrite annotates them again)",
}


def _print_report(report: dict[str, Any], lib_dir: Path) -> None:
    for bad in report.get("bad_image_files", []):
        err.print(f"[yellow]skipped[/] {escape(str(lib_dir / bad['image']))}: {escape(bad['reason'])}")
    flt, cap, kno = report["filter"], report["caption"], report["knowledge"]
    filter_line = (
        "filter skipped"
        if flt["skipped"] and not flt["voted"]
        else f"filter: {flt['passed']} of {flt['voted']} passed ({flt['rejected']} unsuitable)"
    )
    console.print(
        f"[bold]{kno['done']}[/] of {report['targets']} sticker(s) annotated in {lib_dir}; {filter_line}; "
        f"{report['bad_images']} bad image(s); failed: {cap['failed']} caption, {kno['failed']} knowledge"
    )
    pending = {stage: n for stage, n in report["pending"].items() if n}
    if pending:
        console.print(
            "[yellow]still pending[/]: "
            + ", ".join(f"{n} {stage}" for stage, n in pending.items())
            + " (run the same command again to continue)"
        )
    labels = report["labels"]
    if labels["human"] or labels["proposed"]:
        table = Table(title="labels", title_justify="left")
        for column in ("label", "human", "proposed"):
            table.add_column(column)
        for label in sorted(set(labels["human"]) | set(labels["proposed"])):
            table.add_row(label, str(labels["human"].get(label, 0)), str(labels["proposed"].get(label, 0)))
        console.print(table)
    agree = report["agreement"]
    if agree["n"]:
        kappa = "n/a" if agree["kappa"] is None else f"{agree['kappa']:.3f}"
        console.print(
            f"proposed vs human label: {agree['agree']}/{agree['n']} agree ({agree['rate']:.1%}), Cohen's kappa {kappa}"
        )
    rejected = cap["failed"] + kno["failed"] + flt["rejected"] + report["bad_images"]
    if rejected:
        console.print(f"rejected stickers and reasons: {report['files']['rejects.jsonl']}")
    if report["index"] == "stale":
        console.print(
            f"[yellow]the index of {lib_dir} is now stale[/] (stickers.jsonl changed); "
            f"rebuild it with `stickerconv stickers index {lib_dir}`"
        )
    elif report["index"] == "none" and kno["done"]:
        console.print(f"next: `stickerconv stickers index {lib_dir}`")
