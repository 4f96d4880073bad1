"""Agent4SC figures, run by hand:  .venv/bin/python bench/agent4sc.py [tokens] [embedded] [scaling]

1. tokens: LLM calls and tokens per session of the lean call pattern (the default) against the
   original's call pattern, run on the same personas, sticker pack and a deterministic model whose
   replies are real text (profile sentences, the authors' emotion descriptions). Both patterns use
   the same prompt wording, so the ratio measures the call pattern. Tokens are counted with the
   embedded model's tokenizer (SmolLM2) over the messages' text. Prefix reuse: per session, the prompt
   tokens and the uncached ones, those after each call's longest common prefix (in tokens) with the previous
   call of the same caller (user agent, assistant agent, each agent's sticker tool, memory, manager), as a
   server's prefix cache would spare them (medians over sessions).
2. embedded: sessions per hour with the embedded model (SmolLM2-135M on llama.cpp) on this machine.
3. scaling: sessions per minute at concurrency 1, 8 and 32 against a local OpenAI-compatible server
   that answers every call after a fixed 200 ms, as ratios to concurrency 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the fake OpenAI server lives there

from stickerconv.agent4sc.pattern import CALL_PATTERNS, PromptLog, uncached_prompt_tokens  # noqa: E402
from stickerconv.agent4sc.personas import load_personas  # noqa: E402
from stickerconv.agent4sc.runner import run_generation  # noqa: E402
from stickerconv.llm import LLMConfig, LLMFactory  # noqa: E402
from stickerconv.llm.backends import Backend  # noqa: E402
from stickerconv.llm.policy import Limits  # noqa: E402
from stickerconv.llm.types import Completion, Usage  # noqa: E402
from stickerconv.runfiles import CONVERSATIONS, REJECTED  # noqa: E402
from stickerconv.stickers.index import StickerIndex  # noqa: E402

import reference  # noqa: E402

INTENTS = ["Emotional Expression", "Enhancing Empathy", "Reaction Intensity", "Other", "None"]
INTENT_WEIGHTS = [0.35, 0.3, 0.1, 0.15, 0.1]


class RealisticReplies:
    """Deterministic answers of realistic length: a pure function of the prompt, so a rerun is
    identical and both call patterns meet the same kind of text."""

    def __init__(self) -> None:
        profiles = [json.loads(x) for x in reference.profiles().read_text().splitlines()]
        self.sentences = [s.strip() + "." for p in profiles for s in p["situation"].split(". ") if len(s.split()) > 8]
        descriptions = reference.emotion_descriptions()
        if descriptions is not None:
            self.descriptions = [json.loads(x)["text"] for x in descriptions.read_text().splitlines()[::50]]
        else:  # a clone: the sticker knowledge texts stand in for the sticker queries
            lines = reference.knowledge_stickers().read_text().splitlines()
            self.descriptions = [f"{r['emotion']} {r['description']}" for r in map(json.loads, lines)]

    def __call__(self, prompt: str, title: str | None) -> str:
        rng = random.Random(hashlib.sha256(prompt.encode()).digest())
        message = " ".join(rng.sample(self.sentences, 2)).replace("You ", "I ").replace("your ", "my ")
        intent = rng.choices(INTENTS, INTENT_WEIGHTS)[0]
        query = rng.choice(self.descriptions) if INTENTS.index(intent) < 3 else ""
        if title is None:
            if "core characteristics" in prompt:
                return "B is a thoughtful person who worries about what others expect and wants to do well."
            if "Progressively summarise" in prompt:
                return "B told A about a hard week; A listened and encouraged B to take one step at a time."
            return message
        n_memories = prompt.count("\n") if title == "_Scores" else 0
        answers = {
            "DraftedMessage": {"message": message, "intention": intent, "query": query},
            "IntentAnswer": {"intention": intent},
            "QueryAnswer": {"query": rng.choice(self.descriptions)},
            "SelectAnswer": {"idx": rng.randrange(10)},
            "Review": {"reason": "The sticker's emotion matches the message.", "inconsistent": False},
            "Closure": {"decision": rng.choice(["CONT", "CONT", "FINI"])},
            "_Scores": {"scores": [rng.randint(3, 7) for _ in range(max(1, n_memories))]},
            "_Questions": {"questions": ["What is B worried about?", "How does A support B?"]},
            "_Insights": {"insights": ["B fears disappointing others", "A offers steady encouragement"]},
        }
        return json.dumps(answers[title])


def step_of(prompt: str, title: str | None) -> str:
    if title is not None:
        return {"_Scores": "importance", "_Questions": "reflection", "_Insights": "reflection"}.get(title, title)
    if "core characteristics" in prompt:
        return "self-summary"
    return "summary fold" if "Progressively summarise" in prompt else "utterance"


class CountingBackend(Backend):
    """The realistic replies, with usage counted by the embedded model's tokenizer, tallied per step."""

    name, model = "counting", "realistic-replies"

    def __init__(self, replies: RealisticReplies, tokenize) -> None:
        self.replies, self.tokenize = replies, tokenize
        self.steps: Counter = Counter()
        self.tokens: Counter = Counter()

    async def generate(self, request, timeout):
        prompt = "\n".join(m.text for m in request.messages)
        title = (request.json_schema or {}).get("title")
        text = self.replies(prompt, title)
        usage = Usage(prompt_tokens=len(self.tokenize(prompt)), completion_tokens=len(self.tokenize(text)))
        step = step_of(prompt, title)
        self.steps[step] += 1
        self.tokens[step] += usage.prompt_tokens + usage.completion_tokens
        return Completion(text=text, usage=usage)


