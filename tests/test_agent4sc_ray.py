"""`generate --executor ray` on a local Ray instance: shards merge into the same sessions as a local run
of the same command; a rerun resumes instead of repeating."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from stickerconv.agent4sc.ray_executor import SHARDS, merge_shards, shard_windows
from stickerconv.pipelines.pools import PoolOptions, make_pools
from stickerconv.stickers.library import StickerLibrary
from stickerconv.stickers.pools import PoolManifest

from helpers.agent4sc import PERSONAS, used_sticker_images
from helpers.fake_openai_server import FakeOpenAIServer, dialogue_reply

SCRIPT = Path(sys.executable).parent / "stickerconv"


def _pid(line: str) -> str:
    return json.loads(line)["meta"]["persona_id"]


def test_shard_windows_cover_everything_once():
    assert shard_windows(10, 3) == [range(0, 4), range(4, 7), range(7, 10)]
    assert shard_windows(2, 8) == [range(0, 1), range(1, 2)]
    windows = shard_windows(101, 7)
    assert [i for w in windows for i in w] == list(range(101)) and all(len(w) for w in windows)


def test_merge_prefers_kept_sessions_and_orders_by_persona(tmp_path):
    def write(path, *pids):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps({"conversation": [], "meta": {"persona_id": p}}) + "\n" for p in pids))

    write(tmp_path / SHARDS / "000" / "conversations.jsonl", "p2", "p0")
    write(tmp_path / SHARDS / "001" / "rejected.jsonl", "p1", "p2")  # p2 kept elsewhere: not a rejection
    (tmp_path / SHARDS / "001" / "conversations.jsonl").write_text('{"conversation": [{"tu')  # torn by a crash
    assert merge_shards(tmp_path, {"p0": 0, "p1": 1, "p2": 2}) == (2, 1)
    kept = [json.loads(x)["meta"]["persona_id"] for x in (tmp_path / "conversations.jsonl").read_text().splitlines()]
    assert kept == ["p0", "p2"]
    assert merge_shards(tmp_path, {"p0": 0, "p1": 1, "p2": 2}) == (2, 1)  # idempotent


@pytest.mark.slow
def test_ray_executor_equals_a_local_run_and_resumes(tmp_path, small_index):
    personas = tmp_path / "personas.jsonl"
    personas.write_text(
        "".join(
            json.dumps(
                {"emotion": "Fear", "persona": f"You are nurse {i}.", "situation": f"Night shift {i} scares you."}
            )
            + "\n"
            for i in range(6)
        )
    )
    with FakeOpenAIServer(reply=dialogue_reply) as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "RAY_"))}
        env |= {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "test", "RAY_AUTH_MODE": "disabled"}

        def generate(out, *extra):
            args = [str(SCRIPT), "generate", "--personas", str(personas), "--stickers", str(small_index.library.root)]
            args += ["--out", str(out), "--llm", "openai:fake-model", *extra]
            done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
            assert done.returncode == 0, done.stderr[-3000:]
            return done

        generate(tmp_path / "local")
        generate(tmp_path / "ray", "--executor", "ray", "--shards", "2", "--limit", "3")
        assert len(list((tmp_path / "ray" / SHARDS).iterdir())) == 2
        first = json.loads((tmp_path / "ray" / "summary.json").read_text())
        assert first["kept"] + first["rejected"] == 3 and first["executor"] == "ray"
        second = generate(tmp_path / "ray", "--executor", "ray", "--shards", "3")
        assert "3 already done" in second.stdout

    def files(folder):
        paths = [folder / name for name in ("conversations.jsonl", "rejected.jsonl")]
        by_persona = [sorted(p.read_text().splitlines() if p.is_file() else [], key=_pid) for p in paths]
        return by_persona  # a local run appends in finishing order, a merge in persona order

    assert files(tmp_path / "ray") == files(tmp_path / "local")  # the same sessions, byte for byte
    merged = (tmp_path / "ray" / "conversations.jsonl").read_text().splitlines()
    assert merged == sorted(merged, key=_pid)  # merged in persona order
    ids = [_pid(line) for kind in files(tmp_path / "ray") for line in kind]
    assert sorted(ids) == [f"p{i:06d}" for i in range(6)]
    summary = json.loads((tmp_path / "ray" / "summary.json").read_text())
    assert summary["dataset"]["sessions"] == len(merged)
    quality = json.loads((tmp_path / "ray" / "quality" / "quality.json").read_text())  # written by every run
    assert quality["ray"]["sessions"] == len(merged)
    assert sum(row["calls"] for row in summary["llm"]) > 0


@pytest.mark.slow
def test_ray_shards_keep_to_the_sticker_pool(tmp_path, small_index):
    pack = tmp_path / "pack"
    shutil.copytree(small_index.library.root, pack)
    make_pools(PoolOptions(pack, pools="train=0.5,test=0.5", seed=1))
    manifest = PoolManifest.load(pack)
    image_of = StickerLibrary.load(pack).by_id()
    test_images = {image_of[i].image for i in manifest.pools["test"]}
    personas = tmp_path / "personas.jsonl"
    personas.write_text("".join(p.model_dump_json() + "\n" for p in PERSONAS[:4]))
    with FakeOpenAIServer(reply=dialogue_reply) as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "RAY_"))}
        env |= {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "test", "RAY_AUTH_MODE": "disabled"}
        args = [str(SCRIPT), "generate", "--personas", str(personas), "--stickers", str(pack), "--pool", "train"]
        args += ["--out", str(tmp_path / "ray"), "--llm", "openai:fake-model", "--executor", "ray", "--shards", "2"]
        done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
    sessions = [json.loads(line) for line in (tmp_path / "ray" / "conversations.jsonl").read_text().splitlines()]
    used = used_sticker_images(sessions)
    assert sessions and used and not set(used) & test_images
    assert all(session["meta"]["sticker_pool"] == "train" for session in sessions)
    summary = json.loads((tmp_path / "ray" / "summary.json").read_text())
    assert summary["sticker_pool"] == "train" and summary["profile"] == "default" and summary["executor"] == "ray"
