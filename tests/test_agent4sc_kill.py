"""Crash safety of `stickerconv generate`: kill -9 at random points against a faulty server, rerun
until done; every session ends up exactly once, identical to an uninterrupted run.

The kill loop is shared with the llama.cpp variant in test_llama_server.py, which runs it against a
real server behind a fault-injecting proxy."""

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fake_openai_server import FakeOpenAIServer, FaultPlan, dialogue_reply

SCRIPT = Path(sys.executable).parent / "stickerconv"


def run_command(args: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)


def server_env(base_url: str) -> dict[str, str]:
    """This process's environment with the OpenAI variables pointing at ``base_url`` only."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    return env | {"OPENAI_BASE_URL": base_url, "OPENAI_API_KEY": "test"}


def generate_command(personas: Path, stickers: Path, out: Path, llm: str, *extra: str) -> list[str]:
    args = ["generate", "--personas", str(personas), "--stickers", str(stickers), "--out", str(out), "--llm", llm]
    return [str(SCRIPT), *args, *extra]


def records(folder: Path) -> list[str]:
    """Every session record of a run folder (kept and rejected), in persona order."""
    lines = []
    for name in ("conversations.jsonl", "rejected.jsonl"):
        path = folder / name
        lines += path.read_text().splitlines() if path.is_file() else []
    return sorted(lines, key=lambda line: json.loads(line)["meta"]["persona_id"])


def kill_until_done(
    command: list[str],
    env: dict[str, str],
    rng: random.Random,
    delay: tuple[float, float],
    *,
    max_runs: int = 40,
    max_kills: int | None = None,
    final_timeout: float = 300,
) -> int:
    """Start ``command`` and kill -9 it after a random delay, over and over, until a run ends by itself with
    success, ``max_kills`` kills are done or ``max_runs`` runs were started; then run it once more to the end
    (it must succeed). Returns the number of kills."""
    kills = 0
    for _ in range(max_runs):
        if max_kills is not None and kills >= max_kills:
            break
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            if proc.wait(timeout=rng.uniform(*delay)) == 0:
                break
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
    final = run_command(command, env, final_timeout)
    assert final.returncode == 0, final.stderr
    return kills


def persona_file(path: Path, n: int) -> Path:
    path.write_text(
        "".join(
            json.dumps(
                {
                    "emotion": "Sadness",
                    "persona": f"You are student number {i}.",
                    "situation": f"You failed exam number {i} and feel low.",
                }
            )
            + "\n"
            for i in range(n)
        )
    )
    return path


@pytest.mark.slow
def test_kill_9_and_rerun_gives_every_session_once_and_the_same_result(tmp_path, small_index):
    personas = persona_file(tmp_path / "personas.jsonl", 10)
    faults = FaultPlan(rate=0.2, kinds=("429", "500", "truncated", "invalid_json", "non_schema"), retry_after="0")
    with FakeOpenAIServer(faults=faults, reply=dialogue_reply) as server:
        env = server_env(server.base_url)

        def command(out):
            stickers = small_index.library.root
            return generate_command(personas, stickers, out, "openai:fake-model", "--concurrency", "3")

        whole = run_command(command(tmp_path / "whole"), env)
        assert whole.returncode == 0, whole.stderr
        out = tmp_path / "killed"
        kills = kill_until_done(command(out), env, random.Random(7), (1.0, 4.0))
    assert kills >= 1
    ids = [json.loads(line)["meta"]["persona_id"] for line in records(out)]
    assert ids == [f"p{i:06d}" for i in range(10)]  # every session exactly once
    assert (out / "conversations.jsonl").read_text().strip()  # sessions with stickers were kept, not only rejects
    assert records(out) == records(tmp_path / "whole")
