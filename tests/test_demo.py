"""``stickerconv demo`` end to end at toy sizes, as a user runs it (a subprocess): every step builds
its outputs and the report, on the embedded model, and the console shows only the steps' tables; a
second run reuses every step; a changed option redoes only the steps it touches; with serving on, the
printed URL answers with the chat page and the API. tests/test_demo_llm.py runs it on a served model."""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

SCRIPT = Path(sys.executable).parent / "stickerconv"
STEPS = ("pack", "personas", "simulate", "dataset", "pegs", "evaluate")
LLM_STEPS = ("personas", "simulate", "evaluate")
TOY = tuple("--pack-limit 60 --n-personas 3 --max-turns 2 --pegs-preset tiny".split())
TOY += tuple("--pegs-steps 2 --joint-steps 2 --vision-steps 20".split())


def demo(out: Path, *extra: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(SCRIPT), "demo", "--out", str(out), *TOY, *extra], capture_output=True, text=True, timeout=1500
    )
    if result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("demo") / "run"
    return out, demo(out, "--eval-items", "2", "--no-serve")


def test_first_run_builds_every_step_and_the_report(built) -> None:
    out, result = built
    state = json.loads((out / "demo-state.json").read_text())
    assert list(state) == list(STEPS) and all(state[s]["done"] for s in STEPS)
    assert (out / "pegs" / "final" / "pegs_config.json").is_file()
    assert (out / "dataset" / "stats" / "report.md").is_file() and (out / "eval" / "report.md").is_file()
    report = (out / "REPORT.md").read_text()
    for section in ("## Simulated sessions", "## Dataset", "## Evaluation on the held-out turns", "### Signatures"):
        assert section in report
    for system in ("text", "tool", "pegs-ret"):
        assert f"| {system} " in report or f" {system} |" in report
    # the embedded model ran every LLM step, and the report says so
    assert {s: state[s]["llm"] for s in STEPS} == {s: "local" if s in LLM_STEPS else None for s in STEPS}
    calls = report.split("## LLM calls", 1)[1].split("\n## ", 1)[0]
    assert "| personas | local:SmolLM2-135M-Instruct.Q4_1 | persona_generator |" in calls and "openai:" not in calls
    # the console shows the steps' tables, the report everything else
    assert len(result.stdout.splitlines()) <= 60 and "|version:" not in result.stdout
    predictions = json.loads((out / "eval" / "pred-pegs-ret.json").read_text())
    assert len(predictions) in (1, 2) and all("pred_text_response" in p for p in predictions)
    flat = " ".join(result.stdout.split())
    assert "total time" in flat and f"report: {out / 'REPORT.md'}" in flat


def test_second_run_reuses_every_step_and_a_changed_option_redoes_only_its_steps(built) -> None:
    out, _ = built
    before = json.loads((out / "demo-state.json").read_text())
    again = " ".join(demo(out, "--eval-items", "2", "--no-serve").stdout.split())
    assert again.count(": cached (took") == len(STEPS)
    changed = " ".join(demo(out, "--eval-items", "1", "--no-serve").stdout.split())
    assert (
        changed.count(": cached (took") == len(STEPS) - 1
        and "baselines and PEGS on the test turns: options changed" in changed
    )
    after = json.loads((out / "demo-state.json").read_text())
    assert {s for s in STEPS if after[s]["key"] != before[s]["key"]} == {"evaluate"}
    assert len(json.loads((out / "eval" / "pred-text.json").read_text())) == 1


def test_serves_the_chat_at_the_printed_url(built) -> None:
    out, _ = built
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    args = [str(SCRIPT), "demo", "--out", str(out), *TOY, "--eval-items", "1", "--port", str(port)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url, lines = f"http://127.0.0.1:{port}", []
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "web chat" in line:
                break
        assert any(url in line for line in lines), "".join(lines)
        for _ in range(100):  # uvicorn binds just after the line is printed
            try:
                page = urllib.request.urlopen(url + "/", timeout=5).read().decode()
                break
            except OSError:
                time.sleep(0.2)
        assert "<html" in page.lower()
        models = json.loads(urllib.request.urlopen(url + "/v1/models", timeout=5).read())
        assert models["data"][0]["id"] == "stickerconv-pegs-ret"
        _upload_through_the_sdk(url, out)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _upload_through_the_sdk(url: str, out: Path) -> None:
    """A user's own JPEG and PNG (not library stickers) through the official SDK: the demo's default
    responder answers, and the images are kept with the run."""
    from openai import OpenAI
    from PIL import Image, ImageDraw

    client = OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    for fmt, colour in (("JPEG", "orange"), ("PNG", "teal")):
        image = Image.new("RGB", (96, 96), "white")
        ImageDraw.Draw(image).ellipse((8, 8, 88, 88), fill=colour)
        buffer = io.BytesIO()
        image.save(buffer, format=fmt)
        data = base64.b64encode(buffer.getvalue()).decode()
        content = [
            {"type": "text", "text": "This is how I feel after my exam."},
            {"type": "image_url", "image_url": {"url": f"data:image/{fmt.lower()};base64,{data}"}},
        ]
        reply = client.chat.completions.create(
            model="stickerconv-pegs-ret", messages=[{"role": "user", "content": content}], timeout=120
        )
        assert reply.choices[0].message.content is not None
    stored = sorted(p.suffix for p in (out / "uploads").rglob("*") if p.suffix in (".jpg", ".jpeg", ".png"))
    assert len(stored) == 2, stored


def test_library_bars_stay_off_the_console_while_the_demo_runs() -> None:
    """transformers' "Loading weights" bar and a raw tqdm bar (the GGUF conversion's) draw nothing inside the
    command's scope, in a fresh process as the command runs; the variable is put back after it."""
    code = """
import io, os
from stickerconv.cli.demo import library_bars_off
with library_bars_off():
    import tqdm
    from transformers.utils import logging as hf_logging
    raw, hf = io.StringIO(), io.StringIO()
    list(tqdm.tqdm(range(3), file=raw, desc="Converting"))
    list(hf_logging.tqdm(range(3), file=hf, desc="Loading weights"))
print(repr(raw.getvalue()), repr(hf.getvalue()), os.environ.get("TQDM_DISABLE"))
"""
    env = {k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["''", "''", "None"]
    drawn = subprocess.run(
        [sys.executable, "-c", code.replace("with library_bars_off():", "if True:")],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert "Converting" in drawn.stdout and "Loading weights" in drawn.stdout  # the bars draw without it