def _index(path: Path | None) -> StickerIndex:
    if path is not None:
        return StickerIndex.load(path)
    pack = Path("runs/default-pack")
    if not (pack / "index").exists():
        sys.exit("no sticker index: run `stickerconv demo` first (builds runs/default-pack), or pass --stickers")
    return StickerIndex.load(pack)


def _sessions(out: Path) -> int:
    return sum(len((out / n).read_text().splitlines()) for n in (CONVERSATIONS, REJECTED) if (out / n).is_file())


def bench_tokens(index: StickerIndex, n: int) -> dict:
    from llama_cpp import Llama

    from stickerconv.assets import embedded_gguf

    vocab = Llama(str(embedded_gguf()), vocab_only=True, verbose=False)

    def tokenize(text: str) -> list[int]:
        return vocab.tokenize(text.encode(), add_bos=False)

    personas = load_personas(reference.profiles())[:n]
    replies = RealisticReplies()
    print(f"== calls and tokens per session: {n} personas, {len(index)} stickers ==")
    results = {}
    for name in ("original", "lean"):
        backend = CountingBackend(replies, tokenize)
        log = PromptLog()
        with tempfile.TemporaryDirectory() as tmp:
            factory = log.watch(LLMFactory(LLMConfig(llm="local", cache="off")))
            factory.register_backend("local", backend)
            out = Path(tmp)
            report = asyncio.run(
                run_generation(personas, index, factory, out, concurrency=4, call_pattern=CALL_PATTERNS[name])
            )
            turns = stickers = 0
            for line in (out / CONVERSATIONS).read_text().splitlines() if (out / CONVERSATIONS).is_file() else []:
                conversation = json.loads(line)["conversation"]
                turns += len(conversation)
                stickers += sum(
                    (t["user_sticker"] is not None) + (t["system_sticker"] is not None) for t in conversation
                )
        sessions = report.kept + report.rejected
        per_session = log.sessions(tokenize)
        uncached_by_step: Counter = Counter()
        counts = uncached_prompt_tokens(log.calls, tokenize)
        for ((_, _), prompt), title, count in zip(log.calls, log.schemas, counts, strict=True):
            uncached_by_step[step_of(prompt, title)] += count.uncached_tokens
        results[name] = {
            "prompt_tokens_p50": statistics.median(c.prompt_tokens for c in per_session),
            "uncached_tokens_p50": statistics.median(c.uncached_tokens for c in per_session),
            "calls": sum(backend.steps.values()) / sessions,
            "tokens": sum(backend.tokens.values()) / sessions,
            "steps": {k: v / sessions for k, v in backend.steps.items()},
            "step_tokens": {k: v / sessions for k, v in backend.tokens.items()},
            "step_uncached": {k: v / sessions for k, v in uncached_by_step.items()},
            "kept": report.kept,
            "turns_per_kept": turns / max(1, report.kept),
            "stickers_per_kept": stickers / max(1, report.kept),
        }
    o, lean = results["original"], results["lean"]
    header = f"{'orig calls':>11}{'orig tok':>10}{'uncached':>10}{'lean calls':>11}{'lean tok':>10}{'uncached':>10}"
    print(f"{'step':<16}{header}")
    for step in sorted(set(o["steps"]) | set(lean["steps"]), key=lambda s: -o["step_tokens"].get(s, 0)):
        print(
            f"{step:<16}{o['steps'].get(step, 0):>11.1f}{o['step_tokens'].get(step, 0):>10.0f}"
            f"{o['step_uncached'].get(step, 0):>10.0f}"
            f"{lean['steps'].get(step, 0):>11.1f}{lean['step_tokens'].get(step, 0):>10.0f}"
            f"{lean['step_uncached'].get(step, 0):>10.0f}"
        )
    print(f"{'per session':<16}{o['calls']:>11.1f}{o['tokens']:>10.0f}{lean['calls']:>11.1f}{lean['tokens']:>10.0f}")
    for name, r in results.items():
        per_kept = f"{r['turns_per_kept']:.2f} turns and {r['stickers_per_kept']:.2f} stickers per kept session"
        print(f"{name}: {r['kept']}/{n} kept, {per_kept}")
    print(f"lean / original: calls {lean['calls'] / o['calls']:.3f}, tokens {lean['tokens'] / o['tokens']:.3f}")
    print("prefix reuse, medians per session: prompt tokens, uncached prompt tokens")
    for name, r in results.items():
        print(f"  {name:<10}{r['prompt_tokens_p50']:>10.0f}{r['uncached_tokens_p50']:>10.0f}")
    print(
        f"lean / original: prompt tokens {lean['prompt_tokens_p50'] / o['prompt_tokens_p50']:.3f}, "
        f"uncached prompt tokens {lean['uncached_tokens_p50'] / o['uncached_tokens_p50']:.3f} (target <= 0.333)"
    )
    return results


