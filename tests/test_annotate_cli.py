"""``stickerconv stickers annotate`` as a user runs it: the installed script in a subprocess, against the
scripted vision server of helpers/annotate.py; no model configured; the embedded model refused; the emoji pack;
and kill -9 at random points followed by reruns."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stickerconv.stickers.annotate import ANNOTATE_DIR
from stickerconv.stickers.library import StickerLibrary

from helpers.annotate import BAD_FILES, GOOD, Script, make_library
from helpers.fake_openai_server import FakeOpenAIServer

SCRIPT = Path(sys.executable).parent / "stickerconv"


def command(*args) -> list[str]:
    return [str(SCRIPT), "stickers", "annotate", *map(str, args)]


def environment(server: FakeOpenAIServer | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    if server is not None:
        env |= {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "test"}
    return env


def flat(text: str) -> str:
    """Output without the line breaks rich inserts at the terminal width."""
    return " ".join(text.split())


def run(args, env, check=True):
    result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture
def config(tmp_path) -> Path:
    path = tmp_path / "llm.toml"
    path.write_text("[retry]\nmax_attempts = 3\nbase_delay = 0.0\nmax_delay = 0.0\n")
    return path


def test_without_a_vision_model_it_says_so_and_lists_the_options(tmp_path):
    library = make_library(tmp_path / "lib")
    result = run(command(library.root), environment(), check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "no vision model configured: 15 sticker(s)" in result.stderr
    for option in ("--vlm openai:gpt-4o-mini", "vllm serve", "ollama pull", "[roles.sticker_vlm]", "emoji pack"):
        assert option in result.stderr
    assert not (library.root / ANNOTATE_DIR).exists()


def test_the_embedded_model_is_refused_as_a_vision_model(tmp_path):
    library = make_library(tmp_path / "lib")
    result = run(command(library.root, "--vlm", "local"), environment(), check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--vlm local: the embedded local model (SmolLM2) is a text-only model and cannot see images" in result.stderr


def test_the_emoji_pack_needs_no_annotation(tmp_path):
    from stickerconv.stickers.emoji_pack import build_default_pack

    build_default_pack(tmp_path / "pack", ["noto"], limit=6)
    before = (tmp_path / "pack" / "stickers.jsonl").read_bytes()
    result = run(command(tmp_path / "pack"), environment())
    assert "is the embedded emoji pack: its texts and labels come from emoji metadata" in flat(result.stdout)
    assert (tmp_path / "pack" / "stickers.jsonl").read_bytes() == before
    assert not (tmp_path / "pack" / ANNOTATE_DIR).exists()


def test_annotate_a_library_report_and_bad_files_by_path(tmp_path, config):
    library = make_library(tmp_path / "lib")
    with FakeOpenAIServer(reply=Script(library), model="fake-vlm") as server:
        env = environment(server)
        args = command(library.root, "--vlm", "openai:fake-vlm", "--config", config)
        report = json.loads(run([*args, "--json"], env).stdout)
        assert report["knowledge"]["done"] == len(GOOD) and report["filter"]["passed"] == 9
        assert report["agreement"]["n"] == 2 and report["agreement"]["agree"] == 1
        assert (library.root / ANNOTATE_DIR / "llm.sqlite").is_file()  # the cache beside the library
        again = run(args, env)  # nothing left to ask: the summary and the bad files, by path
    out = flat(again.stdout)
    assert f"{len(GOOD)} of 15 sticker(s) annotated" in out
    assert "filter: 9 of 10 passed (1 unsuitable)" in out
    assert "proposed vs human label: 1/2 agree (50.0%)" in out
    assert "rejects.jsonl" in out.replace(" ", "")
    for name in BAD_FILES:
        assert f"skipped {library.root / 'images' / name}" in again.stderr.replace("\n", "")
    assert "Disgust" in again.stdout and "Happiness" in again.stdout  # the label table


def _state(root: Path) -> dict:
    files = {}
    for name in ("filter.jsonl", "caption.jsonl", "knowledge.jsonl", "rejects.jsonl"):
        lines = (root / ANNOTATE_DIR / name).read_text().splitlines()
        ids = [json.loads(line)["id"] for line in lines]
        assert len(ids) == len(set(ids)), f"{name}: duplicate records"
        files[name] = sorted(lines)
    files["stickers.jsonl"] = (root / "stickers.jsonl").read_text()
    return files


@pytest.mark.slow
def test_kill_9_at_random_points_and_rerun_gives_each_record_once_and_the_same_result(tmp_path, config):
    whole = make_library(tmp_path / "whole")
    killed = make_library(tmp_path / "killed")
    with FakeOpenAIServer(reply=Script(whole), latency=0.1) as server:
        env = environment(server)
        args = command(killed.root, "--vlm", "openai:fake-vlm", "--config", config, "--concurrency", "3")
        started = time.monotonic()
        run(command(whole.root, "--vlm", "openai:fake-vlm", "--config", config, "--concurrency", "3"), env)
        duration = time.monotonic() - started  # kill points scale with this machine's speed
        rng, kills = random.Random(11), 0
        for _ in range(30):
            proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(0.1, 0.45) * duration)  # resumed runs have less left to do
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
            elif proc.returncode == 0:
                break
        run(args, env)
    assert kills >= 2
    assert _state(killed.root) == _state(whole.root)
    annotated = [s for s in StickerLibrary.load(killed.root) if s.meta and "proposed_label" in s.meta]
    assert sorted(s.id for s in annotated) == sorted(GOOD)
