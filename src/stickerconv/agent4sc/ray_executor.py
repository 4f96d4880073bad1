"""Agent4SC over a Ray cluster: personas are cut into contiguous shards (as the original sharded its
profiles, §2.10), each shard is one Ray task running the ordinary runner into its own folder
``RUN_DIR/shards/NNN`` with its own LLM cache, and the driver merges every shard into
``RUN_DIR/conversations.jsonl`` / ``rejected.jsonl`` in persona order.

Why shard folders on a shared filesystem rather than streaming results to the driver: each shard
then keeps the runner's guarantees (append + fsync per session, resume, replay cache), so a lost
node or a killed driver loses only sessions in flight; rerunning the command resumes every shard
and merges again. RUN_DIR must therefore be visible at the same path on every node (NFS, or one
machine), and every node needs StickerConv and the sticker library installed at the same paths.

Sessions carry their global persona position, so ids and seeds - and, with a deterministic model,
the sessions themselves - are those of a local run of the same command.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

from stickerconv.agent4sc.manager import ManagerConfig
from stickerconv.agent4sc.memory import MemoryConfig
from stickerconv.agent4sc.pattern import CallPattern
from stickerconv.agent4sc.runner import RunReport, persona_id, run_generation, write_summary
from stickerconv.jsonl import drop_torn_tail, write_jsonl_atomic
from stickerconv.llm import LLMConfig, LLMFactory
from stickerconv.llm.store import LLMStore, ledger_total
from stickerconv.runfiles import CONVERSATIONS, REJECTED, SUMMARY
from stickerconv.schema import Persona

log = logging.getLogger(__name__)
SHARDS = "shards"
# Environment a worker needs to reach an OpenAI-compatible server the same way the driver does.
_FORWARDED_ENV = ("OPENAI_BASE_URL", "OPENAI_API_KEY", "HF_HUB_OFFLINE")


def shard_windows(n_items: int, n_shards: int) -> list[range]:
    """Contiguous, near-equal windows covering ``range(n_items)``; never an empty one."""
    n_shards = max(1, min(n_shards, n_items))
    size, rest = divmod(n_items, n_shards)
    windows, start = [], 0
    for i in range(n_shards):
        stop = start + size + (1 if i < rest else 0)
        windows.append(range(start, stop))
        start = stop
    return windows


def _records(path: Path) -> list[dict]:
    drop_torn_tail(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _run_shard(
    lib_dir: str,
    llm_config: dict,
    personas: list[dict],
    positions: list[int],
    shard_dir: str,
    options: dict,
) -> dict:
    """One Ray task: the ordinary runner over one window of personas, into its own folder."""
    from stickerconv.stickers.index import StickerIndex
    from stickerconv.stickers.pools import PoolManifest, restrict

    index = StickerIndex.load(Path(lib_dir))
    if options["pool"] is not None:  # the driver checked the manifest; a shard sees the same folder
        index = restrict(index, PoolManifest.load(Path(lib_dir)), options["pool"])
    config = LLMConfig.model_validate(llm_config)
    config = config.model_copy(update={"store": Path(shard_dir) / "llm.sqlite"})
    factory = LLMFactory(config)
    report = asyncio.run(
        run_generation(
            [Persona.model_validate(p) for p in personas],
            index,
            factory,
            Path(shard_dir),
            positions=positions,
            provenance=options["provenance"],
            concurrency=options["concurrency"],
            max_turns=options["max_turns"],
            seed=options["seed"],
            memory_config=MemoryConfig.model_validate(options["memory"]) if options["memory"] else None,
            manager_config=ManagerConfig(**options["manager"]) if options["manager"] else None,
            call_pattern=CallPattern(**options["pattern"]),
        )
    )
    return {"kept": report.kept, "rejected": report.rejected, "end_reasons": dict(report.end_reasons)}


def _merge_ledgers(ledgers: Sequence[list[dict]]) -> list[dict]:
    """The shards' ledger rows summed per model and role."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for rows in ledgers:
        for row in rows:
            groups.setdefault((row["model"], row["role"]), []).append(row)
    return [groups[key][0] | ledger_total(groups[key]) for key in sorted(groups)]


def merge_shards(out: Path, order: dict[str, int]) -> tuple[int, int]:
    """Rewrite the run's files from its own records plus every shard's, once per persona id, in
    persona order (a session kept anywhere wins over a rejection). Idempotent."""
    kept: dict[str, dict] = {}
    rejected: dict[str, dict] = {}
    shard_dirs = sorted((out / SHARDS).glob("[0-9]*")) if (out / SHARDS).is_dir() else []
    for folder in [out, *shard_dirs]:
        for record in _records(folder / CONVERSATIONS):
            kept.setdefault(record["meta"]["persona_id"], record)
        for record in _records(folder / REJECTED):
            rejected.setdefault(record["meta"]["persona_id"], record)
    for pid in kept:
        rejected.pop(pid, None)

    def position(record: dict) -> tuple[int, str]:
        pid = record["meta"]["persona_id"]
        return order.get(pid, len(order)), pid

    write_jsonl_atomic(out / CONVERSATIONS, sorted(kept.values(), key=position))
    write_jsonl_atomic(out / REJECTED, sorted(rejected.values(), key=position))
    return len(kept), len(rejected)


