"""Server figures, run by hand:  .venv/bin/python bench/serve.py [--clients 20] [--requests 10] [--stickers LIB]

For each responder (the text-only baseline and the sticker-tool baseline, both on the embedded
SmolLM2-135M, cache off), the server runs in this process on 127.0.0.1 and N concurrent clients (the
official ``openai`` async SDK, no retries) each send R chat requests one after another; every second
request carries a library sticker (by URL). Prints p50/p95 latency, throughput and the error count.

The embedded model answers one request at a time (one llama.cpp context), so latency under load is
mostly queueing: every client always has a request out, so a request takes about clients x one reply.
Without --stickers a small pack (the first 260 emoji, Noto style) is built and indexed in a temporary
folder first.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import openai

from stickerconv.llm import LLMConfig, LLMFactory
from stickerconv.responders import build_responder
from stickerconv.serve import ServerThread, ServeSettings, create_app
from stickerconv.stickers.index import StickerIndex

MESSAGES = (
    "I failed my exam again",
    "We won the championship!",
    "My cat has been sick all week",
    "I'm so nervous about my job interview tomorrow",
    "Someone scratched my car and drove off",
    "My best friend is moving to another country",
    "I finally finished my first marathon",
    "Nobody remembered my birthday",
    "The neighbours have been playing loud music all night",
    "I got the apartment I wanted!",
)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def small_library(folder: Path) -> StickerIndex:
    from stickerconv.stickers.embed import load_embedder
    from stickerconv.stickers.emoji_pack import build_default_pack
    from stickerconv.stickers.library import StickerLibrary

    build_default_pack(folder, ["noto"], limit=260)
    index, _ = StickerIndex.build(StickerLibrary.load(folder), load_embedder("minilm"))
    index.save()
    return index


async def client_run(url: str, model: str, client_id: int, requests: int, sticker_urls: list[str]) -> list:
    """One client's requests in sequence: (latency s, ok, got a sticker) each."""
    api = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="bench", max_retries=0, timeout=1800)
    out = []
    for i in range(requests):
        text = MESSAGES[(client_id + i) % len(MESSAGES)]
        content: list[dict] = [{"type": "text", "text": text}]
        if i % 2:
            content.append(
                {"type": "image_url", "image_url": {"url": sticker_urls[(client_id * 7 + i) % len(sticker_urls)]}}
            )
        start = time.perf_counter()
        try:
            reply = await api.chat.completions.create(model=model, messages=[{"role": "user", "content": content}])
            out.append((time.perf_counter() - start, True, bool(reply.choices[0].message.tool_calls)))
        except openai.OpenAIError as exc:
            print(f"  client {client_id} request {i}: {type(exc).__name__}: {exc}")
            out.append((time.perf_counter() - start, False, False))
    await api.close()
    return out


async def load(url: str, model: str, clients: int, requests: int, sticker_urls: list[str]) -> tuple[list, float]:
    start = time.perf_counter()
    runs = await asyncio.gather(*(client_run(url, model, c, requests, sticker_urls) for c in range(clients)))
    return [r for run in runs for r in run], time.perf_counter() - start


def bench(name: str, factory: LLMFactory, index: StickerIndex, clients: int, requests: int) -> dict:
    app = create_app(build_responder(name, factory, index), index, ServeSettings(max_queue=max(64, clients)))
    model = f"stickerconv-{name}"
    with ServerThread(app) as server:
        sticker_urls = [f"{server.url}/stickers/{s.id}" for s in index.stickers[:50]]
        start = time.perf_counter()
        asyncio.run(load(server.url, model, 1, 1, sticker_urls))  # warm-up: loads the model
        warm = time.perf_counter() - start
        results, wall = asyncio.run(load(server.url, model, clients, requests, sticker_urls))
    latencies = [lat for lat, ok, _ in results if ok]
    row = {
        "responder": name,
        "clients": clients,
        "requests": len(results),
        "errors": sum(1 for _, ok, _ in results if not ok),
        "p50_s": round(pct(latencies, 0.5), 2) if latencies else None,
        "p95_s": round(pct(latencies, 0.95), 2) if latencies else None,
        "max_s": round(max(latencies), 2) if latencies else None,
        "throughput_rps": round(len(latencies) / wall, 3),
        "wall_s": round(wall, 1),
        "with_sticker": sum(1 for _, ok, s in results if ok and s),
        "warmup_s": round(warm, 1),
    }
    print(
        f"{name:5s}: {row['requests']} requests from {clients} clients in {row['wall_s']} s; "
        f"p50 {row['p50_s']} s, p95 {row['p95_s']} s, max {row['max_s']} s; {row['throughput_rps']} req/s; "
        f"errors {row['errors']}; replies with a sticker {row['with_sticker']}; warm-up {row['warmup_s']} s",
        flush=True,
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--requests", type=int, default=10, help="per client")
    parser.add_argument("--responders", default="text,tool")
    parser.add_argument("--stickers", type=Path, help="indexed library (default: a small pack built here)")
    parser.add_argument("--llm", default="local")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()
    factory = LLMFactory(LLMConfig(llm=args.llm, cache="off"))  # one backend: the model loads once
    with tempfile.TemporaryDirectory() as tmp:
        index = StickerIndex.load(args.stickers) if args.stickers else small_library(Path(tmp) / "pack")
        print(f"library: {len(index)} stickers; llm {args.llm}; {args.clients} clients x {args.requests} requests")
        rows = [bench(name, factory, index, args.clients, args.requests) for name in args.responders.split(",")]
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
