"""``stickerconv stickers build-default | ingest | index | search``: parse, call ``pipelines.stickers``, print.
(``stickers annotate`` has its own module; root.py adds it to this group.)"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.markup import escape

from stickerconv.cli.common import JsonOption, ProfileOption, console, err, hits_table, progress_bar
from stickerconv.pipelines.stickers import (
    INDEX_KINDS,
    IndexOptions,
    IngestOptions,
    PackOptions,
    SearchOptions,
    build_pack,
    index_library,
    ingest_library,
    search_stickers,
)
from stickerconv.stickers.emoji_pack import STYLES
from stickerconv.stickers.index import TEXT_TEMPLATES

stickers_app = typer.Typer(help="Build, ingest, index and search sticker libraries.", no_args_is_help=True)

IndexKind = Literal[INDEX_KINDS]  # the choices typer offers and checks come from the registries
TextTemplate = Literal[tuple(TEXT_TEMPLATES)]


@stickers_app.command("build-default")
def build_default(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write the pack into.")],
    styles: Annotated[
        str, typer.Option(help=f"Comma-separated styles: {', '.join(STYLES)} (openmoji is CC BY-SA).")
    ] = ",".join(PackOptions.styles),
    assets: Annotated[
        Path | None, typer.Option(help="node_modules folder holding emojibase-data and the SVG sets.")
    ] = PackOptions.assets,
    limit: Annotated[int | None, typer.Option(help="Render only the first N emoji (for quick tries).")] = (
        PackOptions.limit
    ),
    as_json: JsonOption = False,
) -> None:
    """Render the embedded default sticker pack (emoji as stickers) with text and emotion labels."""
    style_list = tuple(s.strip() for s in styles.split(",") if s.strip())
    start = time.perf_counter()
    report = build_pack(PackOptions(out_dir, style_list, assets, limit), progress=progress_bar)
    if as_json:
        console.print_json(json.dumps(report.to_dict()))
        return
    console.print(f"[bold]{report.stickers}[/] stickers written to {out_dir} in {time.perf_counter() - start:.1f}s")
    console.print("per style: " + ", ".join(f"{k} {v}" for k, v in report.per_style.items()))
    console.print("labels: " + ", ".join(f"{k} {v}" for k, v in report.labels.items()))
    for style, codes in report.missing.items():
        console.print(
            f"[yellow]{style}: {len(codes)} emoji have no image in this set and were left out[/] "
            f"(listed in {out_dir / 'build_report.json'})"
        )


@stickers_app.command("ingest")
def ingest(
    src_dir: Annotated[Path, typer.Argument(help="Folder of images (SER30K theme/sticker_N.jpg, or flat).")],
    out_dir: Annotated[Path, typer.Argument(help="New library folder.")],
    labels: Annotated[
        Path | None,
        typer.Option(
            help="Annotations: a JSON object {image name: label}, or records (JSONL, JSON array, CSV) with "
            "image + label/description/emotion/recommendation."
        ),
    ] = IngestOptions.labels,
    as_json: JsonOption = False,
) -> None:
    """Turn a folder of sticker images into a library; bad files are reported and skipped."""
    result = ingest_library(IngestOptions(src_dir, out_dir, labels), progress=progress_bar)
    if as_json:
        console.print_json(json.dumps(result.to_dict()))
        return
    report = result.report
    for bad in report.bad:
        err.print(f"[yellow]skipped[/] {escape(str(bad.path))}: {escape(bad.reason)}")
    for path in report.skipped_non_image_ext:
        err.print(f"[yellow]skipped[/] {escape(str(path))}: not an image file extension")
    console.print(
        f"[bold]{report.added}[/] stickers added to {out_dir}; {len(report.bad)} bad file(s), "
        f"{len(report.skipped_non_image_ext)} non-image file(s) skipped; {report.annotated} annotated"
    )
    if report.unmatched_annotations:
        console.print(
            f"[yellow]{len(report.unmatched_annotations)} annotation(s) matched no image[/] "
            f"(e.g. {report.unmatched_annotations[0]})"
        )


@stickers_app.command("index")
def index(
    lib_dir: Annotated[Path, typer.Argument(help="Sticker library folder.")],
    embedder: Annotated[
        str, typer.Option(help="minilm (offline, int8 ONNX), minilm-st (fp32), or a sentence-transformers model.")
    ] = IndexOptions.embedder,
    kind: Annotated[IndexKind, typer.Option(help="auto = exact up to 100k stickers, else FAISS IVF.")] = (
        IndexOptions.kind
    ),
    template: Annotated[
        TextTemplate | None,
        typer.Option(
            help="The text embedded per sticker (default: the profile's; default paper+subject, paper paper)."
        ),
    ] = IndexOptions.template,
    profile: ProfileOption = IndexOptions.profile,
    as_json: JsonOption = False,
) -> None:
    """Embed every sticker's text and save the index (with its profile's ranking settings) in LIB_DIR/index/."""
    result = index_library(IndexOptions(lib_dir, embedder, kind, template, profile), progress=progress_bar)
    if as_json:
        console.print_json(json.dumps(result.to_dict()))
        return
    built = result.index
    console.print(
        f"indexed [bold]{len(built)}[/] stickers with {built.embedder.name} ({built.ann.kind}) into {result.folder} "
        f"in {result.wall_s:.1f}s"
    )
    if result.skipped:
        console.print(
            f"[yellow]{len(result.skipped)} sticker(s) have no text and were not indexed[/] "
            f"(e.g. {result.skipped[0].id}); annotate them with `stickerconv stickers annotate`"
        )


@stickers_app.command("search")
def search(
    lib_dir: Annotated[Path, typer.Argument(help="Sticker library folder (indexed).")],
    query: Annotated[str, typer.Argument(help="What the sticker should express.")],
    k: Annotated[int, typer.Option("-k", "--top", min=1, help="How many stickers.")] = SearchOptions.k,
    label: Annotated[list[str] | None, typer.Option(help="Only stickers with this label (repeatable).")] = None,
    embedder: Annotated[str | None, typer.Option(help="Must match the index's embedder (default: that one).")] = (
        SearchOptions.embedder
    ),
    emotion_weight: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            help="Bonus for stickers whose label the query's emotion words name; 0 = off (default: the index's).",
        ),
    ] = SearchOptions.emotion_weight,
    as_json: JsonOption = False,
) -> None:
    """Print the stickers that best match QUERY."""
    options = SearchOptions(lib_dir, query, k, tuple(label or ()), embedder, emotion_weight)
    hits = search_stickers(options)
    if as_json:
        typer.echo(json.dumps([h.to_dict() for h in hits], ensure_ascii=False, indent=2))
        return
    console.print(hits_table(query, hits))
