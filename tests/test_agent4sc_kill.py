"""Crash safety of `stickerconv generate`: kill -9 at random points against a faulty server, rerun
until done; every session ends up exactly once, identical to an uninterrupted run.

The kill loop (helpers/generate.py) is shared with the llama.cpp variant in test_llama_server.py, which runs
it against a real server behind a fault-injecting proxy."""

import json
import random

import pytest

from helpers.fake_openai_server import FakeOpenAIServer, FaultPlan, dialogue_reply
from helpers.generate import generate_command, kill_until_done, persona_file, records, run_command, server_env


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
