"""The command line as a user runs it: the installed ``stickerconv`` script in a subprocess."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.paths import fixture_file

SCRIPT = Path(sys.executable).parent / "stickerconv"


def run(*args, check=True):
    result = subprocess.run([str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def cli_pack(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "pack"
    result = run("stickers", "build-default", out, "--styles", "noto", "--limit", "120")
    assert "stickers written to" in result.stdout
    result = run("stickers", "index", out)
    assert "indexed" in result.stdout
    return out


def test_search_json(cli_pack):
    hits = json.loads(run("stickers", "search", cli_pack, "I failed my exam again", "-k", "5", "--json").stdout)
    assert len(hits) == 5 and hits[0]["label"] == "Sadness"
    assert {"rank", "score", "id", "label", "description"} <= set(hits[0])


def test_search_table_and_label_filter(cli_pack):
    out = run("stickers", "search", cli_pack, "so happy", "--label", "fear", "--json").stdout
    assert {h["label"] for h in json.loads(out)} == {"Fear"}
    table = run("stickers", "search", cli_pack, "so happy", "-k", "3").stdout
    assert "Happiness" in table and "score" in table


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("stickers", "search", "{missing}", "hi"), "none does not exist"),
        (("stickers", "search", "{tmp}", "hi"), "is not a sticker library: stickers.jsonl is missing"),
        (("stickers", "search", "{pack}", "hi", "--label", "Joy"), "unknown label 'Joy'"),
        (("stickers", "search", "{pack}", "hi", "--embedder", "BAAI/bge-large-en-v1.5"), "built with embedder"),
        (("stickers", "build-default", "{tmp}/x", "--styles", "comic"), "unknown sticker style 'comic'"),
    ],
)
def test_errors_are_one_clear_line(cli_pack, tmp_path, args, message):
    args = [a.format(missing=tmp_path / "none", pack=cli_pack, tmp=tmp_path) for a in args]
    result = run(*args, check=False)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_malformed_library_line_is_located(cli_pack, tmp_path):
    lib = tmp_path / "lib"
    shutil.copytree(cli_pack, lib)
    lines = (lib / "stickers.jsonl").read_text().splitlines()
    lines[6] = lines[6].replace('"label":"', '"label":"X')
    (lib / "stickers.jsonl").write_text("\n".join(lines) + "\n")
    result = run("stickers", "index", lib, check=False)
    assert result.returncode == 2 and f"{lib / 'stickers.jsonl'}:7: field 'label'" in result.stderr


def test_ingest_reports_bad_files(tmp_path):
    from PIL import Image

    src = tmp_path / "src" / "theme-1"
    src.mkdir(parents=True)
    Image.new("RGB", (64, 64), "red").save(src / "sticker_1.png")
    (src / "sticker_2.jpg").write_bytes(b"")
    (src / "sticker_3.png").write_text("not an image")
    result = run(
        "stickers",
        "ingest",
        tmp_path / "src",
        tmp_path / "lib",
        "--labels",
        fixture_file("stickerconv", "stickers", "knowledge_sticker_example.jsonl"),
    )
    flat = " ".join(result.stdout.split())  # rich wraps long lines at the terminal width
    assert "1 stickers added" in flat and "2 bad file(s)" in flat
    assert "sticker_2.jpg: zero bytes" in result.stderr
    assert "10 annotation(s) matched no image" in result.stdout
