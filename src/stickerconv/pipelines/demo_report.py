"""What the demo's steps left in the run folder, read back: the rows each step shows, the evaluation's headline
table and ``REPORT.md``.

Why read the files rather than keep what the steps returned: a cached step did not run this time, yet the
console and the report show its result all the same; reading the step's own files is the one way that holds for
a built and a cached step alike.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel

STATE_FILE = "demo-state.json"
LOGS = "logs"
REPORT = "REPORT.md"
PACK_FACTS = "demo-pack.json"  # written into the pack folder: what the pack step shows
SYSTEMS = ("text", "tool", "pegs-ret")  # the two LLM baselines and PEGS, predicted on the same test turns
RETRIEVAL_SCORERS = ("index", "tool", "pegs")  # the index over the dialogue, the tool baseline's query, PEGS
RETRIEVAL_OF = {"text": "", "tool": "tool", "pegs-ret": "pegs", "index": "index"}  # table row -> retrieval file
# The evaluation table: (heading, where the figure is: "retrieval" files or "scores", metric name).
HEADLINE = (
    ("R10@1", "retrieval", "r10@1"),
    ("pool R@10", "retrieval", "pool_r@10"),
    ("stickers sent", "scores", "sticker_frequency"),
    ("send F1", "scores", "send_f1"),
    ("sticker fit", "scores", "sticker_fit"),
)

Rows = list[tuple[str, str]]


class Step(Protocol):
    """What the report reads of a demo step (``stickerconv.pipelines.demo.Step``)."""

    name: str
    title: str
    llm: str | None  # the model an LLM step runs on; None for the others
    stores: list[Path]  # the LLM stores whose ledgers record its calls


class Figure(BaseModel):
    """One headline cell: a score and its 95% bootstrap interval, when the metric has one."""

    score: float
    ci: tuple[float, float] | None = None

    @classmethod
    def read(cls, result: dict[str, Any] | None) -> Figure | None:
        return cls(score=result["score"], ci=result.get("ci")) if result else None


class HeadlineRow(BaseModel):
    responder: str
    cells: list[Figure | None]


class Headline(BaseModel):
    """The evaluation at a glance: each responder (and the index alone) against the headline metrics."""

    samples: int | str  # held-out turns scored ("?" before any score)
    headings: list[str]
    rows: list[HeadlineRow]
    reading: str  # what the figures are read against: chance retrieval and the gold replies' own figures


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def counts(tally: dict[str, int]) -> str:
    """``Sadness 2, Anger 1``, largest first."""
    return ", ".join(f"{name} {n}" for name, n in sorted(tally.items(), key=lambda kv: (-kv[1], kv[0]))) or "none"


def figure(result: Figure | dict[str, Any] | None, digits: int = 3) -> str:
    """``0.300 [0.100, 0.500]`` from a result (score and 95% interval), ``-`` without one."""
    if isinstance(result, dict):
        result = Figure.read(result)
    if result is None:
        return "-"
    ci = result.ci
    return f"{result.score:.{digits}f}" + (f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else "")


@dataclass(frozen=True)
class RunFolder:
    """Where each step writes inside the run folder; the same names as the commands the demo stands for."""

    out: Path

    pack = property(lambda self: self.out / "pack")
    profiles = property(lambda self: self.out / "personas.jsonl")
    sessions = property(lambda self: self.out / "sessions")
    dataset = property(lambda self: self.out / "dataset")
    pegs = property(lambda self: self.out / "pegs")
    pegs_align = property(lambda self: self.out / "pegs-align")  # PEGS's sticker-only stages, beside the simulation
    checkpoint = property(lambda self: self.out / "pegs" / "final")
    evaluation = property(lambda self: self.out / "eval")
    train_samples = property(lambda self: self.out / "dataset" / "train.json")
    test_samples = property(lambda self: self.out / "dataset" / "test.json")
    personas_store = property(lambda self: self.out / "personas.llm.sqlite")  # `personas generate`'s default
    simulate_store = property(lambda self: self.out / "sessions" / "llm.sqlite")

    @property
    def evaluation_stores(self) -> list[Path]:
        preds = [self.evaluation / f"pred-{system}.json.llm.sqlite" for system in SYSTEMS]
        return [*preds, self.evaluation / "retrieval-tool.llm.sqlite"]

    def log(self, step: str) -> Path:
        return self.out / LOGS / f"{step}.log"


@dataclass
class DemoFacts:
    """What each step left in the run folder, read back for the console and the report."""

    run: RunFolder
    started: Callable[[str], str | None]  # when a step's build began: its ledgers' calls since then are its own

    def calls(self, stores: Iterable[Path], since: str | None) -> dict[tuple[str, str], Counter[str]]:
        """(``backend:model``, role) -> calls and cached calls, from the ledgers, counting the calls made
        since ``since`` (the step's build; its stores keep the calls of earlier builds too)."""
        from stickerconv.llm.store import LLMStore

        used: dict[tuple[str, str], Counter[str]] = {}
        for path in stores:
            if not path.is_file():
                continue
            store = LLMStore(path)
            try:
                rows = store.calls("ts >= ?", (since,)) if since else store.calls()
            finally:
                store.close()
            for row in rows:
                tally = used.setdefault((f"{row['backend']}:{row['model']}", row["role"]), Counter())
                tally["calls"] += 1
                tally["cached"] += row["cached"]
        return used

    def models_line(self, stores: Iterable[Path], since: str | None, configured: str | None) -> str:
        """``openai:gpt-4o-mini (57 calls)``: the models the ledgers recorded, else the model named."""
        per_model: Counter[str] = Counter()
        for (name, _), tally in self.calls(stores, since).items():
            per_model[name] += tally["calls"]
        return ", ".join(f"{name} ({n} calls)" for name, n in per_model.items()) or (configured or "-")

    def pack(self) -> Rows:
        facts = read_json(self.run.pack / PACK_FACTS) or {}
        if not facts:
            return [("pack", "no record of the build")]
        rows = [
            ("stickers", f"{facts['stickers']} ({counts(facts['labels'])})"),
            ("index", f"{facts.get('kind', '?')}, {facts.get('embedder', '?')}"),
        ]
        for query, hits in facts["searches"].items():
            rows.append(("search", f"“{query}”: " + ", ".join(f"{h['label'] or '-'} {h['id']}" for h in hits)))
        return rows

    def personas(self, configured: str | None) -> Rows:
        if not self.run.profiles.is_file():
            return [("personas", "none")]
        from stickerconv.agent4sc.personas import load_personas

        emotions = Counter(p.emotion for p in load_personas(self.run.profiles))
        return [
            ("personas", f"{sum(emotions.values())} ({counts(emotions)})"),
            ("model", self.models_line([self.run.personas_store], self.started("personas"), configured)),
        ]

    def sessions_summary(self) -> dict[str, Any]:
        return read_json(self.run.sessions / "summary.json") or {}

    def simulate(self, configured: str | None) -> Rows:
        summary = self.sessions_summary()
        kept = f"{summary.get('kept', 0)} kept, {summary.get('rejected', 0)} rejected (no sticker or no complete turn)"
        model = self.models_line([self.run.simulate_store], self.started("simulate"), configured)
        return [("sessions", kept), ("model", model)]

    def dataset(self) -> Rows:
        stats = read_json(self.run.dataset / "stats" / "stats.json") or {}
        if not stats:
            return [("dataset", "no statistics")]
        stickers, by_role = stats["stickers"], stats["stickers"]["by_role"]
        rows = [
            ("sessions", f"{stats['sessions']}, {stats['turns']['mean']:.2f} turns each (max {stats['turns']['max']})"),
            (
                "stickers",
                f"{stickers['total']} ({stickers['unique']} distinct; user {by_role['user']['stickers']}, "
                f"assistant {by_role['system']['stickers']})",
            ),
        ]
        summary = self.sessions_summary()  # how every simulated session ended, the rejected ones included
        if summary.get("end_reasons"):
            simulated = sum(summary["end_reasons"].values())
            each = summary.get("turns_per_simulated_session")
            turns = f", {each:.2f} turns each" if each is not None else ""
            rows.append(("ended by", f"{counts(summary['end_reasons'])} (of {simulated} simulated{turns})"))
        return [*rows, ("split", self._split())]

    def _split(self) -> str:
        split = read_json(self.run.dataset / "split" / "split.json") or {}
        parts = []
        for name in ("train", "test"):
            samples = read_json(self.run.dataset / f"{name}.json") or []
            with_sticker = sum(1 for s in samples if s.get("response_image"))
            parts.append(
                f"{name} {split.get('sessions', {}).get(name, '?')} sessions -> {len(samples)} turns "
                f"({with_sticker} with a sticker reply)"
            )
        return "; ".join(parts)

    def distill(self) -> dict[str, Any] | None:
        from stickerconv.pegs.distill import DISTILL_RECORD

        found = sorted(self.run.pegs.glob(f"*-distill/{DISTILL_RECORD}"))
        return read_json(found[-1]) if found else None

    def pegs(self) -> Rows:
        folder = self.run.pegs
        if not folder.is_dir():
            return [("stages", "none")]
        stages = sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name[:2].isdigit())
        rows = [("stages", ", ".join(s.split("-", 1)[1] for s in stages) + f" -> {folder.name}/final")]
        record = self.distill()
        if record and "overlap_before" in record:
            overlap = f"{record['overlap_before']:.2f} -> {record['overlap_after']:.2f}"
            rows.append(("distill", f"top-10 overlap with the index {overlap} on {record.get('turns', '?')} turns"))
        return rows

    def scores(self) -> dict[str, dict[str, Any]]:
        return read_json(self.run.evaluation / "scores.json") or {}

    def retrieval(self) -> dict[str, dict[str, Any]]:
        files = {name: self.run.evaluation / f"retrieval-{name}.json" for name in RETRIEVAL_SCORERS}
        return {name: payload for name, path in files.items() if (payload := read_json(path))}

    def headline(self) -> Headline:
        """The evaluation's rows (the three responders, then the index retriever alone) and their cells."""
        scores, retrieval = self.scores(), self.retrieval()
        rows = []
        for row in (*SYSTEMS, "index"):
            cells = []
            for _, kind, metric in HEADLINE:
                if kind == "retrieval":
                    cells.append(Figure.read(retrieval.get(RETRIEVAL_OF[row], {}).get("all", {}).get(metric)))
                else:
                    cells.append(Figure.read(scores.get(row, {}).get(metric)))
            rows.append(HeadlineRow(responder=row, cells=cells))
        samples = next(iter(scores.values()), {}).get("sticker_frequency", {}).get("n_items", "?")
        headings = [heading for heading, _, _ in HEADLINE]
        return Headline(samples=samples, headings=headings, rows=rows, reading=self.chance())

    def chance(self) -> str:
        """The figures a responder is read against: chance retrieval, and the gold replies' own figures."""
        scores, retrieval = self.scores(), self.retrieval()
        pool = next(iter(retrieval.values()), {}).get("all", {}).get("pool_r@10", {}).get("signature", {}).get("pool")
        parts = ["index: the retriever alone, no reply", "chance R10@1 0.10"] + (
            [f"pool R@10 {10 / int(pool):.3f} ({pool} stickers)"] if pool else []
        )
        gold = next(iter(scores.values()), {})
        for name, metric in (("stickers sent", "sticker_frequency_gt"), ("sticker fit", "sticker_fit_gt")):
            if metric in gold:
                parts.append(f"gold {name} {gold[metric]['score']:.2f}")
        return "; ".join(parts)


