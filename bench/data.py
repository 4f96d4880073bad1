"""Dataset-tools benchmark, run by hand (see bench/README.md).

1. writes a synthetic 100k-session file in the published format (real persona texts, sentences from the
   real situations, the real knowledge-sticker texts over 5,800 sticker paths);
2. times load (dicts; Conversation objects), validate and stats on it, medians over repeats, per 10k sessions;
3. with --run, describes a run folder of our simulator (stats, and validation against --stickers).

    .venv/bin/python bench/data.py [--sessions 100000] [--repeats 3] [--out runs/bench-data] [--reuse]
                                   [--run RUN_DIR [--stickers LIB_DIR]] [--json-out FILE]
"""

import argparse
import json
import os
import random
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from stickerconv.data.io import iter_conversations, iter_raw
from stickerconv.data.plots import write_plots
from stickerconv.data.report import write_report
from stickerconv.data.resolve import StickerResolver
from stickerconv.data.stats import compute_stats, profile_emotions
from stickerconv.data.validate import validate
from stickerconv.stickers.library import StickerLibrary

import reference  # bench/reference.py: the full reference files or the excerpts

LABELS = ("Anger", "Disgust", "Fear", "Happiness", "Neutral", "Sadness", "Surprise")
USER_WEIGHTS = (14, 4, 12, 14, 14, 30, 12)  # users mostly send negative stickers (paper figure) ...
SYSTEM_WEIGHTS = (2, 1, 2, 45, 35, 5, 10)  # ... the system neutral or positive ones
UNIQUE_STICKERS = 5_800
R: dict = {}  # every figure, for --json-out


def _load_shared() -> tuple[list[dict], list[str], list[dict]]:
    profiles = [json.loads(line) for line in reference.profiles().open(encoding="utf-8")]
    sentences = [s for p in profiles for s in re.split(r"(?<=[.!?])\s+", p["situation"]) if len(s.split()) >= 4]
    knowledge = [json.loads(line) for line in reference.knowledge_stickers().open(encoding="utf-8")]
    return profiles, sentences, knowledge


def write_synthetic(path: Path, sessions: int, seed: int = 0) -> None:
    """Published-format sessions: 1-6 turns, >= 1 sticker each, realistic text and sticker dict sizes."""
    profiles, sentences, knowledge = _load_shared()
    rng = random.Random(seed)
    pool = []
    for n in range(UNIQUE_STICKERS):
        text = knowledge[n % len(knowledge)]
        image = f"/datas/llm_datasets/SER_Dataset/Images/theme-{n // 30}/sticker_{n % 30 + 1}.jpg"
        pool.append((n + 1, image, text))

    def sticker(weights: tuple[int, ...]) -> dict:
        seq_num, image, text = rng.choice(pool)
        return {
            "seq_num": seq_num,
            "image": image,
            "description": text["description"],
            "emotion": text["emotion"],
            "recommendation": text["recommendation"],
            "origin_anno": rng.choices(LABELS, weights)[0],
        }

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for _ in range(sessions):
            profile = rng.choice(profiles)
            turns = []
            for t in range(1, rng.choices(range(1, 7), (3, 8, 15, 24, 25, 25))[0] + 1):
                turns.append(
                    {
                        "turn": t,
                        "user_message": " ".join(rng.sample(sentences, rng.randint(1, 2))),
                        "system_message": " ".join(rng.sample(sentences, rng.randint(1, 3))),
                        "user_sticker": sticker(USER_WEIGHTS) if rng.random() < 0.3 else None,
                        "system_sticker": sticker(SYSTEM_WEIGHTS) if rng.random() < 0.35 else None,
                    }
                )
            if not any(t["user_sticker"] or t["system_sticker"] for t in turns):
                turns[-1]["system_sticker"] = sticker(SYSTEM_WEIGHTS)
            record = {"conversation": turns, "user_persona": profile["persona"], "user_status": profile["situation"]}
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")


