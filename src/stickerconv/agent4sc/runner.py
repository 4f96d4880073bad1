"""Running Agent4SC over many personas: bounded concurrency, append-as-you-go, resumable.

Every finished session is appended (and flushed to disk) to ``conversations.jsonl`` when it has a
sticker, else to ``rejected.jsonl`` with its reason; both carry the persona's id under ``meta``. A
rerun of the same command skips the ids already in either file, so a crash or Ctrl-C loses at most
the sessions in flight and never duplicates one. With the LLM cache in the run folder, a rerun
replays every call it already made.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from stickerconv.agent4sc.agent import SYSTEM_PERSONA, SYSTEM_STATUS, Agent, AgentProfile
from stickerconv.agent4sc.manager import Manager, ManagerConfig, keep
from stickerconv.agent4sc.memory import MemoryConfig, MemoryLog, MemoryStream
from stickerconv.agent4sc.pattern import CallPattern
from stickerconv.agent4sc.plan import BRIEF_WORDS, StickerTool
from stickerconv.agent4sc.simulate import DialogueResult, simulate
from stickerconv.jsonl import drop_torn_tail
from stickerconv.llm import ChatModel, LLMFactory, Settings
from stickerconv.llm.store import ledger_total
from stickerconv.llm.types import RetryBudgetExhausted, StructuredOutputError
from stickerconv.runfiles import CONVERSATIONS, REJECTED, SUMMARY
from stickerconv.schema import Persona
from stickerconv.stickers.batched import BatchedEmbedder
from stickerconv.stickers.brief import StickerBriefs
from stickerconv.stickers.index import StickerIndex

# Sampling per role from the method reference's table (§2.2). Every role has a seed (the agents' utterances
# get each session's own): the sticker plan and memory calls sample too, and without a seed an OpenAI-compatible
# server samples differently on every run, so a resumed run could not match an uninterrupted one.
ROLE_SETTINGS = {
    "user_agent": Settings(temperature=0.7, max_tokens=150, seed=0),
    "assistant_agent": Settings(temperature=0.5, max_tokens=150, seed=0),
    "memory": Settings(temperature=0.1, max_tokens=150, seed=0),
    "manager": Settings(temperature=0.0, max_tokens=200, seed=0),
}


@dataclass
class RunReport:
    out: Path
    kept: int = 0
    rejected: int = 0
    skipped_done: int = 0
    end_reasons: Counter = field(default_factory=Counter)
    wall_s: float = 0.0


def _prompts_hash() -> str:
    """A version of the prompts: the hash of the modules that write them, so sessions made with
    different prompt texts can be told apart in a merged dataset."""
    from stickerconv.agent4sc import agent, dialogue, manager, memory, plan

    digest = hashlib.sha256()
    for module in (agent, dialogue, manager, memory, plan):
        digest.update(Path(module.__file__).read_bytes())
    return "sha256:" + digest.hexdigest()[:16]


PROMPTS_HASH = _prompts_hash()


def persona_id(persona: Persona, position: int) -> str:
    return persona.id or f"p{position:06d}"


def _done_ids(out: Path) -> set[str]:
    done = set()
    for name in (CONVERSATIONS, REJECTED):
        path = out / name
        drop_torn_tail(path)  # a session torn by a crash is simply run again
        if not path.is_file():
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                done.add(json.loads(line)["meta"]["persona_id"])
    return done


def _append(path: Path, record: dict) -> None:
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


@dataclass
class _RunParts:
    """What every session of a run shares: the role models, the library, the batched embedder, the memory and
    call-pattern settings, the library's sticker briefs (lean pattern)."""

    models: dict[str, ChatModel]
    index: StickerIndex
    embedder: BatchedEmbedder
    memory_config: MemoryConfig
    pattern: CallPattern
    briefs: StickerBriefs | None

    def agents(self, persona: Persona, session_seed: int) -> tuple[Agent, Agent]:
        """A session's two sides (B, the user; A, the assistant): fresh memories (§2.5: reset for every profile;
        the lean pattern's two streams share one log), each its sticker tool and its model's settings seeded for
        the session."""
        log = MemoryLog() if self.pattern.compact_prompts else None
        sides = (
            ("B", "user_agent", persona.persona, persona.situation),
            ("A", "assistant_agent", SYSTEM_PERSONA, SYSTEM_STATUS),
        )
        user_agent, system_agent = (self._agent(*side, session_seed, log) for side in sides)
        return user_agent, system_agent

    def _agent(self, name: str, role: str, persona: str, status: str, seed: int, log: MemoryLog | None) -> Agent:
        model, compact = self.models[role], self.pattern.compact_prompts
        memory = MemoryStream(name, self.models["memory"], self.embedder, self.memory_config, log=log)
        settings = model.settings.model_copy(update={"seed": seed})
        tool = StickerTool(self.index, model, seed=seed, compact=compact, embedder=self.embedder, briefs=self.briefs)
        return Agent(AgentProfile(name, persona, status), model, memory, tool, settings, pattern=self.pattern)