def _step_times(store_path: Path) -> dict[str, tuple[int, float, float]]:
    """Per step: calls, median latency (s), median completion tokens, from the run's call ledger."""
    import sqlite3

    db = sqlite3.connect(store_path)
    rows = db.execute(
        "SELECT c.latency_s, c.completion_tokens, r.request FROM calls c JOIN responses r ON r.key = c.key "
        "WHERE c.cached = 0 AND c.error IS NULL"
    ).fetchall()
    db.close()
    by_step: dict[str, list[tuple[float, int]]] = {}
    for latency, completion, request in rows:
        request = json.loads(request)
        prompt = "\n".join(
            part["text"] if isinstance(part, dict) else str(part)
            for m in request["messages"]
            for part in (m["content"] if isinstance(m["content"], list) else [{"text": m["content"]}])
        )
        step = step_of(prompt, (request.get("json_schema") or {}).get("title"))
        by_step.setdefault(step, []).append((latency, completion))
    return {
        step: (len(v), statistics.median(x for x, _ in v), statistics.median(c for _, c in v))
        for step, v in sorted(by_step.items(), key=lambda kv: -sum(x for x, _ in kv[1]))
    }


def bench_embedded(index: StickerIndex, n: int, patterns: list[str], prefix_caches: list[bool]) -> dict:
    personas = load_personas(reference.profile_sample())
    personas = (personas * (n // len(personas) + 1))[:n]
    results = {}
    for name in patterns:
        for prefix_cache in prefix_caches:
            label = f"{name}, prefix cache {'on' if prefix_cache else 'off'}"
            print(f"== embedded model: {n} sessions, {label}, {os.cpu_count()} CPU cores ==")
            with tempfile.TemporaryDirectory() as tmp:
                store = Path(tmp) / "llm.sqlite"
                # A fresh cache: every call is made, and its request is kept for the per-step table.
                factory = LLMFactory(LLMConfig(llm="local", store=store, local_prefix_cache=prefix_cache))
                start = time.perf_counter()
                report = asyncio.run(
                    run_generation(
                        personas, index, factory, Path(tmp) / "run", concurrency=1, call_pattern=CALL_PATTERNS[name]
                    )
                )
                wall = time.perf_counter() - start
                ledger = factory.store.ledger()
                steps = _step_times(store)
            calls = sum(row.calls for row in ledger)
            tokens = sum(row.prompt_tokens + row.completion_tokens for row in ledger)
            prompt = sum(row.prompt_tokens for row in ledger)
            cached = sum(row.cached_prompt_tokens for row in ledger)
            sessions = report.kept + report.rejected
            print(
                f"{sessions} sessions in {wall:.0f} s: {3600 * sessions / wall:.1f} sessions/hour "
                f"({report.kept} kept; {calls / sessions:.1f} calls and {tokens / sessions:.0f} tokens per session; "
                f"{cached / max(prompt, 1):.0%} of prompt tokens served from llama.cpp's cache)"
            )
            for step, (count, latency, completion) in steps.items():
                print(f"  {step:<16}{count:>5} calls  p50 {latency:5.2f} s  p50 {completion:4.0f} completion tokens")
            results[label] = {
                "sessions_per_hour": 3600 * sessions / wall,
                "kept": report.kept,
                "sessions": sessions,
                "cached_share": cached / max(prompt, 1),
            }
    for name in patterns:
        off, on = results.get(f"{name}, prefix cache off"), results.get(f"{name}, prefix cache on")
        if off and on:
            ratio = on["sessions_per_hour"] / off["sessions_per_hour"]
            print(f"{name}: prefix cache on / off sessions per hour: {ratio:.2f}x")
    return results


def _fake_reply(replies: RealisticReplies):
    def reply(body: dict) -> str:
        prompt = "\n".join(m["content"] if isinstance(m["content"], str) else "" for m in body["messages"])
        fmt = body.get("response_format") or {}
        title = fmt.get("json_schema", {}).get("schema", {}).get("title") if fmt.get("type") == "json_schema" else None
        return replies(prompt, title)

    return reply


def serve_fake(latency: float) -> None:
    """The fake server alone, in this process, until stdin closes: the scaling part's out-of-process peer."""
    from helpers.fake_openai_server import FakeOpenAIServer

    with FakeOpenAIServer(reply=_fake_reply(RealisticReplies()), latency=latency) as server:
        print(server.base_url, flush=True)
        sys.stdin.read()


@contextlib.contextmanager
def _server(kind: str, latency: float):
    """The fake server's base URL: in a thread of this process, or in a process of its own (as a real server is,
    so the client's CPU time is the client's alone)."""
    if kind == "thread":
        from helpers.fake_openai_server import FakeOpenAIServer

        with FakeOpenAIServer(reply=_fake_reply(RealisticReplies()), latency=latency) as server:
            yield server.base_url
        return
    command = [sys.executable, __file__, "serve-fake", "--latency", str(latency)]
    with subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as process:
        try:
            line = ""
            while not line.startswith("http"):  # the reference data's own lines come first
                line = process.stdout.readline()
                if not line:
                    sys.exit("the fake server process ended before it printed its address")
            yield line.strip()
        finally:
            process.stdin.close()
            process.wait(timeout=30)


def bench_scaling(index: StickerIndex, levels: list[int], latency: float, server_kind: str) -> dict:
    all_personas = load_personas(reference.profiles())
    where = "its own process" if server_kind == "process" else "a thread of the client's process"
    print(f"== throughput against a fake server in {where}, {latency * 1000:.0f} ms per call ==")
    rates, results = {}, {}
    os.environ.setdefault("OPENAI_API_KEY", "bench")
    with _server(server_kind, latency) as base_url:
        for c in levels:
            n = max(8, 2 * c)
            with tempfile.TemporaryDirectory() as tmp:
                limits = Limits(concurrency=c)  # as `generate --concurrency` sets it
                # The ledger in a file, as a user's run keeps it: its writes are part of the client's cost.
                config = LLMConfig(
                    llm="openai:fake-model", base_url=base_url, cache="off", limits=limits, store=Path(tmp) / "l.sqlite"
                )
                factory = LLMFactory(config)
                cpu, start = time.process_time(), time.perf_counter()
                asyncio.run(run_generation(all_personas[:n], index, factory, Path(tmp) / "run", concurrency=c))
                wall, cpu = time.perf_counter() - start, time.process_time() - cpu
                done = _sessions(Path(tmp) / "run")
                calls = sum(row.calls for row in factory.store.ledger())
            rates[c] = 60 * done / wall
            results[c] = {"sessions_per_min": rates[c], "calls": calls, "client_cpu_ms_per_call": 1000 * cpu / calls}
            ideal = rates[c] / rates[levels[0]] / (c / levels[0])
            print(
                f"concurrency {c:>3}: {done} sessions in {wall:5.1f} s = {rates[c]:6.1f} sessions/min "
                f"({rates[c] / rates[levels[0]]:.2f}x concurrency {levels[0]}, {ideal:.2f} of linear); "
                f"client CPU {1000 * cpu / calls:.1f} ms per call over {calls} calls"
            )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("parts", nargs="*", default=["tokens", "embedded", "scaling"])
    parser.add_argument("--stickers", type=Path, help="indexed sticker library (default runs/default-pack)")
    parser.add_argument("--sessions", type=int, default=40, help="personas for the token count")
    parser.add_argument("--embedded-sessions", type=int, default=3)
    parser.add_argument(
        "--embedded-patterns", default="lean,original", help="call patterns to time on the embedded model"
    )
    parser.add_argument(
        "--embedded-prefix-cache", default="off,on", help="time the embedded model without and with its prefix cache"
    )
    parser.add_argument("--levels", default="1,8,32")
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--server", choices=["process", "thread"], default="process", help="where the fake server runs")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    if args.parts == ["serve-fake"]:
        return serve_fake(args.latency)
    index = _index(args.stickers)
    load = os.getloadavg()[0]
    print(f"load average {load:.2f} on {os.cpu_count()} cores")
    results = {}
    if "tokens" in args.parts:
        results["tokens"] = bench_tokens(index, args.sessions)
    if "embedded" in args.parts:
        caches = [{"off": False, "on": True}[v] for v in args.embedded_prefix_cache.split(",")]
        results["embedded"] = bench_embedded(index, args.embedded_sessions, args.embedded_patterns.split(","), caches)
    if "scaling" in args.parts:
        results["scaling"] = bench_scaling(index, [int(x) for x in args.levels.split(",")], args.latency, args.server)
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
