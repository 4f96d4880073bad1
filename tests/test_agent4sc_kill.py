"""Crash safety of `stickerconv generate`: kill -9 at random points against a faulty server, rerun
until done; every session ends up exactly once, identical to an uninterrupted run."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fake_openai_server import FakeOpenAIServer, FaultPlan, dialogue_reply

SCRIPT = Path(sys.executable).parent / "stickerconv"


def _run(args, env, timeout=300):
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_kill_9_and_rerun_gives_every_session_once_and_the_same_result(tmp_path, small_index):
    personas = tmp_path / "personas.jsonl"
    personas.write_text(
        "".join(
            json.dumps(
                {
                    "emotion": "Sadness",
                    "persona": f"You are student number {i}.",
                    "situation": f"You failed exam number {i} and feel low.",
                }
            )
            + "\n"
            for i in range(10)
        )
    )
    faults = FaultPlan(rate=0.2, kinds=("429", "500", "truncated", "invalid_json", "non_schema"), retry_after="0")
    with FakeOpenAIServer(faults=faults, reply=dialogue_reply) as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
        env |= {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "test"}

        def command(out):
            return [
                str(SCRIPT),
                "generate",
                "--personas",
                str(personas),
                "--stickers",
                str(small_index.library.root),
                "--out",
                str(out),
                "--llm",
                "openai:fake-model",
                "--concurrency",
                "3",
            ]

        whole = _run(command(tmp_path / "whole"), env)
        assert whole.returncode == 0, whole.stderr

        rng, kills, out = random.Random(7), 0, tmp_path / "killed"
        for _ in range(40):
            proc = subprocess.Popen(command(out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(1.0, 4.0))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
            elif proc.returncode == 0:
                break
        final = _run(command(out), env)
        assert final.returncode == 0, final.stderr
    assert kills >= 1

    def records(folder):
        lines = []
        for name in ("conversations.jsonl", "rejected.jsonl"):
            path = folder / name
            lines += path.read_text().splitlines() if path.is_file() else []
        return sorted(lines, key=lambda line: json.loads(line)["meta"]["persona_id"])

    ids = [json.loads(line)["meta"]["persona_id"] for line in records(out)]
    assert ids == [f"p{i:06d}" for i in range(10)]  # every session exactly once
    assert (out / "conversations.jsonl").read_text().strip()  # sessions with stickers were kept, not only rejects
    assert records(out) == records(tmp_path / "whole")