async def run_generation(
    personas: Sequence[Persona],
    index: StickerIndex,
    factory: LLMFactory,
    out: Path,
    *,
    concurrency: int = 4,
    max_turns: int = 6,
    limit: int | None = None,
    seed: int = 0,
    memory_config: MemoryConfig | None = None,
    manager_config: ManagerConfig | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    positions: Sequence[int] | None = None,
    call_pattern: CallPattern | None = None,
    provenance: dict | None = None,
) -> RunReport:
    """Simulate one dialogue per persona into ``out``. ``positions`` are the personas' places in the
    whole persona list (a shard passes its own), which fix their default ids and session seeds.
    ``provenance`` (e.g. the sticker pool) joins every session's ``meta`` and summary.json."""
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    report = RunReport(out)
    positions = list(range(len(personas))) if positions is None else list(positions)
    if len(positions) != len(personas):
        raise ValueError(f"{len(positions)} positions for {len(personas)} personas")
    chosen = [(pos, persona_id(p, pos), p) for pos, p in zip(positions, personas, strict=True)][: limit or None]
    done = _done_ids(out)
    todo = [(pos, pid, p) for pos, pid, p in chosen if pid not in done]
    report.skipped_done = len(chosen) - len(todo)
    models = {role: factory.chat_model(role) for role in ROLE_SETTINGS}
    for role, model in models.items():
        if role not in factory.config.roles:  # a config file's per-role settings win over the defaults
            model.settings = ROLE_SETTINGS[role]
    pattern = call_pattern or CallPattern()
    briefs = StickerBriefs(index.stickers, max_words=BRIEF_WORDS) if pattern.compact_prompts else None
    manager = Manager(models["manager"], replace(manager_config or ManagerConfig(), max_turns=max_turns), briefs)
    memory_config = (memory_config or MemoryConfig()).model_copy(update={"batch_importance": pattern.batch_importance})
    semaphore = asyncio.Semaphore(concurrency)
    embedder = BatchedEmbedder(index.embedder)  # one for every session: shared texts once, batches across sessions
    parts = _RunParts(models, index, embedder, memory_config, pattern, briefs)
    finished = report.skipped_done

    async def one(position: int, pid: str, persona: Persona) -> None:
        nonlocal finished
        async with semaphore:
            session_seed = seed * 1_000_003 + position  # by position in the persona list: a resumed run reuses it
            user_agent, system_agent = parts.agents(persona, session_seed)
            try:
                result = await simulate(
                    user_agent,
                    system_agent,
                    manager,
                    persona=persona.persona,
                    status=persona.situation,
                    seed=session_seed,
                )
            except RetryBudgetExhausted as exc:
                if not isinstance(exc.last, StructuredOutputError):
                    raise  # the server is failing, not this session: stop; the rerun resumes here
                # The model cannot produce a required answer for this session: record it and go on.
                result = DialogueResult(None, "model_output_error", {"seed": session_seed, "error": str(exc)[:500]})
            meta = result.meta | {
                "persona_id": pid,
                "persona_emotion": persona.emotion,  # as written in the profile file
                "persona_label": persona.label.value,  # normalised to the 7 classes
                "models": {r: f"{m.backend.name}:{m.model}" for r, m in models.items()},
                "call_pattern": asdict(pattern),
                "manager_rules": asdict(manager.config),
                "memory": memory_config.model_dump(),
                "prompts": PROMPTS_HASH,
                **(provenance or {}),
            }
            report.end_reasons[result.end_reason] += 1
            if result.conversation is not None and keep(result.conversation):
                _append(out / CONVERSATIONS, result.conversation.model_copy(update={"meta": meta}).to_published())
                report.kept += 1
            else:
                if result.end_reason == "model_output_error":
                    reason = f"unusable model output: {result.meta['error']}"
                elif result.conversation is not None:
                    reason = "no sticker"
                else:
                    reason = f"no complete turn ({result.end_reason})"
                body = result.conversation.to_published() if result.conversation else {}
                _append(out / REJECTED, body | {"meta": meta | {"reject_reason": reason}})
                report.rejected += 1
            finished += 1
            if on_progress:
                on_progress(finished, len(chosen))

    try:
        await asyncio.gather(*(one(pos, pid, p) for pos, pid, p in todo))
    finally:
        for backend in {id(m.backend): m.backend for m in models.values()}.values():
            await backend.release_loop()
        embedder.close()
    report.wall_s = time.perf_counter() - start
    write_summary(out, report, [row.__dict__ for row in factory.store.ledger()], **(provenance or {}))
    return report


