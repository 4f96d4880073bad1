"""One SQLite file for the LLM layer: the response cache (content-addressed by request hash) and
the ledger (one row per call: role, model, tokens, cost, latency, whether it was cached, and which
structured-output mode the server took, and how many of its prompt tokens the server had cached).

Replaying a run reads answers from the cache, so tests and re-runs are deterministic and free; the
ledger shows what a run cost and which prompts produced what (its ``key`` joins the cache).
Schema changes go through the named migrations below, each applied once and recorded.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from stickerconv.llm.types import Completion, Request, Usage

_MIGRATIONS: list[tuple[str, str]] = [
    (
        "001_responses",
        """CREATE TABLE responses (
            key TEXT PRIMARY KEY, backend TEXT NOT NULL, model TEXT NOT NULL, request TEXT NOT NULL,
            text TEXT NOT NULL, prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,
            finish_reason TEXT, created_at TEXT NOT NULL)""",
    ),
    (
        "002_calls",
        """CREATE TABLE calls (
            id INTEGER PRIMARY KEY AUTOINCREMENT, ts TEXT NOT NULL, role TEXT NOT NULL, backend TEXT NOT NULL,
            model TEXT NOT NULL, key TEXT NOT NULL, prompt_tokens INTEGER NOT NULL,
            completion_tokens INTEGER NOT NULL, cost_usd REAL, latency_s REAL NOT NULL, cached INTEGER NOT NULL,
            attempts INTEGER NOT NULL, error TEXT)""",
    ),
    ("003_calls_index", "CREATE INDEX calls_model_role ON calls (model, role)"),
    # How the call's schema reached the server (llm/structured.py); NULL for cached, failed or unstructured calls.
    ("004_calls_structured_mode", "ALTER TABLE calls ADD COLUMN structured_mode TEXT"),
    # Prompt tokens the server reused from its prefix cache (Usage.cached_prompt_tokens); NULL in rows written
    # before this migration, which the ledger reads as 0 (billed as uncached, as they were priced).
    ("005_calls_cached_prompt_tokens", "ALTER TABLE calls ADD COLUMN cached_prompt_tokens INTEGER"),
]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class LedgerRow:
    """Totals of one model and role. Two kinds of "cached" that are easy to mix up: ``cached`` counts calls
    answered from our response cache (free, no tokens counted); ``cached_prompt_tokens`` counts prompt tokens
    of the calls that reached the server which the server took from its prefix cache (billed at the cached
    price). ``uncached_prompt_tokens`` = ``prompt_tokens`` - ``cached_prompt_tokens``."""

    model: str
    role: str
    calls: int
    cached: int
    errors: int
    prompt_tokens: int
    cached_prompt_tokens: int
    uncached_prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None  # None when some call of this model has no price
    backend: str
    structured_output: str | None  # the structured-output modes its calls used, comma-separated; None if none


# The fields of ledger rows that add up over calls, shards and roles (the cost adds up too, but None wins).
LEDGER_SUMS = (
    "calls",
    "cached",
    "errors",
    "prompt_tokens",
    "cached_prompt_tokens",
    "uncached_prompt_tokens",
    "completion_tokens",
)


def ledger_total(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The sum of ledger rows given as dicts (``asdict(LedgerRow)``, summary.json's ``llm`` rows, shards' rows):
    every count added up, and the cost None as soon as one row is unpriced (a partial sum would understate it)."""
    total: dict[str, Any] = dict.fromkeys(LEDGER_SUMS, 0) | {"cost_usd": 0.0}
    for row in rows:
        for name in LEDGER_SUMS:
            total[name] += row[name]
        cost = row["cost_usd"]
        total["cost_usd"] = None if cost is None or total["cost_usd"] is None else total["cost_usd"] + cost
    return total


