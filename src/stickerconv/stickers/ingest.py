"""Turn a folder of sticker images into a sticker library (``images/`` + ``stickers.jsonl``).

User folders are untrusted: files may be empty, mislabelled, truncated or decompression bombs.
Every image is therefore fully decoded once here, under size limits checked from the header
before any pixel is decoded, so that later stages (indexing, serving) can trust the library.
A bad file is reported with its reason and skipped; it never aborts the run or is lost silently.
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from PIL import Image, ImageFile, UnidentifiedImageError
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from stickerconv.jsonl import RecordError, iter_jsonl
from stickerconv.schema import EMOTION_LABELS, EmotionLabel, Sticker, sticker_id_from_path
from stickerconv.stickers.library import STICKERS_FILE, LibraryError, StickerLibrary

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp"})
SUPPORTED_MODES: tuple[str, ...] = ("1", "L", "LA", "P", "PA", "RGB", "RGBA")
# What browsers and chat clients display; a TIFF renamed to .png would open in Pillow but not there.
SUPPORTED_FORMATS: frozenset[str] = frozenset({"PNG", "JPEG", "MPO", "GIF", "WEBP", "BMP"})
REPORT_FILE = "ingest_report.json"


@dataclass
class BadFile:
    """A source file left out, with a reason a user can act on (re-export it, shrink it, ...)."""

    path: Path
    reason: str


@dataclass
class IngestReport:
    """What happened to every file, so nothing is dropped without the user being told."""

    added: int
    bad: list[BadFile]
    skipped_non_image_ext: list[Path]
    annotated: int
    unmatched_annotations: list[str]
    library: Path


class _Annotation(BaseModel):
    """One labels-file record; unknown keys (e.g. the published ``qa``) are ignored on purpose."""

    model_config = ConfigDict(extra="ignore")

    image: str = Field(min_length=1, validation_alias=AliasChoices("image", "path"))
    description: str = ""
    emotion: str = ""
    recommendation: str = ""
    label: EmotionLabel | None = Field(None, validation_alias=AliasChoices("label", "origin_anno"))

    @model_validator(mode="before")
    @classmethod
    def _needs_image_key(cls, data: Any) -> Any:
        if isinstance(data, dict) and not {"image", "path"} & data.keys():
            raise ValueError("no image key: each record needs 'image' or 'path'")
        return data

    @field_validator("label", mode="before")
    @classmethod
    def _label_any_case(cls, value: Any) -> Any:
        # Spreadsheets write empty cells and lower case; neither should be a hard error.
        if isinstance(value, str):
            if not value.strip():
                return None
            return next((lab for lab in EmotionLabel if lab.value.lower() == value.strip().lower()), value)
        return value


def _validated(path: Path, number: int, data: Any, key: str | None = None, *, plain: bool = False) -> _Annotation:
    """One annotation. ``key``: the image name when ``data`` comes from a name -> label object, which
    locates errors (``plain``: the value was a bare label, so every error is the key's)."""
    if not isinstance(data, dict):
        raise RecordError(path, number, f"expected an object, got {type(data).__name__}")
    try:
        return _Annotation.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(map(str, err["loc"])) or None
        message = err["msg"]
        if err["type"] == "enum" and field == "label":
            message = f"unknown label {err['input']!r}; use one of {', '.join(EMOTION_LABELS)} (any case)"
        if key is not None:
            field = key if plain else f"{key}.{field}"
        raise RecordError(path, number, message, field) from None


def _mapping_annotation(path: Path, number: int, key: str, value: Any) -> _Annotation:
    """An entry of a name -> label object: the value is a label, or an object with a record's keys."""
    if isinstance(value, str):
        if not value.strip():
            raise RecordError(path, number, f"empty label; use one of {', '.join(EMOTION_LABELS)}", key)
        return _validated(path, number, {"image": key, "label": value}, key, plain=True)
    if isinstance(value, dict):
        if {"image", "path"} & value.keys():
            raise RecordError(path, number, "the key names the image; leave 'image' and 'path' out of the value", key)
        return _validated(path, number, {"image": key} | value, key)
    raise RecordError(
        path,
        number,
        f"expected a label ({', '.join(EMOTION_LABELS)}) or an object with label, description, emotion and "
        f"recommendation, got {_json_name(value)}",
        key,
    )


def _json_name(value: Any) -> str:
    names = {list: "an array", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _object_members(text: str) -> Iterator[tuple[int, str, Any]]:
    """(line, key, value) of every member of the JSON object ``text`` in file order, duplicates included
    (``json.loads`` keeps only the last). ``text`` is known to parse."""
    decoder = json.JSONDecoder()
    pos = _skip_ws(text, text.index("{") + 1)
    line, counted = 1, 0
    while text[pos] != "}":
        line += text.count("\n", counted, pos)
        counted = pos
        key, end = decoder.raw_decode(text, pos)
        pos = _skip_ws(text, _skip_ws(text, end) + 1)  # past the ':'
        value, end = decoder.raw_decode(text, pos)
        yield line, key, value
        pos = _skip_ws(text, end)
        if text[pos] == ",":
            pos = _skip_ws(text, pos + 1)


def _skip_ws(text: str, pos: int) -> int:
    while text[pos] in " \t\r\n":
        pos += 1
    return pos


def _iter_annotations(path: Path) -> Iterator[tuple[int, _Annotation]]:
    """Sniff the format from content, not name: the published JSONL files are named ``.json``.

    CSV (by extension, as spreadsheets write it); else JSON: an array of records, one object mapping
    image names to labels (or to objects with a record's keys), one record, or JSON Lines of records.
    A whole-file object without an ``image``/``path`` key is a mapping; one with it is a single record.
    """
    if path.suffix.lower() == ".csv":
        with path.open(encoding="utf-8-sig", newline="") as fh:
            reader = csv.DictReader(fh)
            for row in reader:
                yield reader.line_num, _validated(path, reader.line_num, {k: v for k, v in row.items() if k})
        return
    text = path.read_text(encoding="utf-8-sig")
    stripped = text.lstrip()
    if not stripped.startswith(("[", "{")):
        yield from iter_jsonl(path, _Annotation)
        return
    try:
        whole = json.loads(text)
    except json.JSONDecodeError as exc:
        first_line = stripped.splitlines()[0]
        if stripped.startswith("{") and (exc.msg == "Extra data" or _is_json(first_line)):
            yield from iter_jsonl(path, _Annotation)  # JSON Lines: one record a line
            return
        raise RecordError(path, exc.lineno, f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    if isinstance(whole, list):
        for index, data in enumerate(whole, start=1):
            yield index, _validated(path, index, data)
    elif {"image", "path"} & whole.keys():
        yield 1, _validated(path, 1, whole)
    else:
        for line, key, value in _object_members(text):
            yield line, _mapping_annotation(path, line, key, value)


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return False
    return True


def load_annotations(path: Path) -> dict[str, _Annotation]:
    """Key annotations by the portable SER30K key, since their paths are the authors' machine's."""
    found: dict[str, tuple[int, _Annotation]] = {}
    for line, ann in _iter_annotations(Path(path)):
        key = sticker_id_from_path(ann.image)
        if key in found:
            first = found[key][0]
            raise RecordError(path, line, f"duplicate annotation for {key!r} (first at line/record {first})", "image")
        found[key] = (line, ann)
    return {key: ann for key, (_, ann) in found.items()}


def _header_size(path: Path) -> tuple[int, int] | None:
    """Name the size of a file ``Image.open`` refuses as a bomb: run the header parsers directly."""
    Image.init()
    with path.open("rb") as fh:
        prefix = fh.read(16)
        for fmt in Image.ID:
            factory, accept = Image.OPEN[fmt]
            if accept and not accept(prefix):
                continue
            try:
                fh.seek(0)
                return factory(fh, str(path)).size
            except Exception:
                continue
    return None


def check_image(path: Path, max_side: int, max_pixels: int) -> str | None:
    """Return why ``path`` is unusable, or None; decodes every frame so corruption shows up here."""

    def too_large(size: tuple[int, int]) -> str:
        return f"too large: {size[0]}x{size[1]} px (limit {max_side}x{max_side} / {max_pixels:,} px)"

    if path.stat().st_size == 0:
        return "zero bytes"
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(path)
        except UnidentifiedImageError:
            return "not an image (cannot identify image file)"
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            size = _header_size(path)
            return too_large(size) if size else f"too large: {exc}"
        except Exception as exc:
            return f"not an image ({type(exc).__name__}: {exc})"
        with img:
            width, height = img.size
            if width > max_side or height > max_side or width * height > max_pixels:
                return too_large(img.size)
            if img.format not in SUPPORTED_FORMATS:
                return f"unsupported format {img.format} (supported: {', '.join(sorted(SUPPORTED_FORMATS))})"
            if img.mode not in SUPPORTED_MODES:
                return f"unsupported mode {img.mode} (supported: {', '.join(SUPPORTED_MODES)})"
            try:
                for frame in range(getattr(img, "n_frames", 1)):
                    img.seek(frame)
                    img.load()
            except Exception as exc:  # decoders raise OSError, SyntaxError, ValueError, EOFError...
                return f"truncated or corrupt image data ({type(exc).__name__}: {exc})"
    return None


def ingest_folder(
    src: Path,
    out: Path,
    labels: Path | None = None,
    *,
    max_side: int = 4096,
    max_pixels: int = 16_777_216,
    on_progress: Callable[[int, int], None] | None = None,
) -> IngestReport:
    """Validate, copy and index every image under ``src`` into a new library at ``out``.

    ``out`` must be new or empty: merging into an existing library would silently mix ids,
    sources and licences, so the user has to choose a fresh folder instead.
    """
    src, out = Path(src), Path(out)
    if not src.exists():
        raise FileNotFoundError(f"sticker folder {src} does not exist")
    if not src.is_dir():
        raise NotADirectoryError(f"{src} is not a folder; ingest needs a folder of images")
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"OUT_DIR {out} is a file; pick a new or empty folder")
    if out.exists() and any(out.iterdir()):
        what = "already holds a sticker library" if (out / STICKERS_FILE).exists() else "is not empty"
        raise LibraryError(f"{out} {what}; ingest does not merge, pick a new or empty OUT_DIR")
    if ImageFile.LOAD_TRUNCATED_IMAGES:  # process-wide; flipping it back could break its owner
        log.warning("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is on: truncated images will not be detected")
    # Labels first: a typo in the labels file should fail before thousands of images are copied.
    annotations = load_annotations(labels) if labels is not None else {}

    source = f"ingest:{src.resolve().name}"
    files = sorted((p for p in src.rglob("*") if p.is_file()), key=lambda p: p.relative_to(src).as_posix())
    bad: list[BadFile] = []
    skipped: list[Path] = []
    stickers: list[Sticker] = []
    by_tail: dict[str, list[int]] = {}  # portable key -> sticker positions
    by_stem: dict[str, list[int]] = {}  # flat-layout fallback, top-level files only
    ids: set[str] = set()
    for done, path in enumerate(files, start=1):
        rel = PurePosixPath(path.relative_to(src).as_posix())
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            skipped.append(path)
            log.info("skipping %s: extension %r is not an image extension", path, path.suffix)
        elif reason := check_image(path, max_side, max_pixels):
            bad.append(BadFile(path, reason))
            log.warning("skipping %s: %s", path, reason)
        else:
            sticker_id = rel.with_suffix("").as_posix()
            if sticker_id in ids:  # e.g. cat.png and cat.gif: keep both, the later one with extension
                sticker_id = rel.as_posix()
                log.warning("%s shares its id with an earlier file; using id %r", path, sticker_id)
            ids.add(sticker_id)
            dest = out / "images" / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest)
            by_tail.setdefault(sticker_id_from_path(rel.as_posix()), []).append(len(stickers))
            if len(rel.parts) == 1:
                by_stem.setdefault(rel.stem, []).append(len(stickers))
            style = rel.parent.name or None  # the SER30K theme is the folder holding the file
            image = f"images/{rel.as_posix()}"
            stickers.append(Sticker(id=sticker_id, image=image, style=style, source=source))
        if on_progress is not None:
            on_progress(done, len(files))

    if not stickers:
        raise LibraryError(
            f"no usable images in {src}: {len(bad)} bad file(s), "
            f"{len(skipped)} file(s) without an image extension, {len(files)} file(s) in all"
        )

    annotated: set[int] = set()
    unmatched: list[str] = []
    for key, ann in annotations.items():
        hits = by_tail.get(key) or by_stem.get(PurePosixPath(key).name, [])
        if len(hits) != 1:
            if hits:
                log.warning("annotation %r matches %d images; ambiguous, not applied", key, len(hits))
            unmatched.append(key)
            continue
        fields = ann.model_dump(include={"description", "emotion", "recommendation", "label"})
        stickers[hits[0]] = stickers[hits[0]].model_copy(update=fields)
        annotated.add(hits[0])
    if unmatched:
        log.warning("%d annotation(s) matched no image, e.g. %s", len(unmatched), unmatched[0])

    report = IngestReport(len(stickers), bad, skipped, len(annotated), unmatched, out)
    summary = asdict(report) | {"src": str(src), "library": str(out)}
    summary["bad"] = [{"path": str(b.path), "reason": b.reason} for b in bad]
    summary["skipped_non_image_ext"] = [str(p) for p in skipped]
    (out / REPORT_FILE).write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    StickerLibrary(out, stickers).save()  # last, so a crash never leaves a loadable half library
    log.info("ingested %d sticker(s) from %s into %s (%d bad)", len(stickers), src, out, len(bad))
    return report