def session_stats(out: Path) -> dict:
    """Counts over every kept session in the run folder (this invocation's and earlier ones')."""
    sessions = turns = user_stickers = system_stickers = 0
    path = out / CONVERSATIONS
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            conversation = json.loads(line)["conversation"]
            sessions += 1
            turns += len(conversation)
            user_stickers += sum(t["user_sticker"] is not None for t in conversation)
            system_stickers += sum(t["system_sticker"] is not None for t in conversation)
    return {
        "sessions": sessions,
        "turns_per_session": round(turns / sessions, 3) if sessions else 0.0,
        "stickers": user_stickers + system_stickers,
        "stickers_per_session": round((user_stickers + system_stickers) / sessions, 3) if sessions else 0.0,
        "user_stickers": user_stickers,
        "system_stickers": system_stickers,
    }


def ended(out: Path) -> dict:
    """How every session simulated into the run folder ended, kept or rejected (this invocation's and
    earlier ones'): the count per end reason, and the mean number of completed turns."""
    reasons: Counter = Counter()
    turns = sessions = 0
    for name in (CONVERSATIONS, REJECTED):
        path = out / name
        if not path.is_file():
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            reasons[record["meta"].get("end_reason", "unknown")] += 1
            turns += len(record.get("conversation", []))
            sessions += 1
    return {
        "end_reasons": dict(sorted(reasons.items())),
        "turns_per_simulated_session": round(turns / sessions, 3) if sessions else 0.0,
    }


def structured_modes(ledger: list[dict]) -> dict[str, str]:
    """``backend:model`` -> the structured-output mode(s) its server took, from the ledger rows: the first
    thing to look at when a server answers schemas badly (llm/structured.py)."""
    modes: dict[str, set[str]] = {}
    for row in ledger:
        if row.get("structured_output"):
            modes.setdefault(f"{row['backend']}:{row['model']}", set()).update(row["structured_output"].split(","))
    return {server: ",".join(sorted(found)) for server, found in sorted(modes.items())}


def write_summary(out: Path, report: RunReport, ledger: list[dict], **extra) -> None:
    """``summary.json``: this invocation's counts, how the folder's sessions ended (``ended``: every
    session, kept or rejected, so a resumed run reports them all), the whole folder's session statistics,
    the LLM ledger (calls, prompt tokens with the part the server had cached and the uncached rest, completion
    tokens and estimated cost, per model and role and in all, over every call the run's store recorded) and the
    structured-output mode each server took."""
    summary = {
        "kept": report.kept,
        "rejected": report.rejected,
        "skipped_done": report.skipped_done,
        **ended(out),
        "wall_s": round(report.wall_s, 2),
        "dataset": session_stats(out),
        "llm": ledger,
        "llm_total": ledger_total(ledger),
        "structured_output": structured_modes(ledger),
        **extra,
    }
    (out / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