# ---------------------------------------------------------------------------------------- REPORT.md
def _md_table(headings: list[str], rows: Iterable[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(headings) + " |", "|" + "---|" * len(headings)]
    return lines + ["| " + " | ".join(cell.replace("\n", " ") for cell in row) + " |" for row in rows]


def _bullets(rows: Rows) -> list[str]:
    return [f"- {name}: {value}" for name, value in rows]


def write_demo_report(
    facts: DemoFacts, state: dict[str, dict[str, Any]], spent: dict[str, float], steps: Sequence[Step], total: float
) -> Path:
    """``REPORT.md``: every step's result in full, the model and calls of the LLM steps, every signature, and
    what each step logged."""
    lines = ["# StickerConv demo", "", f"Total time this run: {total / 60:.1f} min.", ""]
    step_rows = []
    for step in steps:
        record = state[step.name]
        built = "cached" if spent[step.name] == 0 else "built"
        model = facts.models_line(step.stores, record.get("started"), step.llm) if step.llm else "-"
        step_rows.append([step.name, model, f"{record['seconds']:.0f}", built])
    lines += _md_table(["step", "model (calls when built)", "seconds when built", "this run"], step_rows)
    lines += _pack_section(facts)
    lines += ["", "## Personas", "", *_bullets(facts.personas(state["personas"].get("llm")))]
    lines += ["", "## Simulated sessions", "", *_bullets(facts.simulate(state["simulate"].get("llm")))]
    lines += ["", "Quality of the sessions: [sessions/quality/quality.md](sessions/quality/quality.md)."]
    lines += ["", "## Dataset", "", *_bullets(facts.dataset())]
    lines += ["", "Statistics and plots: [dataset/stats/report.md](dataset/stats/report.md)."]
    lines += ["", "## PEGS", "", *_bullets(facts.pegs())]
    lines += ["", "Stage losses are in the PEGS command output below."]
    lines += _evaluation_section(facts)
    lines += _calls_section(facts, state, steps)
    lines += ["", "## Command output", ""]
    for step in steps:
        log = facts.run.log(step.name)
        if log.is_file():
            text = log.read_text(encoding="utf-8").rstrip()
            summary = f"<details><summary>{step.name}: {step.title}</summary>"
            lines += [summary, "", "```text", text, "```", "</details>"]
    path = facts.run.out / REPORT
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _pack_section(facts: DemoFacts) -> list[str]:
    lines = ["", "## Sticker pack", "", *_bullets(facts.pack())]
    searches = (read_json(facts.run.pack / PACK_FACTS) or {}).get("searches", {})
    for query, hits in searches.items():
        lines += ["", f"Search “{query}”:", ""]
        hit_rows = [[str(h["rank"]), f"{h['score']:.3f}", h["label"] or "-", h["id"], h["description"]] for h in hits]
        lines += _md_table(["#", "score", "label", "id", "description"], hit_rows)
    return lines


def _calls_section(facts: DemoFacts, state: dict[str, dict[str, Any]], steps: Sequence[Step]) -> list[str]:
    """Every LLM call of the LLM steps' builds, by model and role: the run's own record of what it ran on."""
    rows = []
    for step in steps:
        if step.llm is None:
            continue
        for (model, role), tally in facts.calls(step.stores, state[step.name].get("started")).items():
            rows.append([step.name, model, role, str(tally["calls"]), str(tally["cached"])])
    if not rows:
        return []
    return ["", "## LLM calls", "", *_md_table(["step", "model", "role", "calls", "cached"], rows)]


def _evaluation_section(facts: DemoFacts) -> list[str]:
    scores, retrieval = facts.scores(), facts.retrieval()
    if not scores and not retrieval:
        return []
    headline = facts.headline()
    rows = [[row.responder, *(figure(cell) for cell in row.cells)] for row in headline.rows]
    lines = ["", "## Evaluation on the held-out turns", "", "Cells: score [95% bootstrap interval]."]
    lines += ["", *_md_table(["responder", *headline.headings], rows), "", headline.reading + "."]
    if scores:
        systems = list(scores)
        metrics = list(dict.fromkeys(m for system in systems for m in scores[system]))
        lines += ["", "### Replies (every metric)", ""]
        table = ([m, *(figure(scores[s].get(m), 4) for s in systems)] for m in metrics)
        lines += _md_table(["metric", *systems], table)
        lines += ["", "The evaluation's own report: [eval/report.md](eval/report.md)."]
    if retrieval:
        lines += ["", "### Sticker retrieval (gold: the simulated assistant's sticker)"]
        groups = {group for payload in retrieval.values() for group in payload}
        metrics = list(dict.fromkeys(m for payload in retrieval.values() for m in payload.get("all", {})))
        for group in ("all", "seen", "unseen"):
            if group not in groups:
                continue
            lines += ["", f"Samples: {group}.", ""]
            table = ([m, *(figure(p.get(group, {}).get(m), 4) for p in retrieval.values())] for m in metrics)
            lines += _md_table(["metric", *retrieval], table)
    signatures = dict.fromkeys(
        result["signature_text"]
        for results in [*scores.values(), *(group for payload in retrieval.values() for group in payload.values())]
        for result in results.values()
        if "signature_text" in result
    )
    return [*lines, "", "### Signatures", "", *(f"- `{text}`" for text in signatures)]