def _count_lines(paths: Sequence[Path]) -> int:
    total = 0
    for path in paths:
        try:
            with path.open("rb") as fh:
                total += sum(1 for _ in fh)
        except FileNotFoundError:
            pass
    return total


def run_generation_ray(
    personas: Sequence[Persona],
    lib_dir: Path,
    llm_config: LLMConfig,
    out: Path,
    *,
    address: str | None = None,
    shards: int | None = None,
    cpus_per_shard: float = 1.0,
    concurrency: int = 4,
    max_turns: int = 6,
    limit: int | None = None,
    seed: int = 0,
    memory_config: MemoryConfig | None = None,
    manager_config: ManagerConfig | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    call_pattern: CallPattern | None = None,
    pool: str | None = None,
    provenance: dict | None = None,
) -> RunReport:
    """Run the personas as Ray tasks (one per shard) and merge. ``address`` None starts a local Ray
    instance (or joins the one ``RAY_ADDRESS`` names); ``shards`` defaults to the cluster's CPUs
    divided by ``cpus_per_shard``. ``pool`` and ``provenance`` mean what they mean to ``run_generation``."""
    import ray

    start = time.perf_counter()
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    chosen = list(personas)[: limit or None]
    ids = [persona_id(p, i) for i, p in enumerate(chosen)]
    order = {pid: i for i, pid in enumerate(ids)}
    merge_shards(out, order)  # earlier runs' shards (and any local run) count as done
    done = {r["meta"]["persona_id"] for name in (CONVERSATIONS, REJECTED) for r in _records(out / name)}
    report = RunReport(out, skipped_done=sum(pid in done for pid in ids))

    env = {k: os.environ[k] for k in (*_FORWARDED_ENV, llm_config.api_key_env) if k in os.environ}
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, runtime_env={"env_vars": env}, log_to_driver=False, include_dashboard=False)
    try:
        n_shards = shards or max(1, int(ray.cluster_resources().get("CPU", 1) / cpus_per_shard))
        windows = shard_windows(len(chosen), n_shards) if chosen else []
        task = ray.remote(num_cpus=cpus_per_shard, max_retries=2)(_run_shard)
        config = llm_config.model_dump(mode="json")
        options = {
            "concurrency": concurrency,
            "max_turns": max_turns,
            "seed": seed,
            "memory": memory_config.model_dump() if memory_config else None,
            "manager": asdict(manager_config) if manager_config else None,
            "pattern": asdict(call_pattern or CallPattern()),
            "pool": pool,
            "provenance": provenance,
        }
        pending = []
        for i, window in enumerate(windows):
            todo = [pos for pos in window if ids[pos] not in done]
            if not todo:
                continue
            shard_dir = out / SHARDS / f"{i:03d}"
            payload = [chosen[pos].model_dump(mode="json") for pos in todo]
            pending.append(task.remote(str(lib_dir.resolve()), config, payload, todo, str(shard_dir), options))
        log.info("%d personas in %d shards (%d already done)", len(chosen), len(pending), report.skipped_done)
        outputs = [out / SHARDS / f"{i:03d}" / name for i in range(len(windows)) for name in (CONVERSATIONS, REJECTED)]
        before = _count_lines(outputs)
        results = []
        while pending:
            ready, pending = ray.wait(pending, timeout=1.0)
            results += ray.get(ready)
            if on_progress:
                finished = report.skipped_done + _count_lines(outputs) - before
                on_progress(min(len(chosen), finished), len(chosen))
    finally:
        if started_here:
            ray.shutdown()
    kept_total, rejected_total = merge_shards(out, order)
    for result in results:
        report.kept += result["kept"]
        report.rejected += result["rejected"]
        report.end_reasons += Counter(result["end_reasons"])
    report.wall_s = time.perf_counter() - start
    stores = sorted((out / SHARDS).glob("[0-9]*/llm.sqlite"))
    ledgers = []
    for path in stores:
        store = LLMStore(path)
        ledgers.append([row.__dict__ for row in store.ledger()])
        store.close()
    write_summary(out, report, _merge_ledgers(ledgers), executor="ray", shards=len(stores), **(provenance or {}))
    log.info("merged: %d kept, %d rejected in %s", kept_total, rejected_total, out / SUMMARY)
    return report
