"""PEGS reply readability by decoding setting, run by hand:

    .venv/bin/python bench/pegs_replies.py [--checkpoint RUN/final] [--settings 1.0:6,1.2:3] [--prompts 16]

For each decoding setting (repetition penalty : no_repeat_ngram_size) it answers the same fixed single-message
chats greedily, as PEGS-Ret does (``PegsModel.draft``, 8 chats a batch; ``--max-new-tokens`` like the server's 64),
and prints:

* **mid-sentence**: the share of replies whose decoded text (stop markers cut) ends in an unfinished sentence,
  before and after ``text.readable`` (after: only text with no sentence end and no clause break to cut at);
* **repeat**: the share of replies with a sentence or clause repeating an earlier one of the same reply
  (``text.has_repeat``), before and after ``readable``;
* **words**: mean words per reply after ``readable`` (what the reader gets), and **empty**: replies left without
  text; **stopped**: replies the model ended itself (EOS or [IMG1]) within the budget; seconds per reply (batched,
  so a third to a quarter of what one chat alone takes).

Without ``--checkpoint`` the model is an untrained ``small`` PEGS: SmolLM2-135M as the GGUF gives it, whose text
side is what a briefly fine-tuned checkpoint (the demo's: LoRA after 20 joint steps) starts from. Only the text
matters here, so the decision and the sticker are not scored. Run with OMP_NUM_THREADS=1 on a shared machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from stickerconv.data.samples import render_samples
from stickerconv.pegs.config import DecodingConfig, PegsConfig
from stickerconv.pegs.model import PegsModel
from stickerconv.pegs.sequence import Example, sample_example
from stickerconv.schema import Conversation, Turn
from stickerconv.text import ends_mid_sentence, has_repeat

# Fixed single-message chats, emotional and varied; none is from a dataset.
PROMPTS = [
    "My cat died this morning and the house feels so empty.",
    "I just won a scholarship for next year!",
    "I failed my driving test again today.",
    "We finally won the championship!",
    "I can't stop worrying about tomorrow's surgery.",
    "The neighbours threw a party until 4am again and I'm exhausted.",
    "Just made pancakes for the first time and they were perfect.",
    "My best friend is moving abroad next month.",
    "I got engaged last night, I'm so excited!",
    "My laptop crashed and I lost my whole thesis.",
    "Nobody remembered my birthday this year.",
    "I was promoted to team lead today!",
    "I'm scared of walking home alone in the dark.",
    "My son took his first steps today.",
    "I feel worthless after being rejected from every job.",
    "We adopted a puppy and she is the sweetest thing.",
    "My grandmother is in hospital and I can't visit her.",
    "I finally finished my first marathon!",
    "My roommate keeps eating my food and lying about it.",
    "I've been feeling lonely since I moved to this city.",
]
DEFAULT_SETTINGS = "1.0:0,1.0:6,1.0:3,1.15:0,1.15:4,1.3:3"


def prompt(model: PegsModel, message: str) -> Example:
    """A single-message chat rendered as PEGS-Ret renders it (a §4.4 sample without the response)."""
    cfg = model.config
    conv = Conversation(
        conversation=[Turn(turn=1, user_message=message, system_message="")], user_persona="", user_status=""
    )
    sample = render_samples(conv, cfg.style, lambda s: s.image)[-1]
    return sample_example(sample, Path("."), cfg.style, cfg.system_prompt, with_response=False)


def setting(text: str, max_new_tokens: int) -> DecodingConfig:
    penalty, ngram = text.split(":")
    return DecodingConfig(
        max_new_tokens=max_new_tokens, repetition_penalty=float(penalty), no_repeat_ngram_size=int(ngram)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, help="a PEGS checkpoint (default: an untrained small model)")
    parser.add_argument("--settings", default=DEFAULT_SETTINGS, help="penalty:ngram pairs, comma-separated")
    parser.add_argument("--prompts", type=int, default=len(PROMPTS), help=f"how many of the {len(PROMPTS)} chats")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--show", type=int, default=2, help="replies printed per setting (before -> after)")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores, {torch.get_num_threads()} torch threads")
    start = time.perf_counter()
    model = (
        PegsModel.from_pretrained(args.checkpoint) if args.checkpoint else PegsModel(PegsConfig.preset("small")).eval()
    )
    print(f"model {args.checkpoint or 'small (untrained)'} loaded in {time.perf_counter() - start:.1f} s")
    prompts = [prompt(model, message) for message in PROMPTS[: args.prompts]]
    header = "penalty:ngram | mid-sentence before -> after | repeat before -> after | words | empty | stopped | s/reply"
    rows = [header, "-" * len(header)]
    for spec in args.settings.split(","):
        model.config = model.config.model_copy(update={"decoding": setting(spec, args.max_new_tokens)})
        begin = time.perf_counter()
        drafts = [d for i in range(0, len(prompts), 8) for d in model.draft(prompts[i : i + 8])]
        seconds = (time.perf_counter() - begin) / len(prompts)
        for d in drafts[: args.show]:
            print(f"[{spec}] {d.raw_text!r}\n    -> {d.text!r}")
        n = len(drafts)
        mid = [
            sum(ends_mid_sentence(d.raw_text) for d in drafts) / n,
            sum(ends_mid_sentence(d.text) for d in drafts) / n,
        ]
        rep = [sum(has_repeat(d.raw_text) for d in drafts) / n, sum(has_repeat(d.text) for d in drafts) / n]
        words = statistics.mean(len(d.text.split()) for d in drafts)
        empty = sum(not d.text for d in drafts)
        stopped = sum(d.stopped for d in drafts) / n
        rows.append(
            f"{spec:>13} | {mid[0]:>12.0%} -> {mid[1]:<5.0%} | {rep[0]:>6.0%} -> {rep[1]:<5.0%} "
            f"| {words:5.1f} | {empty:5d} | {stopped:7.0%} | {seconds:7.2f}"
        )
    print("\n".join(rows))


if __name__ == "__main__":
    main()
