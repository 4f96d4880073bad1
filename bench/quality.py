"""Dataset-quality benchmark, run by hand:  .venv/bin/python bench/quality.py [--sessions 100000]

Writes (or reuses) the synthetic published-format file of bench/data.py and times
``stickerconv data quality`` on it without a judge: the streaming pass (diversity, repetition,
sticker use, emotion agreement, sentiment by turn), self-BLEU on its sample, and the report. Prints
seconds in total and per 10k sessions, with the load average, since the machine's load shows in it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/data.py writes the synthetic file

from data import write_synthetic  # noqa: E402

from stickerconv.evaluate.quality.metrics import dataset_quality  # noqa: E402
from stickerconv.evaluate.quality.report import write_quality  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-quality"))
    parser.add_argument("--reuse", action="store_true", help="keep a synthetic file that already exists")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"synthetic-{args.sessions}.jsonl"
    if not (args.reuse and path.is_file()):
        start = time.perf_counter()
        write_synthetic(path, args.sessions)
        print(f"wrote {path} ({path.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - start:.1f} s")
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    start, cpu = time.perf_counter(), time.process_time()
    result = dataset_quality(path)
    measure, measure_cpu = time.perf_counter() - start, time.process_time() - cpu
    start = time.perf_counter()
    report = write_quality([result], ["synthetic"], args.out / "report")
    write = time.perf_counter() - start
    per = 10_000 / result["sessions"]
    print(
        f"{result['sessions']:,} sessions: quality pass {measure:.1f} s wall ({measure_cpu:.1f} s CPU), "
        f"{measure * per:.2f} s wall per 10k sessions; report + plot {write:.1f} s -> {report}"
    )


if __name__ == "__main__":
    main()