def _median_time(run: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _count(iterator) -> int:
    return sum(1 for _ in iterator)


def bench_synthetic(path: Path, sessions: int, repeats: int, out: Path) -> None:
    print(f"\n## Synthetic file: {path} ({path.stat().st_size / 2**20:.0f} MiB), load average {os.getloadavg()[0]:.2f}")
    per = sessions / 10_000
    steps: dict[str, Callable[[], object]] = {
        "load (dicts)": lambda: _count(iter_raw(path)),
        "load (Conversation objects, strict)": lambda: _count(iter_conversations(path)),
        "validate (all checks, duplicates)": lambda: validate(path),
        "stats (streaming dicts)": lambda: compute_stats(path),
    }
    print(f"{'step':<38} {'median s':>9} {'s / 10k sessions':>17}   ({repeats} repeats)")
    for name, run in steps.items():
        median = _median_time(run, repeats)
        R[name] = {"median_s": round(median, 3), "per_10k_s": round(median / per, 3)}
        print(f"{name:<38} {median:>9.2f} {median / per:>17.3f}")
    report = validate(path)
    profiles = [json.loads(line) for line in reference.profiles().open(encoding="utf-8")]
    stats = compute_stats(path, profile_emotions(profiles))
    assert report.ok and report.records == sessions and stats["sessions"] == sessions, "synthetic data must be valid"
    start = time.perf_counter()
    write_report(stats, write_plots(stats, out / "stats-synthetic"), out / "stats-synthetic")
    R["plots_and_report_s"] = round(time.perf_counter() - start, 3)
    print(f"plots + report.md: {R['plots_and_report_s']:.2f} s -> {out / 'stats-synthetic' / 'report.md'}")


def bench_run(run: Path, stickers: Path | None, out: Path) -> None:
    print(f"\n## Simulator run: {run}")
    resolver = StickerResolver(StickerLibrary.load(stickers)) if stickers else None
    report = validate(run, resolver=resolver)
    stats = compute_stats(run)
    write_report(stats, write_plots(stats, out / "stats-run"), out / "stats-run")
    by_role = stats["stickers"]["by_role"]
    R["run"] = {
        "records": report.records,
        "problems": len(report.problems),
        "missing_images": len(report.missing_images),
        "sessions": stats["sessions"],
        "turns_mean": stats["turns"]["mean"],
        "words_user_mean": stats["words_per_utterance"]["user"]["mean"],
        "words_system_mean": stats["words_per_utterance"]["system"]["mean"],
        "stickers": stats["stickers"]["total"],
        "unique_stickers": stats["stickers"]["unique"],
        "user_sticker_share_of_turns": by_role["user"]["share_of_turns"],
        "system_sticker_share_of_turns": by_role["system"]["share_of_turns"],
        "sticker_emotions": stats["sticker_emotions"],
        "persona_emotions": stats["persona_emotions"],
    }
    for key, value in R["run"].items():
        print(f"{key:<32} {value}")
    for problem in report.problems[:10]:
        print(f"  {problem}")
    print(f"report: {out / 'stats-run' / 'report.md'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-data"))
    parser.add_argument("--reuse", action="store_true", help="keep an existing synthetic file of the same size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run", type=Path, help="a generation run folder (stickerconv generate --out)")
    parser.add_argument("--stickers", type=Path, help="the run's sticker library, to resolve its stickers")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()

    path = args.out / f"synthetic-{args.sessions}.jsonl"
    if not (args.reuse and path.is_file()):
        start = time.perf_counter()
        write_synthetic(path, args.sessions, args.seed)
        print(f"wrote {args.sessions:,} synthetic sessions in {time.perf_counter() - start:.1f} s")
    bench_synthetic(path, args.sessions, args.repeats, args.out)
    if args.run:
        bench_run(args.run, args.stickers, args.out)
    if args.json_out:
        args.json_out.write_text(json.dumps(R, indent=2) + "\n")


if __name__ == "__main__":
    main()
