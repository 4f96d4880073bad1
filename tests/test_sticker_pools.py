"""Disjoint sticker pools: a theme-level, seeded split with a manifest; generation on the train pool never
retrieves a test-pool sticker; `data split` sends each pool's dialogues to its own splits."""

import copy
import json
import shutil

import pytest
from typer.testing import CliRunner

from stickerconv.cli import app
from stickerconv.data.split import split_file
from stickerconv.pipelines import PipelineError
from stickerconv.pipelines.generation import GenerationOptions, generate
from stickerconv.pipelines.pools import PoolOptions, load_index, make_pools, parse_ratios
from stickerconv.runfiles import CONVERSATIONS
from stickerconv.schema import Sticker
from stickerconv.stickers.library import StickerLibrary
from stickerconv.stickers.pools import POOLS_FILE, PoolError, PoolManifest, split_pools, theme_of

from helpers.agent4sc import PERSONAS, llm_factory, scripted_world, used_sticker_images
from helpers.data import published_sessions, write_jsonl

QUERIES = [
    "emotion: Sadness, emotion describe: tearful and low",
    "emotion: Happiness, emotion describe: laughing with joy",
    "emotion: Anger, emotion describe: furious",
    "emotion: Fear, emotion describe: scared",
    "emotion: Surprise, emotion describe: astonished",
    "emotion: Neutral, emotion describe: calm",
]


def _emoji_library(root) -> StickerLibrary:
    """Twelve emoji in two styles, one with skin tones: 12 themes, 26 stickers."""
    stickers = []
    for style in ("noto", "twemoji"):
        for n in range(12):
            name = f"face number {n}"
            variants = [("", name)] + ([("-1f3fb", f"{name}: light skin tone")] if n == 0 else [])
            for suffix, full in variants:
                code = f"1f6{n:02d}{suffix}"
                stickers.append(
                    Sticker(
                        id=f"{style}/{code}",
                        image=f"images/{style}/{code}.png",
                        style=style,
                        meta={"hexcode": code, "name": full},
                    )
                )
    library = StickerLibrary(root, stickers)
    root.mkdir(parents=True, exist_ok=True)
    library.save()
    return library


@pytest.fixture
def pooled_pack(tmp_path, small_index):
    """A copy of the indexed small pack (the session fixture stays untouched) split 50/50."""
    root = tmp_path / "pack"
    shutil.copytree(small_index.library.root, root)
    make_pools(PoolOptions(root, "train=0.5,test=0.5", seed=3))
    return root


def test_pools_are_disjoint_theme_level_and_seeded(tmp_path):
    library = _emoji_library(tmp_path / "lib")
    manifest = split_pools(library, {"train": 0.75, "test": 0.25}, seed=1)
    train, test = set(manifest.pools["train"]), set(manifest.pools["test"])
    assert not train & test and train | test == {s.id for s in library}
    by_id = library.by_id()
    for pool, ids in manifest.pools.items():  # every style and skin tone of an emoji sits in its emoji's pool
        themes = {theme_of(by_id[i]) for i in ids}
        assert themes == set(manifest.themes[pool])
        assert all(theme_of(s) not in themes for s in library if s.id not in ids)
    assert theme_of(by_id["noto/1f600-1f3fb"]) == theme_of(by_id["twemoji/1f600"]) == "emoji:face number 0"
    assert 0.5 < len(train) / len(library) < 0.95
    assert split_pools(library, {"train": 0.75, "test": 0.25}, seed=1) == manifest
    assert split_pools(library, {"train": 0.75, "test": 0.25}, seed=2).pools != manifest.pools


def test_theme_rule_for_ingested_and_plain_stickers():
    assert theme_of(Sticker(image="images/cat_theme/sticker_3.jpg", style="cat_theme")) == "theme:cat_theme"
    assert theme_of(Sticker(id="set/a", image="a.png")) == "id:set"


def test_manifest_round_trips_with_seq_num_per_pool(tmp_path):
    library = _emoji_library(tmp_path / "lib")
    manifest = split_pools(library, {"train": 0.8, "test": 0.2}, seed=0)
    path = manifest.save(library.root)
    data = json.loads(path.read_text())
    for pool, rows in data["pools"].items():
        assert [row["seq_num"] for row in rows] == list(range(1, len(rows) + 1))
        assert [row["id"] for row in rows] == manifest.pools[pool]
    assert data["seed"] == 0 and data["ratios"] == {"train": 0.8, "test": 0.2} and data["theme_rule"]
    assert PoolManifest.load(library.root) == manifest
    data["pools"]["test"][0]["seq_num"] = 7
    path.write_text(json.dumps(data))
    with pytest.raises(PoolError, match="seq_num"):
        PoolManifest.load(library.root)


