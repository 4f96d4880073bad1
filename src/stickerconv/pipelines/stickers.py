"""Sticker libraries from Python: render the default pack, index a library, ingest a folder, search.

The same work as ``stickerconv stickers build-default | index | ingest | search``; the command only parses
its flags into these options and prints the results.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stickerconv.pipelines.common import PipelineError, ProgressFactory, check_choice, no_progress
from stickerconv.profiles import DEFAULT_PROFILE, PROFILES, Profile
from stickerconv.schema import EMOTION_LABELS
from stickerconv.stickers.embed import DEFAULT_EMBEDDER
from stickerconv.stickers.emoji_pack import DEFAULT_STYLES
from stickerconv.stickers.index import TEXT_TEMPLATES, IndexSettings

if TYPE_CHECKING:
    from stickerconv.schema import Sticker
    from stickerconv.stickers.emoji_pack import BuildReport
    from stickerconv.stickers.index import SearchHit, StickerIndex
    from stickerconv.stickers.ingest import IngestReport

log = logging.getLogger(__name__)

INDEX_KINDS = ("auto", "exact", "ivf")  # what stickers.ann.build_ann accepts: auto = exact up to 100k, else IVF


@dataclass(frozen=True)
class PackOptions:
    """The default (emoji) pack to render into ``out_dir``."""

    out_dir: Path
    styles: tuple[str, ...] = DEFAULT_STYLES
    assets: Path | None = None  # node_modules holding emojibase-data and the SVG sets; None = the installed ones
    limit: int | None = None  # only the first N emoji, for quick tries


@dataclass(frozen=True)
class IndexOptions:
    """How to embed a library's stickers; the index goes into ``lib_dir``/index/. The ``profile`` sets the
    indexed text and the emotion bonus the index ranks with (``IndexSettings.for_profile``); ``template``,
    when given, wins over the profile's."""

    lib_dir: Path
    embedder: str = DEFAULT_EMBEDDER
    kind: str = "auto"
    template: str | None = None  # None: the profile's
    profile: Profile = DEFAULT_PROFILE

    def __post_init__(self) -> None:
        check_choice("kind", self.kind, INDEX_KINDS)
        check_choice("profile", self.profile, PROFILES)
        if self.template is not None:
            check_choice("template", self.template, TEXT_TEMPLATES)

    def settings(self) -> IndexSettings:
        """The profile's index settings, with an explicit ``template`` in place of its own."""
        settings = IndexSettings.for_profile(self.profile)
        return settings if self.template is None else replace(settings, template=self.template)


@dataclass(frozen=True)
class IndexResult:
    """The built (and saved) index, ready to search, and the stickers left out for lack of text."""

    index: StickerIndex
    folder: Path
    skipped: list[Sticker]
    wall_s: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "indexed": len(self.index),
            "embedder": self.index.embedder.name,
            "kind": self.index.ann.kind,
            "template": self.index.template,
            "emotion_weight": self.index.emotion_weight,
            "profile": self.index.profile,
            "folder": str(self.folder),
            "skipped": [s.id for s in self.skipped],
            "wall_s": round(self.wall_s, 3),
        }


@dataclass(frozen=True)
class IndexedPack:
    """What ``build_indexed_pack`` made: the pack's build report and its index."""

    build: BuildReport
    index: IndexResult


def build_pack(options: PackOptions, *, progress: ProgressFactory = no_progress) -> BuildReport:
    """Render the default pack (images/, stickers.jsonl, ATTRIBUTION.md, build_report.json)."""
    from stickerconv.stickers.emoji_pack import build_default_pack

    with progress("rendering stickers") as update:
        report = build_default_pack(
            options.out_dir, list(options.styles), assets=options.assets, limit=options.limit, on_progress=update
        )
    log.info("%d stickers written to %s", report.stickers, options.out_dir)
    return report