class LLMStore:
    """Thread-safe access to the cache and ledger tables of one SQLite file (":memory:" allowed)."""

    def __init__(self, path: Path | str = ":memory:"):
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=10000")
        self._lock = threading.Lock()
        self._migrate()

    def _migrate(self) -> None:
        with self._lock:
            self._db.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT)")
            done = {row[0] for row in self._db.execute("SELECT name FROM _migrations")}
            for name, sql in _MIGRATIONS:
                if name not in done:
                    self._db.execute("BEGIN")
                    self._db.execute(sql)
                    self._db.execute("INSERT INTO _migrations VALUES (?, ?)", (name, _now()))
                    self._db.execute("COMMIT")

    def migrations(self) -> list[str]:
        with self._lock:
            return [row[0] for row in self._db.execute("SELECT name FROM _migrations ORDER BY name")]

    # ------------------------------------------------------------------ cache
    def get(self, key: str) -> Completion | None:
        with self._lock:
            row = self._db.execute(
                "SELECT text, prompt_tokens, completion_tokens, finish_reason FROM responses WHERE key = ?", (key,)
            ).fetchone()
        if row is None:
            return None
        return Completion(
            text=row[0], usage=Usage(prompt_tokens=row[1], completion_tokens=row[2]), finish_reason=row[3]
        )

    def put(self, request: Request, key: str, completion: Completion) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    key,
                    request.backend,
                    request.model,
                    request.model_dump_json(),
                    completion.text,
                    completion.usage.prompt_tokens,
                    completion.usage.completion_tokens,
                    completion.finish_reason,
                    _now(),
                ),
            )

    def cached_count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    # ------------------------------------------------------------------ ledger
    def record(
        self,
        *,
        role: str,
        backend: str,
        model: str,
        key: str,
        usage: Usage,
        cost_usd: float | None,
        latency_s: float,
        cached: bool,
        attempts: int,
        error: str | None = None,
        structured_mode: str | None = None,
    ) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO calls (ts, role, backend, model, key, prompt_tokens, completion_tokens, cost_usd, "
                "latency_s, cached, attempts, error, structured_mode, cached_prompt_tokens) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    _now(),
                    role,
                    backend,
                    model,
                    key,
                    usage.prompt_tokens,
                    usage.completion_tokens,
                    cost_usd,
                    latency_s,
                    int(cached),
                    attempts,
                    error,
                    structured_mode,
                    usage.cached_prompt_tokens,
                ),
            )

    def ledger(self) -> list[LedgerRow]:
        """Totals per model and role (and backend). Cached calls cost nothing and are counted apart."""
        with self._lock:
            rows = self._db.execute(
                """SELECT model, role, COUNT(*), SUM(cached), SUM(error IS NOT NULL),
                          SUM(CASE WHEN cached = 0 THEN prompt_tokens ELSE 0 END),
                          SUM(CASE WHEN cached = 0 THEN COALESCE(cached_prompt_tokens, 0) ELSE 0 END),
                          SUM(CASE WHEN cached = 0 THEN completion_tokens ELSE 0 END),
                          SUM(CASE WHEN cached = 0 THEN cost_usd ELSE 0 END),
                          SUM(CASE WHEN cached = 0 AND error IS NULL AND cost_usd IS NULL THEN 1 ELSE 0 END),
                          backend, GROUP_CONCAT(DISTINCT structured_mode)
                   FROM calls GROUP BY model, role, backend ORDER BY model, role, backend"""
            ).fetchall()
        return [
            LedgerRow(
                *r[:5],
                prompt_tokens=r[5],
                cached_prompt_tokens=r[6],
                uncached_prompt_tokens=r[5] - r[6],
                completion_tokens=r[7],
                cost_usd=None if r[9] else (r[8] or 0.0),
                backend=r[10],
                structured_output=",".join(sorted(r[11].split(","))) if r[11] else None,
            )
            for r in rows
        ]

    def calls(self, where: str = "1", params: tuple = ()) -> list[dict]:
        with self._lock:
            cursor = self._db.execute(f"SELECT * FROM calls WHERE {where} ORDER BY id", params)
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def close(self) -> None:
        with self._lock:
            self._db.close()


class Price(BaseModel):
    """A model's prices in USD per million tokens (``[prices."MODEL"]`` in an LLM config file).

    ``cached_input_per_mtok`` prices the prompt tokens the server reports as cached. None (the default) prices
    them as ordinary input: the discount differs by provider and model (OpenAI lists cached input at 50 % of
    the input price for gpt-4o and gpt-4o-mini, 25 % for the gpt-4.1 family, 10 % for gpt-5; a self-hosted
    vLLM costs the same either way), and an estimate that assumes no discount can only overstate the bill."""

    model_config = ConfigDict(extra="forbid")
    input_per_mtok: float = Field(ge=0)  # USD per million prompt tokens
    output_per_mtok: float = Field(ge=0)  # USD per million completion tokens
    cached_input_per_mtok: float | None = Field(None, ge=0)  # USD per million cached prompt tokens; None: as input

    def cost(self, usage: Usage) -> float:
        cached = self.input_per_mtok if self.cached_input_per_mtok is None else self.cached_input_per_mtok
        return (
            usage.uncached_prompt_tokens * self.input_per_mtok
            + usage.cached_prompt_tokens * cached
            + usage.completion_tokens * self.output_per_mtok
        ) / 1_000_000


PriceTable = dict[str, Price]  # model name -> its prices


def cost_of(prices: PriceTable, backend: str, model: str, usage: Usage) -> float | None:
    """USD cost of one call; 0 for local models; None when the model has no price in the table."""
    if backend == "local":
        return 0.0
    price = prices.get(model)
    return None if price is None else price.cost(usage)