def test_ratios_are_checked():
    assert parse_ratios("train=0.8, test=0.2") == {"train": 0.8, "test": 0.2}
    for bad in ("train=0.8", "train=0.5,test=0.6", "train:0.8,test=0.2", "train=x,test=1"):
        with pytest.raises(PipelineError, match="--pools"):
            parse_ratios(bad)


def test_a_pool_index_searches_its_pool_alone(pooled_pack):
    manifest = PoolManifest.load(pooled_pack)
    for pool in ("train", "test"):
        index = load_index(pooled_pack, pool)
        assert {s.id for s in index.stickers} <= set(manifest.pools[pool])
        for hits in index.search_many(QUERIES, k=10):
            assert hits and {h.sticker.id for h in hits} <= set(manifest.pools[pool])
        for hit in index.search(QUERIES[0], k=5, labels=["Sadness", "Happiness"]):
            assert hit.sticker.id in manifest.pools[pool]
    with pytest.raises(PipelineError, match="no pool 'dev'"):
        load_index(pooled_pack, "dev")


def test_generation_on_the_train_pool_uses_no_test_sticker(tmp_path, pooled_pack):
    personas = write_jsonl(tmp_path / "personas.jsonl", [json.loads(p.model_dump_json()) for p in PERSONAS[:3]])
    out = tmp_path / "run"
    options = GenerationOptions(personas, pooled_pack, out, max_turns=4, concurrency=2, pool="train")
    result = generate(options, llm_factory=llm_factory(tmp_path, scripted_world()))
    manifest = PoolManifest.load(pooled_pack)
    image_of = StickerLibrary.load(pooled_pack).by_id()
    train_images = {image_of[i].image for i in manifest.pools["train"]}
    test_images = {image_of[i].image for i in manifest.pools["test"]}
    sessions = [json.loads(line) for line in (out / CONVERSATIONS).read_text().splitlines()]
    used = used_sticker_images(sessions)
    assert sessions and used and all(image in train_images and image not in test_images for image in used)
    assert all(session["meta"]["sticker_pool"] == "train" for session in sessions)
    assert result.summary["sticker_pool"] == "train"


def test_a_pool_needs_a_manifest(tmp_path, small_index):
    root = tmp_path / "pack"
    shutil.copytree(small_index.library.root, root)
    options = GenerationOptions(tmp_path / "p.jsonl", root, tmp_path / "run", pool="train")
    with pytest.raises(PipelineError, match="stickerconv stickers pools"):
        generate(options, llm_factory=llm_factory(tmp_path, scripted_world()))
    with pytest.raises(PipelineError, match="stickerconv stickers pools"):  # checked before any shard starts
        generate(GenerationOptions(tmp_path / "p.jsonl", root, tmp_path / "r", pool="train", executor="ray"))


def _pool_sessions() -> list[dict]:
    records = []
    for i in range(40):
        record = copy.deepcopy(published_sessions()[i % 10])
        record["user_persona"] = f"persona {i}"
        record["meta"] = {"persona_id": f"p{i}", "sticker_pool": "test" if i % 4 == 0 else "train"}
        records.append(record)
    return records


def test_data_split_follows_the_sticker_pools(tmp_path):
    records = _pool_sessions()
    report = split_file(write_jsonl(tmp_path / "all.jsonl", records), tmp_path / "split", ratios=(0.7, 0.2, 0.1))
    assert report.by_pool
    pools = {
        name: [json.loads(line)["meta"]["sticker_pool"] for line in path.read_text().splitlines()]
        for name, path in report.files.items()
    }
    assert pools["test"] == ["test"] * 10  # every test-pool dialogue, whatever the test ratio
    assert set(pools["train"]) == set(pools["validation"]) == {"train"}
    assert len(pools["train"]) + len(pools["validation"]) == 30 and len(pools["validation"]) > 0
    assert json.loads((tmp_path / "split" / "split.json").read_text())["by_sticker_pool"]["test"] == ["test"]


def test_data_split_refuses_a_persona_in_two_pools_and_half_tagged_files(tmp_path):
    records = _pool_sessions()
    records[1]["meta"]["persona_id"] = "p0"  # same persona as record 0 (test pool), but a train-pool dialogue
    with pytest.raises(ValueError, match="sticker pools test, train"):
        split_file(write_jsonl(tmp_path / "a.jsonl", records), tmp_path / "a")
    records = _pool_sessions()
    del records[3]["meta"]["sticker_pool"]
    with pytest.raises(ValueError, match="some records carry"):
        split_file(write_jsonl(tmp_path / "b.jsonl", records), tmp_path / "b")


def test_pools_command(tmp_path):
    library = _emoji_library(tmp_path / "lib")
    result = CliRunner().invoke(app, ["stickers", "pools", str(library.root), "--seed", "4", "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["seed"] == 4 and sum(shown["stickers"].values()) == len(library)
    assert (library.root / POOLS_FILE).is_file()
