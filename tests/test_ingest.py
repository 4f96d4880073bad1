"""Tests for ``stickerconv.stickers.ingest``: layouts, every bad-file kind, labels files, refusals."""

from __future__ import annotations

import json
import logging
import os
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from stickerconv.jsonl import RecordError
from stickerconv.schema import EmotionLabel
from stickerconv.stickers.ingest import ingest_folder
from stickerconv.stickers.library import LibraryError, StickerLibrary

from helpers.paths import fixture_file

KNOWLEDGE = fixture_file("stickerconv", "stickers", "knowledge_sticker_example.jsonl")  # fails loudly when missing


def make_image(path: Path, size: tuple[int, int] = (8, 8), mode: str = "RGB", fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color=0).save(path, format=fmt)
    return path


def make_noise(path: Path, fmt: str) -> Path:
    """Incompressible pixels, so cutting the file in half really cuts into the image data."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.frombytes("RGB", (64, 64), os.urandom(64 * 64 * 3)).save(path, format=fmt)
    return path


def truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def huge_png(path: Path, width: int, height: int) -> Path:
    """A 1x1 PNG whose IHDR claims ``width`` x ``height``; nothing of that size is allocated."""
    make_image(path, (1, 1))
    data = bytearray(path.read_bytes())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


def knowledge_numbers() -> list[int]:
    with KNOWLEDGE.open(encoding="utf-8") as fh:
        return [int(Path(json.loads(line)["image"]).stem.split("_")[1]) for line in fh if line.strip()]


def test_ser30k_layout_two_themes(tmp_path: Path) -> None:
    src = tmp_path / "SER30K"
    make_image(src / "pepe-7" / "sticker_1.jpg")
    make_image(src / "pepe-7" / "sticker_2.png", mode="RGBA")
    make_image(src / "cat-3" / "sticker_10.GIF", mode="P", fmt="GIF")
    progress: list[tuple[int, int]] = []
    report = ingest_folder(src, tmp_path / "lib", on_progress=lambda d, t: progress.append((d, t)))

    assert (report.added, report.bad, report.skipped_non_image_ext) == (3, [], [])
    assert progress == [(1, 3), (2, 3), (3, 3)]
    lib = StickerLibrary.load(tmp_path / "lib")
    assert [s.id for s in lib] == ["cat-3/sticker_10", "pepe-7/sticker_1", "pepe-7/sticker_2"]
    assert [s.image for s in lib] == [
        "images/cat-3/sticker_10.GIF",
        "images/pepe-7/sticker_1.jpg",
        "images/pepe-7/sticker_2.png",
    ]
    assert [s.style for s in lib] == ["cat-3", "pepe-7", "pepe-7"]
    for s in lib:
        assert (s.source, s.licence, s.label, s.description) == ("ingest:SER30K", None, None, "")
        rel = s.image.removeprefix("images/")
        assert lib.image_path(s).read_bytes() == (src / rel).read_bytes()  # byte-for-byte copy
        with Image.open(lib.image_path(s)) as img:
            img.load()


def test_flat_and_deep_layouts(tmp_path: Path) -> None:
    src = tmp_path / "mine"
    make_image(src / "happy.png")
    make_image(src / "a" / "b" / "sad.webp", fmt="WEBP")
    make_image(src / "cmp.bmp", fmt="BMP")
    ingest_folder(src, tmp_path / "lib")
    lib = StickerLibrary.load(tmp_path / "lib")
    assert {s.id: s.style for s in lib} == {"a/b/sad": "b", "cmp": None, "happy": None}
    assert lib.missing_images() == []


def test_bad_files_reported_and_good_ones_kept(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    src = tmp_path / "src"
    make_image(src / "t" / "good.png")
    (src / "t" / "empty.png").write_bytes(b"")
    (src / "t" / "text.png").write_text("hello, I am not a picture\n")
    truncate(make_noise(src / "t" / "cut.png", "PNG"))
    truncate(make_noise(src / "t" / "cut.jpg", "JPEG"))
    huge_png(src / "t" / "bomb.png", 100_000, 100_000)  # beyond Pillow's own bomb limit
    huge_png(src / "t" / "warn.png", 10_000, 10_000)  # in Pillow's warning-only zone
    make_image(src / "t" / "wide.png", (5000, 10))  # only beyond our limit
    make_image(src / "t" / "cmyk.jpg", mode="CMYK")
    make_image(src / "t" / "tiff.png", fmt="TIFF")
    with caplog.at_level(logging.WARNING, logger="stickerconv.stickers.ingest"):
        report = ingest_folder(src, tmp_path / "lib")

    reasons = {b.path.name: b.reason for b in report.bad}
    assert report.added == 1
    assert reasons["empty.png"] == "zero bytes"
    assert reasons["text.png"] == "not an image (cannot identify image file)"
    assert reasons["cut.png"].startswith("truncated or corrupt image data")
    assert reasons["cut.jpg"].startswith("truncated or corrupt image data")
    assert reasons["bomb.png"] == "too large: 100000x100000 px (limit 4096x4096 / 16,777,216 px)"
    assert reasons["warn.png"] == "too large: 10000x10000 px (limit 4096x4096 / 16,777,216 px)"
    assert reasons["wide.png"] == "too large: 5000x10 px (limit 4096x4096 / 16,777,216 px)"
    assert reasons["cmyk.jpg"] == "unsupported mode CMYK (supported: 1, L, LA, P, PA, RGB, RGBA)"
    assert reasons["tiff.png"].startswith("unsupported format TIFF")
    assert len(reasons) == 9
    assert all(b.path.parent == src / "t" for b in report.bad)
    for name in reasons:
        assert any(name in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert [s.id for s in StickerLibrary.load(tmp_path / "lib")] == ["t/good"]

    saved = json.loads((tmp_path / "lib" / "ingest_report.json").read_text(encoding="utf-8"))
    assert saved["added"] == 1
    assert {Path(b["path"]).name: b["reason"] for b in saved["bad"]} == reasons


def test_size_limits_are_configurable(tmp_path: Path) -> None:
    make_image(tmp_path / "src" / "a.png", (300, 200))
    make_image(tmp_path / "src" / "b.png", (100, 100))
    report = ingest_folder(tmp_path / "src", tmp_path / "lib", max_side=256, max_pixels=50_000)
    assert report.added == 1
    assert report.bad[0].reason == "too large: 300x200 px (limit 256x256 / 50,000 px)"


def test_non_image_extensions_are_reported(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_image(src / "ok.png")
    (src / "notes.txt").write_text("x")
    (src / ".DS_Store").write_bytes(b"\0\0")
    (src / "theme").mkdir()
    (src / "theme" / "README").write_text("x")
    report = ingest_folder(src, tmp_path / "lib")
    assert report.added == 1
    assert report.skipped_non_image_ext == [src / ".DS_Store", src / "notes.txt", src / "theme" / "README"]


def test_same_stem_different_extensions_both_kept(tmp_path: Path) -> None:
    make_image(tmp_path / "src" / "cat.png")
    make_image(tmp_path / "src" / "cat.gif", fmt="GIF")
    ingest_folder(tmp_path / "src", tmp_path / "lib")
    assert [s.id for s in StickerLibrary.load(tmp_path / "lib")] == ["cat", "cat.png"]


def test_published_knowledge_file_as_labels(tmp_path: Path) -> None:
    numbers = knowledge_numbers()
    assert len(numbers) == 10
    src = tmp_path / "SER30K"
    for n in numbers:
        make_image(src / "pepe-7" / f"sticker_{n}.jpg")
    make_image(src / "pepe-7" / "sticker_9999.jpg")  # present but not annotated
    report = ingest_folder(src, tmp_path / "lib", labels=KNOWLEDGE)

    assert (report.added, report.annotated, report.unmatched_annotations) == (11, 10, [])
    by_id = StickerLibrary.load(tmp_path / "lib").by_id()
    with KNOWLEDGE.open(encoding="utf-8") as fh:
        for line in fh:
            record = json.loads(line)
            sticker = by_id["pepe-7/" + Path(record["image"]).stem]
            assert sticker.description == record["description"]
            assert sticker.emotion == record["emotion"]
            assert sticker.recommendation == record["recommendation"]
            assert sticker.label is None  # the published file has no class label
    assert by_id["pepe-7/sticker_9999"].description == ""


def test_labels_match_flat_layout_by_stem_and_report_unmatched(tmp_path: Path) -> None:
    numbers = knowledge_numbers()
    for n in numbers[:4]:
        make_image(tmp_path / "flat" / f"sticker_{n}.png")
    make_image(tmp_path / "flat" / "other" / f"sticker_{numbers[4]}.png")  # wrong theme: no stem fallback
    report = ingest_folder(tmp_path / "flat", tmp_path / "lib", labels=KNOWLEDGE)
    assert report.annotated == 4
    assert sorted(report.unmatched_annotations) == sorted(f"pepe-7/sticker_{n}" for n in numbers[4:])


def test_labels_json_array_and_csv(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for name in ("a", "b", "c"):
        make_image(src / "th" / f"{name}.png")
    array = tmp_path / "labels.json"
    array.write_text(
        json.dumps(
            [
                {"path": "/far/away/th/a.png", "label": "happiness", "description": "A"},
                {"image": "th/b.jpg", "origin_anno": "Sadness"},
                {"image": "th/zzz.png", "label": "Fear"},
            ]
        ),
        encoding="utf-8",
    )
    report = ingest_folder(src, tmp_path / "lib1", labels=array)
    assert (report.annotated, report.unmatched_annotations) == (2, ["th/zzz"])
    labels = {s.id: s.label for s in StickerLibrary.load(tmp_path / "lib1")}
    assert labels == {"th/a": EmotionLabel.HAPPINESS, "th/b": EmotionLabel.SADNESS, "th/c": None}

    table = tmp_path / "labels.csv"
    table.write_text('image,label,recommendation,notes\nth/c.png,Anger,"use it, when cross",x\nth/a.png,,,\n')
    report = ingest_folder(src, tmp_path / "lib2", labels=table)
    by_id = StickerLibrary.load(tmp_path / "lib2").by_id()
    assert report.annotated == 2
    assert (by_id["th/c"].label, by_id["th/c"].recommendation) == (EmotionLabel.ANGER, "use it, when cross")
    assert by_id["th/a"].label is None


@pytest.mark.parametrize(
    ("name", "content", "line", "field"),
    [
        (
            "l.jsonl",
            '{"image": "t/a.png", "label": "Anger"}\n\n{"image": "t/b.png", "label": "Joy"}\n',
            3,
            "label",
        ),
        ("l.json", '[{"image": "t/a.png"}, {"path": "t/b.png", "origin_anno": "Meh"}]', 2, "origin_anno"),
        ("l.csv", "image,label\nt/a.png,Anger\nt/b.png,Angry\n", 3, "label"),
        ("l.jsonl", '{"image": "t/a.png"}\n{"label": "Anger"}\n', 2, None),
    ],
)
def test_bad_labels_file_names_file_and_line(
    tmp_path: Path, name: str, content: str, line: int, field: str | None
) -> None:
    make_image(tmp_path / "src" / "t" / "a.png")
    labels = tmp_path / name
    labels.write_text(content, encoding="utf-8")
    with pytest.raises(RecordError) as info:
        ingest_folder(tmp_path / "src", tmp_path / "lib", labels=labels)
    assert (info.value.path, info.value.line, info.value.field) == (labels, line, field)
    assert f"{labels}:{line}" in str(info.value)
    assert not (tmp_path / "lib").exists()  # failed before copying anything


def test_refuses_non_empty_out(tmp_path: Path) -> None:
    make_image(tmp_path / "src" / "a.png")
    ingest_folder(tmp_path / "src", tmp_path / "lib")
    with pytest.raises(LibraryError, match="already holds a sticker library"):
        ingest_folder(tmp_path / "src", tmp_path / "lib")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("x")
    with pytest.raises(LibraryError, match="not empty"):
        ingest_folder(tmp_path / "src", tmp_path / "other")
    (tmp_path / "empty").mkdir()
    assert ingest_folder(tmp_path / "src", tmp_path / "empty").added == 1


def test_missing_or_unusable_src(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ingest_folder(tmp_path / "nope", tmp_path / "lib")
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(NotADirectoryError):
        ingest_folder(tmp_path / "file.png", tmp_path / "lib")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.png").write_bytes(b"")
    (tmp_path / "junk" / "b.txt").write_text("x")
    with pytest.raises(LibraryError, match="no usable images .*1 bad file"):
        ingest_folder(tmp_path / "junk", tmp_path / "lib")
    assert not (tmp_path / "lib").exists()
