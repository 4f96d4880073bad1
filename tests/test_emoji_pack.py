import hashlib
import json
import shutil

import pytest
from PIL import Image

from stickerconv.schema import EMOTION_LABELS, Sticker
from stickerconv.stickers.emoji_pack import (
    RENDER_CHUNK,
    PackSourceError,
    build_default_pack,
    load_emoji_metadata,
    select_emoji,
)
from stickerconv.stickers.library import StickerLibrary


def _digest(folder):
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return h.hexdigest()


def test_small_pack_is_valid(small_pack):
    library = StickerLibrary.load(small_pack)
    assert len(library) > 200
    for sticker in library:
        with Image.open(library.image_path(sticker)) as img:
            assert img.mode == "RGBA" and 128 <= img.width == img.height <= 160
        assert sticker.label is not None and sticker.licence == "Apache-2.0" and sticker.style == "noto"
        assert sticker.description and sticker.emotion and sticker.recommendation
    assert set(library.label_counts()) == set(EMOTION_LABELS)
    assert "Apache License 2.0" in (small_pack / "ATTRIBUTION.md").read_text()
    report = json.loads((small_pack / "build_report.json").read_text())
    assert report["stickers"] == len(library)


def test_build_is_reproducible(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    build_default_pack(a, ["noto", "twemoji"], limit=25)
    build_default_pack(b, ["noto", "twemoji"], limit=25)
    assert _digest(a) == _digest(b)


def test_selection_leaves_out_flags_keycaps_and_skin_tones():
    selected = select_emoji(load_emoji_metadata())
    groups = {e.group for e in selected}
    subgroups = {e.subgroup for e in selected}
    assert "flags" not in groups and "component" not in groups and "keycap" not in subgroups
    assert not any("skin tone" in e.name for e in selected)
    assert any(e.name == "loudly crying face" for e in selected)


def test_missing_sources_are_named(tmp_path, monkeypatch):
    empty = tmp_path / "node_modules"
    empty.mkdir()
    monkeypatch.setattr("stickerconv.stickers.emoji_pack._asset_roots", lambda explicit: [empty])
    with pytest.raises(PackSourceError, match=r"@twemoji/svg.*npm ci --prefix assets"):
        build_default_pack(tmp_path / "out", ["twemoji"])
    monkeypatch.setattr("stickerconv.stickers.render.NOTO_FONT_PATHS", (tmp_path / "nope.ttf",))
    with pytest.raises(PackSourceError, match="fonts-noto-color-emoji"):
        build_default_pack(tmp_path / "out", ["noto"])
    with pytest.raises(ValueError, match="unknown sticker style 'comic'"):
        build_default_pack(tmp_path / "out", ["comic"])


def test_missing_metadata_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr("stickerconv.stickers.emoji_pack._asset_roots", lambda explicit: [tmp_path])
    with pytest.raises(PackSourceError, match="emojibase-data"):
        load_emoji_metadata()


@pytest.mark.slow
def test_full_default_pack_meets_the_contract(tmp_path):
    """The issue's contract: >= 1,500 stickers, >= 20 per label, every image opens, every line validates."""
    out = tmp_path / "pack"
    report = build_default_pack(out)
    library = StickerLibrary.load(out)  # validates every line against the schema
    assert len(library) == report.stickers >= 1500
    counts = library.label_counts()
    assert all(counts[label] >= 20 for label in EMOTION_LABELS), counts
    assert set(report.per_style) == {"noto", "twemoji"}
    for sticker in library:
        with Image.open(library.image_path(sticker)) as img:
            img.load()
    for line in (out / "stickers.jsonl").read_text(encoding="utf-8").splitlines():
        Sticker.model_validate_json(line)
    shutil.rmtree(out)


def test_rendering_in_worker_processes_writes_the_same_pack(tmp_path, monkeypatch):
    """Two worker processes (spawned) render what one process renders, byte for byte, in the same order, and
    the progress counts every (style, emoji) pair once, up to the total."""
    packs = {}
    for workers in ("1", "2"):
        monkeypatch.setenv("STICKERCONV_THREADS", workers)
        progress: list[tuple[int, int]] = []
        out = tmp_path / f"workers-{workers}"
        record = progress.append  # bound now: each pass records into its own list
        build_default_pack(out, ["noto", "twemoji"], limit=70, on_progress=lambda d, t, record=record: record((d, t)))
        steps = [b - a for (a, _), (b, _) in zip([(0, 0), *progress], progress, strict=False)]
        assert progress[-1] == (140, 140) and all(0 < step <= RENDER_CHUNK for step in steps)  # a chunk at a time
        packs[workers] = out
    assert _digest(packs["1"]) == _digest(packs["2"])
    ids = [s.id for s in StickerLibrary.load(packs["2"])]
    assert ids[0].startswith("noto/") and ids[-1].startswith("twemoji/") and len(ids) == len(set(ids))
