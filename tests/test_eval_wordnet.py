"""Offline WordNet for METEOR: copied from the Debian packages, lexnames generated, clear errors, no download."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from stickerconv.evaluate.text.wordnet import (
    SYSTEM_WORDNET,
    WordNetMissingError,
    default_data_dir,
    lexnames_text,
    load_wordnet,
    prepare_wordnet,
)


def test_lexnames_is_the_wordnet_3_file() -> None:
    lines = lexnames_text().splitlines()
    assert len(lines) == 45
    assert lines[:4] == ["00\tadj.all\t3", "01\tadj.pert\t3", "02\tadv.all\t4", "03\tnoun.Tops\t1"]
    assert lines[4] == "04\tnoun.act\t1" and lines[28] == "28\tnoun.time\t1"
    assert lines[29] == "29\tverb.body\t2" and lines[43] == "43\tverb.weather\t2"
    assert lines[44] == "44\tadj.ppl\t3"


def test_prepare_copies_once_and_the_reader_answers(tmp_path, monkeypatch) -> None:
    import nltk

    monkeypatch.setattr(nltk, "download", lambda *a, **k: pytest.fail("nltk.download must never be called"))
    root = prepare_wordnet(tmp_path)
    assert root == tmp_path / "corpora" / "wordnet"
    assert (root / "lexnames").read_text() == lexnames_text()
    assert (root / "data.noun").stat().st_size == (SYSTEM_WORDNET / "data.noun").stat().st_size
    stamp = (root / "data.noun").stat().st_ino
    assert prepare_wordnet(tmp_path) == root and (root / "data.noun").stat().st_ino == stamp  # not copied again
    reader = load_wordnet(tmp_path)
    assert str(tmp_path) in nltk.data.path
    assert reader.get_version() == "3.0"
    assert {lemma.name() for s in reader.synsets("happy") for lemma in s.lemmas()} >= {"happy", "glad", "felicitous"}
    assert [p for p in tmp_path.joinpath("corpora").iterdir()] == [root]  # no staging folder left behind


def test_a_changed_source_is_copied_again(tmp_path) -> None:
    source = tmp_path / "src"
    shutil.copytree(SYSTEM_WORDNET, source)
    root = prepare_wordnet(tmp_path / "data", source)
    (source / "verb.exc").write_text("extra line\n")
    prepare_wordnet(tmp_path / "data", source)
    assert (root / "verb.exc").read_text() == "extra line\n"


def test_missing_wordnet_names_the_apt_packages(tmp_path) -> None:
    with pytest.raises(WordNetMissingError, match="apt-get install wordnet-base wordnet-sense-index"):
        prepare_wordnet(tmp_path, source=tmp_path / "nowhere")
    only_base = tmp_path / "base"
    shutil.copytree(SYSTEM_WORDNET, only_base)
    (only_base / "index.sense").unlink()
    with pytest.raises(
        WordNetMissingError, match=r"index\.sense\. Install it with `sudo apt-get install wordnet-sense-index`"
    ):
        prepare_wordnet(tmp_path, source=only_base)


def test_data_dir_comes_from_the_environment(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("STICKERCONV_NLTK_DATA", str(tmp_path / "mine"))
    assert default_data_dir() == tmp_path / "mine"
    monkeypatch.delenv("STICKERCONV_NLTK_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert default_data_dir() == tmp_path / "cache" / "stickerconv" / "nltk_data"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_data_dir() == Path.home() / ".cache" / "stickerconv" / "nltk_data"