def index_library(options: IndexOptions, *, progress: ProgressFactory = no_progress) -> IndexResult:
    """Embed every sticker with text and save the index in the library's index/ folder."""
    from stickerconv.stickers.embed import load_embedder
    from stickerconv.stickers.index import StickerIndex
    from stickerconv.stickers.library import StickerLibrary

    start = time.perf_counter()
    library = StickerLibrary.load(options.lib_dir)
    model = load_embedder(options.embedder)
    settings = options.settings()
    with progress(f"embedding with {model.name}") as update:
        built, skipped = StickerIndex.build(
            library,
            model,
            kind=options.kind,
            template=settings.template,
            emotion_weight=settings.emotion_weight,
            profile=options.profile,
            on_progress=update,
        )
    folder = built.save()
    result = IndexResult(built, folder, skipped, time.perf_counter() - start)
    log.info("indexed %d stickers into %s (%d without text)", len(built), folder, len(skipped))
    return result


def build_indexed_pack(
    pack: PackOptions, *, index: IndexOptions | None = None, progress: ProgressFactory = no_progress
) -> IndexedPack:
    """The default pack, ready to search: ``build_pack`` then ``index_library`` on the same folder
    (``index`` gives the embedder, kind and template; its ``lib_dir`` must be the pack's ``out_dir``)."""
    index = index or IndexOptions(pack.out_dir)
    if Path(index.lib_dir) != Path(pack.out_dir):
        raise PipelineError(f"index.lib_dir {index.lib_dir} is not the pack's out_dir {pack.out_dir}")
    return IndexedPack(build_pack(pack, progress=progress), index_library(index, progress=progress))


@dataclass(frozen=True)
class IngestOptions:
    """A folder of images (SER30K theme/sticker_N.jpg, or flat) to turn into a new library at ``out_dir``."""

    src_dir: Path
    out_dir: Path
    labels: Path | None = None  # {image: label} JSON, or records (JSONL, JSON array, CSV)


@dataclass(frozen=True)
class IngestResult:
    """The ingest report, with the JSON shape ``stickers ingest --json`` prints."""

    report: IngestReport

    def to_dict(self) -> dict[str, Any]:
        report = self.report
        return {
            "added": report.added,
            "annotated": report.annotated,
            "bad": [{"path": str(b.path), "reason": b.reason} for b in report.bad],
            "skipped_non_image_ext": [str(p) for p in report.skipped_non_image_ext],
            "unmatched_annotations": report.unmatched_annotations,
        }


def ingest_library(options: IngestOptions, *, progress: ProgressFactory = no_progress) -> IngestResult:
    """Check and copy every image into a new library; bad files are reported, not fatal."""
    from stickerconv.stickers.ingest import ingest_folder

    with progress("checking images") as update:
        report = ingest_folder(options.src_dir, options.out_dir, options.labels, on_progress=update)
    log.info("%d stickers added to %s, %d bad file(s)", report.added, options.out_dir, len(report.bad))
    return IngestResult(report)


@dataclass(frozen=True)
class SearchOptions:
    """One query against an indexed library."""

    lib_dir: Path
    query: str
    k: int = 10
    labels: tuple[str, ...] = ()  # only these labels (any case); empty = all
    embedder: str | None = None  # None = the index's own
    emotion_weight: float | None = None  # None = the index's own (its profile's, saved when it was built)


def emotion_labels(labels: Sequence[str]) -> list[str] | None:
    """Label names in any case -> the canonical ones; None for no filter; PipelineError for an unknown name."""
    if not labels:
        return None
    by_lower = {name.lower(): name for name in EMOTION_LABELS}
    out = []
    for label in labels:
        if label.lower() not in by_lower:
            raise PipelineError(f"unknown label {label!r}; choose from {', '.join(EMOTION_LABELS)}")
        out.append(by_lower[label.lower()])
    return out


def search_stickers(options: SearchOptions) -> list[SearchHit]:
    """Load the library's index and rank its stickers for the query."""
    from stickerconv.stickers.index import StickerIndex

    labels = emotion_labels(options.labels)  # a typo fails before the embedder loads
    found = StickerIndex.load(options.lib_dir, options.embedder)
    if options.emotion_weight is not None:
        found.emotion_weight = options.emotion_weight
    return found.search(options.query, options.k, labels)
