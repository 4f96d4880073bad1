"""LLM layer figures, run by hand:  .venv/bin/python bench/llm.py [--runs 10] [--compare-transformers]

1. Embedded backend (SmolLM2-135M-Instruct Q4_1 on llama.cpp): load time, prompt and generation
   tokens/s, and the p50 latency of the structured calls the agents make.
2. Optionally the same model on transformers (dequantised GGUF), the runtime we did not choose.
3. HTTP backend: per-call overhead of the ChatModel stack (retries, limiter, ledger, validation;
   cache off) over calling the same server directly with the same SDK, as a ratio of medians.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the fake OpenAI server lives there

from stickerconv.agent4sc.manager import Review  # noqa: E402
from stickerconv.agent4sc.plan import IntentAnswer, QueryAnswer, SelectAnswer  # noqa: E402
from stickerconv.assets import embedded_gguf  # noqa: E402
from stickerconv.llm import ChatModel, Settings, system, user  # noqa: E402
from stickerconv.llm.backends.local import LocalBackend  # noqa: E402
from stickerconv.llm.policy import Limits, RateLimiter  # noqa: E402

PROMPT = "Message: I failed my exam again and I feel terrible. Answer in JSON for the schema {name}."
LONG_PROMPT = "Summarise the following conversation in two sentences.\n" + "\n".join(
    f"B: I keep thinking about the exam, question {i} was impossible. A: That sounds hard, tell me more."
    for i in range(12)
)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def bench_local(runs: int) -> None:
    print("== embedded backend: SmolLM2-135M-Instruct Q4_1 on llama.cpp ==")
    backend = LocalBackend()
    start = time.perf_counter()
    llama = backend.load()
    size = embedded_gguf().stat().st_size / 1e6
    print(f"load: {time.perf_counter() - start:.2f} s ({size:.0f} MB GGUF, {backend.threads} llama.cpp thread(s))")
    prompt_rates, gen_rates = [], []
    for i in range(runs):
        llama.reset()
        start = time.perf_counter()
        llama.create_chat_completion([{"role": "user", "content": LONG_PROMPT}], max_tokens=1, temperature=0)
        prompt_time = time.perf_counter() - start
        n_prompt = len(llama.tokenize(LONG_PROMPT.encode()))
        prompt_rates.append(n_prompt / prompt_time)
        llama.reset()
        start = time.perf_counter()
        out = llama.create_chat_completion(
            [{"role": "user", "content": "Tell a short story about a cat."}],
            max_tokens=128,
            temperature=0.7,
            seed=i,
            repeat_penalty=1.15,
        )
        elapsed = time.perf_counter() - start
        gen_rates.append(out["usage"]["completion_tokens"] / elapsed)
    print(f"prompt processing: median {statistics.median(prompt_rates):.0f} tokens/s ({n_prompt}-token prompt)")
    print(f"generation (incl. a short prompt): median {statistics.median(gen_rates):.0f} tokens/s")
    model = ChatModel(backend, cache="off")
    for schema in (IntentAnswer, QueryAnswer, SelectAnswer, Review):  # the agents' own answer schemas
        latencies = []
        for i in range(runs):
            messages = [
                system("You analyse chat messages and answer in JSON."),
                user(PROMPT.format(name=schema.__name__)),
            ]
            result = model.complete_sync(messages, schema, settings=Settings(max_tokens=96, seed=i))
            latencies.append(result.latency_s)
        print(
            f"structured {schema.__name__:13s}: p50 {statistics.median(latencies) * 1000:.0f} ms, "
            f"p95 {pct(latencies, 0.95) * 1000:.0f} ms over {runs} calls"
        )


def bench_transformers(runs: int) -> None:
    print("== the alternative runtime: transformers, same GGUF dequantised to fp32 ==")
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        print(f"skipped: {exc}")
        return
    path = embedded_gguf()
    start = time.perf_counter()
    try:
        tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        lm = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    except (ImportError, ValueError) as exc:
        print(f"skipped: {exc}")
        return
    print(f"load (dequantise): {time.perf_counter() - start:.1f} s")
    torch.set_num_threads(2)
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "Tell a short story about a cat."}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )["input_ids"]
    rates = []
    for i in range(max(2, runs // 3)):
        torch.manual_seed(i)
        start = time.perf_counter()
        out = lm.generate(ids, max_new_tokens=64, do_sample=True, temperature=0.7, repetition_penalty=1.15)
        rates.append((out.shape[1] - ids.shape[1]) / (time.perf_counter() - start))
    print(f"generation: median {statistics.median(rates):.1f} tokens/s (torch threads: {torch.get_num_threads()})")


async def _direct_calls(base_url: str, n: int) -> list[float]:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=base_url, api_key="bench", max_retries=0)
    out = []
    for i in range(n):
        start = time.perf_counter()
        await client.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": f"hi {i}"}])
        out.append(time.perf_counter() - start)
    await client.close()
    return out


async def _stack_calls(model: ChatModel, n: int) -> list[float]:
    out = []
    for i in range(n):
        start = time.perf_counter()
        await model.complete([user(f"hi {i}")])
        out.append(time.perf_counter() - start)
    return out


def bench_http(n: int) -> None:
    from stickerconv.llm.backends.openai_compat import OpenAICompatBackend
    from stickerconv.llm.store import LLMStore

    from helpers.fake_openai_server import FakeOpenAIServer

    print("== HTTP backend overhead (fake OpenAI-compatible server on localhost) ==")
    with FakeOpenAIServer() as srv:
        backend = OpenAICompatBackend("fake-model", base_url=srv.base_url, api_key="bench")
        model = ChatModel(backend, store=LLMStore(":memory:"), cache="off", limiter=RateLimiter(Limits()))
        asyncio.run(_direct_calls(srv.base_url, 20))  # warm up
        direct = asyncio.run(_direct_calls(srv.base_url, n))
        stack = asyncio.run(_stack_calls(model, n))
    d, s = statistics.median(direct), statistics.median(stack)
    print(
        f"direct SDK call: p50 {d * 1000:.2f} ms;  ChatModel call: p50 {s * 1000:.2f} ms;  "
        f"ratio {s / d:.2f}x (+{(s - d) * 1000:.2f} ms per call)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--http-calls", type=int, default=300)
    parser.add_argument("--compare-transformers", action="store_true")
    args = parser.parse_args()
    bench_local(args.runs)
    if args.compare_transformers:
        bench_transformers(args.runs)
    bench_http(args.http_calls)


if __name__ == "__main__":
    main()
