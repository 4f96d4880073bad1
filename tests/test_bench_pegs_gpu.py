"""bench/pegs_gpu.py --shrink: the paper-shapes bench's code path end to end on a CPU (issue 18).

The figures themselves are machine-dependent; what must hold is that every stage and every responder is measured
and every figure is a positive finite number, so a GPU run of the same script has nothing left to break."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _positive(row: dict, keys: tuple[str, ...]) -> None:
    for key in keys:
        value = row[key]
        assert isinstance(value, int | float) and math.isfinite(value) and value > 0, (row.get("stage"), key, value)


def test_shrunk_bench_measures_every_stage_and_responder(tmp_path):
    out = tmp_path / "figures" / "pegs_gpu.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "pegs_gpu.py"), "--shrink", "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(out.read_text())
    assert report["config"] == "paper-shapes (shrunk)" and report["device"].startswith("cpu")
    assert [r["stage"] for r in report["stages"]] == ["perception", "retrieval", "generation", "joint"]
    for row in report["stages"]:
        figures = ("step_s", "tokens_per_s", "images_per_s", "peak_memory_mib", "kernel_share", "checkpoint_mib")
        _positive(row, figures + ("tokens_per_example", "images_per_example"))
        assert row["kernel_share"] <= 1.05 and row["kernel_share_kind"] == "CPU op self time / wall"
        assert row["step_s_range"][0] <= row["step_s"] <= row["step_s_range"][1]
    joint = report["stages"][-1]
    assert (joint["batch_size"], joint["grad_accum"]) == (3, 2)
    assert 0.6 * report["max_length"] < joint["tokens_per_example"] < report["max_length"]  # dialogues fill it
    assert [r["responder"] for r in report["responders"]] == ["pegs-ret", "pegs-gen", "pegs-rag"]
    for row in report["responders"]:
        _positive(row, ("reply_s", "decoded_tokens", "tokens_per_s", "peak_memory_mib"))
        assert row["stickers_sent"] == row["replies"] == 2
        if row["responder"] == "pegs-ret":
            assert row["image_s"] is None and row["images_per_s"] is None
        else:
            _positive(row, ("image_s", "images_per_s"))
            assert row["image_s"] < row["reply_s"] and (row["image_size"], row["sd_steps"]) == (64, 2)
    assert "| stage |" in proc.stdout and "| responder |" in proc.stdout  # the Markdown tables
