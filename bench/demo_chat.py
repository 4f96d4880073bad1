"""The demo's served chat on fresh messages, run by hand after `stickerconv demo`:

    .venv/bin/python bench/demo_chat.py [--run runs/demo] [--responder pegs-ret]

It serves the run's checkpoint as `stickerconv demo` does (the OpenAI-compatible app, in process) and sends each
fixed single-message chat as a new one: the 20 of ``pegs_replies.py`` (``bench``) and the 30 that
``tests/test_pegs_send.py`` pins the issue on (``test``), both emotional, varied and from no dataset. The test's
name their feeling ("..., I'm so happy!"), so VADER reads their sentiment as a person would; several of the
bench's leave it implicit ("My best friend is moving abroad next month." reads positive). It prints a row per
set, with what issue 17 asks of the chat:

* **sticker share**: replies with a sticker, against the run's training assistant sticker share
  (``dataset/train.json``: the turns whose gold reply has one);
* **polarity agreement**: of the sent stickers, those whose label agrees in polarity with the message's VADER
  sentiment (compound ±0.05; Happiness positive; Anger, Disgust, Fear, Sadness negative; Neutral and Surprise
  neutral, as evaluate/quality/metrics.py maps them);
* **readable**: replies that end mid-sentence or repeat a sentence or clause (``stickerconv.text``), which should be
  none; and seconds per reply (median).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from pegs_replies import PROMPTS

from stickerconv.data.samples import load_samples
from stickerconv.evaluate.quality.metrics import label_polarity, message_polarity
from stickerconv.text import ends_mid_sentence, has_repeat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=Path("runs/demo"), help="a finished `stickerconv demo` folder")
    parser.add_argument("--responder", default="pegs-ret")
    parser.add_argument("--messages", choices=("bench", "test", "both"), default="both", help="which chats to send")
    parser.add_argument("--show", action="store_true", help="print every message and reply")
    args = parser.parse_args()

    from fastapi.testclient import TestClient

    from stickerconv.responders import build_responder
    from stickerconv.serve import ServeSettings, create_app
    from stickerconv.stickers.index import StickerIndex

    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    train = load_samples(args.run / "dataset" / "train.json", "v1.5", lambda s: s.image)
    gold = sum(bool(s.response_image) for s in train) / len(train)
    index = StickerIndex.load(args.run / "pack")
    checkpoint = args.run / "pegs" / "final" if args.responder.startswith("pegs") else None
    responder = build_responder(args.responder, index=index, checkpoint=checkpoint)
    print(f"{args.responder}: {json.dumps(responder.describe())}")
    sets = {"bench": PROMPTS, "test": _test_chats()}
    rows = []
    with TestClient(create_app(responder, index, ServeSettings())) as client:
        for name, messages in sets.items():
            if args.messages in (name, "both"):
                rows.append(f"| {name} " + _chat(client, args.responder, messages, args.show, gold, len(train)))
    print(
        "| chats | n | with a sticker | training share | polarity agreement | mid-sentence or repeat | s/reply |\n"
        "|---|---:|---:|---:|---:|---:|---:|"
    )
    print("\n".join(rows))


def _test_chats() -> list[str]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from test_pegs_send import FRESH_CHATS

    return FRESH_CHATS


def _chat(client: Any, responder: str, messages: list[str], show: bool, gold: float, turns: int) -> str:
    """Send each message as a new chat; the table row's cells after its name."""
    sent = agreeing = unreadable = 0
    seconds = []
    for message in messages:
        body = {"model": f"stickerconv-{responder}", "messages": [{"role": "user", "content": message}]}
        start = time.perf_counter()
        answer = client.post("/v1/chat/completions", json=body)
        seconds.append(time.perf_counter() - start)
        answer.raise_for_status()
        reply = answer.json()["choices"][0]["message"]
        text, calls = reply.get("content") or "", reply.get("tool_calls") or []
        unreadable += ends_mid_sentence(text) or has_repeat(text)
        label = json.loads(calls[0]["function"]["arguments"])["label"] if calls else None
        if label:
            sent += 1
            agreeing += label_polarity(label) == message_polarity(message)
        if show:
            print(f"{message}\n  -> {text} [{label or 'no sticker'}, VADER {message_polarity(message)}]")
    n = len(messages)
    return (
        f"| {n} | {sent} ({sent / n:.0%}) | {gold:.0%} of {turns} turns | "
        f"{agreeing} of {sent} ({agreeing / max(sent, 1):.0%}) | {unreadable} | {statistics.median(seconds):.2f} |"
    )


if __name__ == "__main__":
    main()
