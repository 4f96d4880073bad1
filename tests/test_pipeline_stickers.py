"""pipelines.stickers without the CLI: the default pack rendered and indexed, a folder ingested, a search."""

import json

import pytest
from PIL import Image

from stickerconv.pipelines import PipelineError
from stickerconv.pipelines.stickers import (
    IndexOptions,
    IngestOptions,
    PackOptions,
    SearchOptions,
    build_indexed_pack,
    emotion_labels,
    index_library,
    ingest_library,
    search_stickers,
)
from stickerconv.stickers.library import StickerLibrary

from helpers.paths import fixture_file


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    out = tmp_path_factory.mktemp("pipeline") / "pack"
    seen = []

    def progress(description):
        seen.append(description)
        from stickerconv.pipelines import no_progress

        return no_progress(description)

    built = build_indexed_pack(PackOptions(out, ("noto",), limit=60), progress=progress)
    assert seen == ["rendering stickers", f"embedding with {built.index.index.embedder.name}"]
    return out, built


def test_build_indexed_pack_writes_the_pack_and_its_index(pack):
    out, built = pack
    assert built.build.stickers == len(StickerLibrary.load(out)) > 0
    assert json.loads((out / "build_report.json").read_text())["stickers"] == built.build.stickers
    assert built.index.folder == out / "index" and (out / "index" / "vectors.npy").is_file()
    summary = built.index.to_dict()
    assert summary["indexed"] == built.build.stickers and summary["kind"] == "exact" and summary["skipped"] == []
    assert built.index.index.search("I failed my exam again", k=1)[0].sticker.label.value == "Sadness"


def test_search_filters_labels_in_any_case(pack):
    out, _ = pack
    hits = search_stickers(SearchOptions(out, "so happy", k=3, labels=("fear", "SADNESS")))
    assert len(hits) == 3 and {h.sticker.label.value for h in hits} <= {"Fear", "Sadness"}
    assert [h.rank for h in hits] == [1, 2, 3]


def test_bad_choices_name_the_option_the_value_and_the_choices(pack):
    out, _ = pack
    with pytest.raises(PipelineError, match="unknown label 'Joy'; choose from .*Happiness"):
        emotion_labels(["Joy"])
    with pytest.raises(PipelineError, match="--kind 'hnsw': choose from auto, exact, ivf"):
        IndexOptions(out, kind="hnsw")
    with pytest.raises(PipelineError, match="--template 'x'"):
        IndexOptions(out, template="x")
    with pytest.raises(PipelineError, match="is not the pack's out_dir"):
        build_indexed_pack(PackOptions(out / "a"), index=IndexOptions(out / "b"))
    assert emotion_labels([]) is None


def test_index_library_reports_stickers_without_text(pack, tmp_path):
    out, built = pack
    lib = tmp_path / "lib"
    records = (out / "stickers.jsonl").read_text().splitlines()
    first = json.loads(records[0]) | {"description": "", "emotion": ""}
    lib.mkdir()
    (lib / "stickers.jsonl").write_text("\n".join([json.dumps(first), *records[1:]]) + "\n")
    (lib / "images").symlink_to(out / "images")
    result = index_library(IndexOptions(lib))
    assert [s.id for s in result.skipped] == [first["id"]]
    assert len(result.index) == built.build.stickers - 1 and (lib / "index").is_dir()


def test_ingest_library_reports_bad_files(tmp_path):
    src = tmp_path / "src" / "theme-1"
    src.mkdir(parents=True)
    Image.new("RGB", (64, 64), "red").save(src / "sticker_1.png")
    (src / "sticker_2.jpg").write_bytes(b"")
    (src / "notes.txt").write_text("not a sticker")
    labels = fixture_file("stickerconv", "stickers", "knowledge_sticker_example.jsonl")
    result = ingest_library(IngestOptions(tmp_path / "src", tmp_path / "lib", labels))
    summary = result.to_dict()
    assert summary["added"] == 1 and len(StickerLibrary.load(tmp_path / "lib")) == 1
    assert [b["reason"] for b in summary["bad"]] == ["zero bytes"]
    assert [p.endswith("notes.txt") for p in summary["skipped_non_image_ext"]] == [True]
    assert len(summary["unmatched_annotations"]) == 10
