"""PEGS figures, run by hand:  .venv/bin/python bench/pegs.py [--preset small] [--steps 6] [--device cpu]

1. training: optimiser step time of the retrieval-alignment stage (the [IMG] rows and the retrieval
   head learn; the LLM runs forward and backward) on sticker (image, caption) pairs of a library, and
   the process's peak memory (RSS on CPU; allocated CUDA memory on a GPU);
2. inference: response latency of ``pegs-ret`` (greedy generation, forced [IMG] block, one forward pass
   for the [IMG] states, top-1 sticker) over short dialogue contexts, p50 and p95, and the generation
   speed in tokens/s.

The step time excludes model loading: a first run of one step warms up and checkpoints, then a resumed
run of ``--steps`` more is timed (its figure includes one checkpoint save at the end).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch

from stickerconv.pegs.config import PegsConfig
from stickerconv.pegs.model import PegsModel
from stickerconv.pegs.train import StageConfig, sticker_examples, train_stage
from stickerconv.responders.pegs import PegsResponder
from stickerconv.schema import DialogueContext
from stickerconv.stickers.library import StickerLibrary

MESSAGES = [
    "I failed my driving test again today.",
    "We finally won the championship!",
    "My cat has been missing since Sunday.",
    "Guess who got the job offer?",
    "I can't stop worrying about tomorrow's surgery.",
    "The neighbours threw a party until 4am again.",
    "Just made pancakes for the first time.",
    "My best friend is moving abroad next month.",
]


def peak_memory_mb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small", help="tiny, small or paper (paper needs its weights)")
    parser.add_argument("--stickers", type=Path, default=Path("runs/default-pack"))
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--replies", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "cpu"
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; device {args.device} ({name})")
    library = StickerLibrary.load(args.stickers)
    start = time.perf_counter()
    model = PegsModel(PegsConfig.preset(args.preset)).to(args.device)
    params = sum(p.numel() for p in model.parameters())
    print(f"{args.preset}: {params / 1e6:.1f}M parameters, built in {time.perf_counter() - start:.1f} s")

    examples = sticker_examples(library, "retrieval")
    with tempfile.TemporaryDirectory() as tmp:
        settings = {"stage": "retrieval", "batch_size": args.batch_size, "warmup_steps": 1, "checkpoint_every": 10**6}
        train_stage(model, examples, StageConfig(max_steps=1, **settings), Path(tmp))  # warm-up + checkpoint
        start = time.perf_counter()
        result = train_stage(model, examples, StageConfig(max_steps=1 + args.steps, **settings), Path(tmp))
        elapsed = time.perf_counter() - start
    print(
        f"train (retrieval stage, batch {args.batch_size}): {elapsed / args.steps:.2f} s per optimiser step over "
        f"{args.steps} steps; losses {result.losses[0]:.3f} -> {result.losses[-1]:.3f}; "
        f"peak memory {peak_memory_mb(args.device):,.0f} MiB"
    )

    responder = PegsResponder(model.eval(), library, "ret")
    latencies, tokens = [], []
    for i in range(args.replies):
        context = DialogueContext(user_message=MESSAGES[i % len(MESSAGES)])
        start = time.perf_counter()
        reply = asyncio.run(responder.respond(context))
        latencies.append(time.perf_counter() - start)
        tokens.append(len(responder.model.tokenizer(reply.text)["input_ids"]) + (1 if reply.sticker else 0))
    latencies.sort()
    rate = sum(tokens) / sum(latencies)
    print(
        f"pegs-ret reply latency over {args.replies} contexts: p50 {statistics.median(latencies):.2f} s, "
        f"p95 {latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))]:.2f} s; about {rate:.1f} "
        f"text tokens/s (untrained for this bench: the text is noise, the timing is the point)"
    )


if __name__ == "__main__":
    main()
