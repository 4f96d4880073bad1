"""`stickerconv generate` run as a user runs it: the installed script in a subprocess, pointed at an
OpenAI-compatible server, and the kill -9 loop the crash-safety tests share (the fake server's in
test_agent4sc_kill.py, llama.cpp's behind a fault-injecting proxy in test_llama_server.py)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

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
