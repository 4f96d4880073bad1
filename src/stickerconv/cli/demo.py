"""``stickerconv demo``: from nothing to a running sticker chat, on the embedded defaults or on the user's model.

Why a module of its own: the demo composes the other commands (pack, personas, simulation, dataset
tools, PEGS training, evaluation, serving) exactly as a user would run them one by one, so it is the
one command module that imports the others. Each step is cached: ``demo-state.json`` in the run folder
records a key per step (its options, the model of an LLM step, and the keys of the steps it reads), so
a second run skips what is done, an interrupted step resumes (the commands it calls are resumable), and
a step whose options or model changed is redone from scratch together with every step after it.

What the commands print goes to ``logs/<step>.log`` (``cli_common.console_to``); the console shows one
compact table per step, read back from the step's files (so a cached step shows its result too), and
``REPORT.md`` holds the details: every figure with its interval and signature, the models and their
calls, and each step's full command output.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich import box
from rich.console import RenderableType
from rich.padding import Padding
from rich.table import Table

from stickerconv.cli.common import UserError, console, console_to, err

if TYPE_CHECKING:
    from stickerconv.llm import LLMConfig

STATE_FILE = "demo-state.json"
LOGS = "logs"
PACK_FACTS = "demo-pack.json"  # written into the pack folder: what the pack step shows
DEMO_HEAD_LR = 2e-3  # the retrieval heads start from random and get tens of steps, not the paper's 140k
DEMO_SEARCHES = ("I failed my exam again", "We won the championship!")
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


@dataclass
class Step:
    name: str
    title: str
    outputs: list[Path]  # removed before a fresh run of the step
    params: dict[str, Any]
    run: Callable[[], None]
    show: Callable[[], list[tuple[str, str]] | RenderableType]  # the result, read from the step's files
    after: list[str] = field(default_factory=list)  # steps whose results this one reads
    llm: str | None = None  # the model an LLM step runs on, as the user named it
    stores: list[Path] = field(default_factory=list)  # the LLM stores whose ledgers record its calls


class DemoState:
    """``demo-state.json``: per step, its key, whether it finished, when it started, how long it took and
    the model it ran on."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.steps: dict[str, dict[str, Any]] = (
                json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
            )
        except ValueError as exc:
            raise UserError(f"{path}: not a demo state file ({exc}); delete it to redo every step") from None

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.steps, indent=2) + "\n", encoding="utf-8")
        tmp.replace(self.path)


@dataclass(frozen=True)
class DemoModel:
    """The LLM of every LLM step: ``--llm`` over the ``--config`` file's, as every other command takes them."""

    config: LLMConfig
    config_file: Path | None

    @classmethod
    def resolve(cls, llm: str | None, config: Path | None) -> DemoModel:
        from stickerconv.llm import LLMConfig
        from stickerconv.llm.config import parse_llm_spec

        cfg = LLMConfig.load(config) if config else LLMConfig()
        if llm is not None:
            cfg = cfg.model_copy(update={"llm": llm})
        for spec in cls._specs(cfg):
            parse_llm_spec(spec)  # a wrong --llm fails now, not after the pack is built
        return cls(cfg, config)

    @staticmethod
    def _specs(cfg: LLMConfig) -> list[str]:
        return [cfg.llm, *(role.llm for role in cfg.roles.values() if role.llm)]

    def describe(self) -> str:
        """``openai:gpt-4o-mini``, with the roles the config file gives a model of their own."""
        roles = [f"{name}: {role.llm}" for name, role in self.config.roles.items() if role.llm]
        return self.config.llm + (f" ({'; '.join(roles)})" if roles else "")

    def identity(self) -> dict[str, Any]:
        """What makes another model, for the step keys: the models, the config file's content, and the server
        of an OpenAI-compatible model (the same model name on another server is another model)."""
        remote = any(spec.startswith("openai") for spec in self._specs(self.config))
        server = (self.config.base_url or os.environ.get("OPENAI_BASE_URL")) if remote else None
        digest = hashlib.sha256(self.config_file.read_bytes()).hexdigest()[:16] if self.config_file else None
        return {"llm": self.describe(), "config": digest, "server": server}


def step_key(step: Step, keys: dict[str, str]) -> str:
    blob = json.dumps({"params": step.params, "after": [keys[a] for a in step.after]}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")  # the LLM ledger's timestamp form


def run_steps(steps: list[Step], state: DemoState, logs: Path) -> dict[str, float]:
    """Run or skip each step, then show its result; returns the seconds each took this time (0 if cached)."""
    keys: dict[str, str] = {}
    spent: dict[str, float] = {}
    for number, step in enumerate(steps, 1):
        key = keys[step.name] = step_key(step, keys)
        record = state.steps.get(step.name, {})
        head = f"[bold][{number}/{len(steps)}] {step.title}[/]"
        if record.get("key") == key and record.get("done") and all(p.exists() for p in step.outputs):
            console.print(f"{head}: cached (took {record.get('seconds', 0):.0f}s when built)")
            console.print(_shown(step))
            spent[step.name] = 0.0
            continue
        if record.get("key") == key:
            console.print(f"{head}: resuming")
        else:
            if any(p.exists() for p in step.outputs):
                console.print(f"{head}: options changed, redoing it")
            else:
                console.print(head)
            for path in step.outputs:
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        started = record.get("started") if record.get("key") == key else None
        state.steps[step.name] = {"key": key, "done": False, "started": started or _now(), "llm": step.llm}
        state.save()
        start = time.perf_counter()
        log = logs / f"{step.name}.log"
        try:
            with console_to(log):
                step.run()
        except BaseException:
            err.print(f"{step.title}: what its commands printed is in {log}")
            raise
        seconds = time.perf_counter() - start
        state.steps[step.name] |= {
            "done": True,
            "seconds": round(seconds, 1),
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        state.save()
        spent[step.name] = seconds
        console.print(_shown(step, seconds))
    return spent


def _shown(step: Step, seconds: float | None = None) -> RenderableType:
    """A step's result as the console shows it: its own table, or its rows as an indented two-column grid."""
    shown = step.show()
    if not isinstance(shown, list):
        return shown
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim")
    grid.add_column()
    for name, value in shown + ([("time", f"{seconds:.0f}s")] if seconds is not None else []):
        grid.add_row(name, value)
    return Padding(grid, (0, 0, 0, 2))


def _samples_with_stickers(path: Path) -> int:
    return sum(1 for s in json.loads(path.read_text(encoding="utf-8")) if s.get("response_image"))


def demo(
    out: Annotated[Path, typer.Option(help="Run folder: every step's output and demo-state.json.")] = Path("runs/demo"),
    personas: Annotated[int, typer.Option(min=2, help="User profiles to generate; one session each.")] = 5,
    max_turns: Annotated[int, typer.Option(min=1, max=20, help="Turns per simulated session.")] = 4,
    test_share: Annotated[float, typer.Option(min=0.05, max=0.9, help="Share of personas held out for testing.")] = (
        0.34
    ),
    pegs_config: Annotated[str, typer.Option(help="PEGS preset (small, tiny) or config JSON.")] = "small",
    pegs_steps: Annotated[int, typer.Option(min=1, help="Optimiser steps of each PEGS alignment stage.")] = 25,
    joint_steps: Annotated[int, typer.Option(min=1, help="Optimiser steps of the PEGS joint (dialogue) stage.")] = 8,
    vision_steps: Annotated[int, typer.Option(min=1, help="Steps of the PEGS vision pretraining.")] = 150,
    eval_items: Annotated[int | None, typer.Option(min=1, help="Test turns each system answers (default all).")] = (
        None
    ),
    pack_limit: Annotated[int | None, typer.Option(min=8, help="Only the first N emoji of the pack (quick tries).")] = (
        None
    ),
    llm: Annotated[
        str | None,
        typer.Option(
            "--llm",
            help="The model of every LLM step (personas, simulation, the text and tool baselines, the chat): "
            "local (default, embedded), local:/path.gguf or openai:MODEL (OPENAI_BASE_URL, OPENAI_API_KEY).",
        ),
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="LLM config file (TOML or JSON), per-role models; --llm wins.")
    ] = None,
    seed: Annotated[int, typer.Option()] = 0,
    serve: Annotated[bool, typer.Option(help="Serve the chat page at the end (--no-serve: stop after the report).")] = (
        True
    ),
    responder: Annotated[str, typer.Option(help="What the chat page talks to: pegs-ret, tool or text.")] = "pegs-ret",
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535)] = 8000,
) -> None:
    """Build everything from scratch (sticker pack, index, personas, simulated sessions, dataset statistics,
    a trained PEGS, an evaluation of the baselines and PEGS), then serve the web chat. The LLM steps run on
    the embedded model, or on yours with --llm / --config. Steps are cached in OUT: rerun to resume or to
    reuse what is built; the console shows each step's result, OUT/REPORT.md everything."""
    from stickerconv.cli import data as cli_data
    from stickerconv.cli import eval as cli_eval
    from stickerconv.cli import pegs as cli_pegs
    from stickerconv.cli import root as cli
    from stickerconv.cli import serve as cli_serve

    if responder not in SYSTEMS:
        raise UserError(f"--responder {responder!r}: choose from {', '.join(SYSTEMS)}")
    model = DemoModel.resolve(llm, config)
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    pack, profiles, sessions = out / "pack", out / "personas.jsonl", out / "sessions"
    dataset, pegs_dir, evaluation = out / "dataset", out / "pegs", out / "eval"
    checkpoint = pegs_dir / "final"
    train_samples, test_samples = dataset / "train.json", dataset / "test.json"

    def build_pack() -> None:
        from stickerconv.stickers.index import StickerIndex

        cli.build_default(pack, styles=",".join(cli.DEFAULT_STYLES), assets=None, limit=pack_limit, as_json=False)
        cli.index(pack, embedder=cli.DEFAULT_EMBEDDER, kind="auto", template=cli.DEFAULT_TEMPLATE)
        found = StickerIndex.load(pack)
        searches = {}
        for query in DEMO_SEARCHES:
            hits = found.search(query, k=3)
            cli._print_hits(query, hits)
            searches[query] = [hit.to_dict() for hit in hits]
        labels = Counter(s.label.value if s.label else "-" for s in found.stickers)
        facts = {"stickers": len(found), "labels": dict(labels.most_common()), "searches": searches}
        facts |= {k: v for k, v in StickerIndex.read_meta(pack).items() if k in ("embedder", "kind")}
        (pack / PACK_FACTS).write_text(json.dumps(facts, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")

    def make_personas() -> None:
        cli.personas_generate(
            n=personas,
            out=profiles,
            seeds=None,
            threshold=0.7,
            seed=seed,
            llm=llm,
            config=config,
            store=None,
            cache=None,
        )

    def simulate() -> None:
        cli.generate(
            personas=profiles,
            stickers=pack,
            out=sessions,
            llm=llm,
            config=config,
            concurrency=2,
            max_turns=max_turns,
            limit=None,
            seed=seed,
            cache=None,
            executor="local",
            ray_address=None,
            shards=None,
            call_pattern="lean",
        )

    def build_dataset() -> None:
        conversations = sessions / "conversations.jsonl"
        if not conversations.is_file():
            raise UserError(f"{conversations}: the simulation kept no session; rerun with more --personas")
        cli_data.stats(conversations, out=dataset / "stats", profiles=profiles, as_json=False)
        shares = f"{1 - test_share:.4f},0,{test_share:.4f}"
        cli_data.split(conversations, out=dataset / "split", ratios=shares, seed=seed)
        for name, target in (("train", train_samples), ("test", test_samples)):
            cli_data.convert(
                dataset / "split" / f"{name}.jsonl",
                to="samples",
                out=target,
                style="v1.5",
                stickers=pack,
                image_root=None,
                image_dir=None,
                system_prompt=None,
                require_images=False,
            )
        for target in (train_samples, test_samples):
            if _samples_with_stickers(target) == 0:
                raise UserError(
                    f"{target}: no assistant turn with a sticker, so PEGS cannot be trained or scored; "
                    "rerun with more --personas or --max-turns"
                )

    def train_pegs() -> None:
        cli_pegs.train(
            config=pegs_config,
            stickers=pack,
            out=pegs_dir,
            data=train_samples,
            stages=",".join(cli_pegs.STAGE_ORDER),
            steps=pegs_steps,
            joint_steps=joint_steps,
            batch_size=4,
            lr=None,
            head_lr=DEMO_HEAD_LR,
            image_root=None,
            seed=seed,
            vision_steps=vision_steps,
        )

    def evaluate() -> None:
        evaluation.mkdir(parents=True, exist_ok=True)
        preds = []
        for system in SYSTEMS:
            pred = evaluation / f"pred-{system}.json"
            cli_eval.predict(
                responder=system,
                data=test_samples,
                out=pred,
                stickers=pack,
                llm=llm,
                config=config,
                concurrency=2,
                limit=eval_items,
                style="v1.5",
                image_root=None,
                cache=None,
                checkpoint=checkpoint if system.startswith("pegs") else None,
            )
            preds.append(pred)
        cli_eval.score(
            pred=preds,
            out=evaluation,
            metrics="bleu,rouge,dist",
            name=list(SYSTEMS),
            encoder="proxy",
            stickers=pack,
            image_root=None,
            judge_llm=None,
            judge_items=None,
            judge_n=None,
            epitome=None,
            bootstrap=1000,
            seed=seed,
        )
        common = {"data": test_samples, "stickers": pack, "train": train_samples, "context": "input_text"}
        common |= {"bootstrap": 1000, "seed": seed, "image_root": None, "llm": llm, "llm_config": config}
        for name in RETRIEVAL_SCORERS:
            extra = {"scorer_name": "index" if name == "pegs" else name}
            extra["checkpoint"] = checkpoint if name == "pegs" else None
            cli_eval.retrieval(out=evaluation / f"retrieval-{name}.json", concurrency=2, **common, **extra)

    facts, state = DemoFacts(out), DemoState(out / STATE_FILE)
    on_model = {"llm": model.identity()}  # in the key of every LLM step: another model redoes them
    steps = [
        Step("pack", "sticker pack and index", [pack], {"limit": pack_limit}, build_pack, facts.pack),
        Step(
            "personas",
            f"{personas} personas (self-instruct)",
            [profiles],
            {"n": personas, "seed": seed} | on_model,
            make_personas,
            lambda: facts.personas(state, model.describe()),
            llm=model.describe(),
            stores=[facts.personas_store],
        ),
        Step(
            "simulate",
            "Agent4SC sessions",
            [sessions],
            {"max_turns": max_turns, "seed": seed} | on_model,
            simulate,
            lambda: facts.simulate(state, model.describe()),
            ["pack", "personas"],
            llm=model.describe(),
            stores=[facts.simulate_store],
        ),
        Step(
            "dataset",
            "dataset statistics, split, samples",
            [dataset],
            {"test": test_share, "seed": seed},
            build_dataset,
            facts.dataset,
            ["simulate"],
        ),
        Step(
            "pegs",
            f"PEGS {pegs_config}",
            [pegs_dir],
            {
                "config": pegs_config,
                "stages": cli_pegs.STAGE_ORDER,
                "steps": pegs_steps,
                "joint": joint_steps,
                "vision": vision_steps,
                "seed": seed,
            },
            train_pegs,
            facts.pegs,
            ["dataset"],
        ),
        Step(
            "evaluate",
            "baselines and PEGS on the test turns",
            [evaluation],
            {"items": eval_items} | on_model,
            evaluate,
            facts.evaluation,
            ["pegs"],
            llm=model.describe(),
            stores=facts.evaluation_stores,
        ),
    ]
    spent = run_steps(steps, state, out / LOGS)
    total = time.perf_counter() - started
    report = write_demo_report(facts, state, spent, steps, total)
    console.print(f"total time {total / 60:.1f} min ({total:.0f}s)")
    console.print(f"report: {report}")
    if serve:
        cli_serve.serve(
            responder=responder,
            stickers=pack,
            checkpoint=checkpoint if responder.startswith("pegs") else None,
            uploads_dir=out / "uploads",  # users' images stay with the run, beside what it built
            host=host,
            port=port,
            llm=llm,
            config=config,
        )


# ---------------------------------------------------------------------------------------- reading the steps' files
def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _counts(counts: dict[str, int]) -> str:
    """``Sadness 2, Anger 1``, largest first."""
    return ", ".join(f"{name} {n}" for name, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))) or "none"


def _figure(result: dict[str, Any] | None, digits: int = 3) -> str:
    """``0.300 [0.100, 0.500]`` from a result's JSON (score and 95% interval), ``-`` without one."""
    if not result:
        return "-"
    ci = result.get("ci")
    return f"{result['score']:.{digits}f}" + (f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else "")


def _cell(result: dict[str, Any] | None) -> str:
    """A console cell: the score over its interval (``0.30`` / ``0.10-0.50``), narrow enough for 80 columns."""
    if not result:
        return "-"
    ci = result.get("ci")
    return f"{result['score']:.2f}" + (f"\n{ci[0]:.2f}-{ci[1]:.2f}" if ci else "")


@dataclass
class DemoFacts:
    """What each step left in the run folder, read back for the console tables and the report."""

    out: Path

    @property
    def personas_store(self) -> Path:
        return self.out / "personas.llm.sqlite"  # where `personas generate` keeps its ledger by default

    @property
    def simulate_store(self) -> Path:
        return self.out / "sessions" / "llm.sqlite"

    @property
    def evaluation_stores(self) -> list[Path]:
        preds = [self.out / "eval" / f"pred-{system}.json.llm.sqlite" for system in SYSTEMS]
        return [*preds, self.out / "eval" / "retrieval-tool.llm.sqlite"]

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

    def pack(self) -> list[tuple[str, str]]:
        facts = _read_json(self.out / "pack" / PACK_FACTS) or {}
        if not facts:
            return [("pack", "no record of the build")]
        rows = [
            ("stickers", f"{facts['stickers']} ({_counts(facts['labels'])})"),
            ("index", f"{facts.get('kind', '?')}, {facts.get('embedder', '?')}"),
        ]
        for query, hits in facts["searches"].items():
            rows.append(("search", f"“{query}”: " + ", ".join(f"{h['label'] or '-'} {h['id']}" for h in hits)))
        return rows

    def personas(self, state: DemoState, configured: str) -> list[tuple[str, str]]:
        path = self.out / "personas.jsonl"
        if not path.is_file():
            return [("personas", "none")]
        from stickerconv.agent4sc.personas import load_personas

        emotions = Counter(p.emotion for p in load_personas(path))
        since = state.steps.get("personas", {}).get("started")
        return [
            ("personas", f"{sum(emotions.values())} ({_counts(emotions)})"),
            ("model", self.models_line([self.personas_store], since, configured)),
        ]

    def sessions_summary(self) -> dict[str, Any]:
        return _read_json(self.out / "sessions" / "summary.json") or {}

    def simulate(self, state: DemoState, configured: str) -> list[tuple[str, str]]:
        summary = self.sessions_summary()
        since = state.steps.get("simulate", {}).get("started")
        kept = f"{summary.get('kept', 0)} kept, {summary.get('rejected', 0)} rejected (no sticker or no complete turn)"
        return [("sessions", kept), ("model", self.models_line([self.simulate_store], since, configured))]

    def dataset(self) -> list[tuple[str, str]]:
        stats = _read_json(self.out / "dataset" / "stats" / "stats.json") or {}
        split = _read_json(self.out / "dataset" / "split" / "split.json") or {}
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
            rows.append(("ended by", f"{_counts(summary['end_reasons'])} (of {simulated} simulated{turns})"))
        parts = []
        for name in ("train", "test"):
            samples = _read_json(self.out / "dataset" / f"{name}.json") or []
            with_sticker = sum(1 for s in samples if s.get("response_image"))
            parts.append(
                f"{name} {split.get('sessions', {}).get(name, '?')} sessions -> {len(samples)} turns "
                f"({with_sticker} with a sticker reply)"
            )
        return [*rows, ("split", "; ".join(parts))]

    def distill(self) -> dict[str, Any] | None:
        from stickerconv.pegs.distill import DISTILL_RECORD

        found = sorted((self.out / "pegs").glob(f"*-distill/{DISTILL_RECORD}"))
        return _read_json(found[-1]) if found else None

    def pegs(self) -> list[tuple[str, str]]:
        folder = self.out / "pegs"
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
        return _read_json(self.out / "eval" / "scores.json") or {}

    def retrieval(self) -> dict[str, dict[str, Any]]:
        files = {name: self.out / "eval" / f"retrieval-{name}.json" for name in RETRIEVAL_SCORERS}
        return {name: payload for name, path in files.items() if (payload := _read_json(path))}

    def headline(self, cell: Callable[[dict[str, Any] | None], str]) -> tuple[list[str], list[list[str]]]:
        """The evaluation's rows (the three responders, then the index retriever alone) and their cells."""
        scores, retrieval = self.scores(), self.retrieval()
        rows = []
        for row in (*SYSTEMS, "index"):
            cells = [row]
            for _, kind, metric in HEADLINE:
                if kind == "retrieval":
                    cells.append(cell(retrieval.get(RETRIEVAL_OF[row], {}).get("all", {}).get(metric)))
                else:
                    cells.append(cell(scores.get(row, {}).get(metric)))
            rows.append(cells)
        return [heading for heading, _, _ in HEADLINE], rows

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

    def evaluation(self) -> RenderableType:
        headings, rows = self.headline(_cell)
        samples = next(iter(self.scores().values()), {}).get("sticker_frequency", {}).get("n_items", "?")
        table = Table(
            title=f"held-out turns: {samples}; cells: score [95% interval]",
            title_justify="left",
            caption=self.chance(),
            caption_justify="left",
            box=box.SIMPLE_HEAD,
        )
        table.add_column("responder")
        for heading in headings:
            table.add_column(heading, justify="right")
        for cells in rows:
            table.add_row(*cells)
        return table


# ---------------------------------------------------------------------------------------- REPORT.md
def _md_table(headings: list[str], rows: Iterable[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(headings) + " |", "|" + "---|" * len(headings)]
    return lines + ["| " + " | ".join(cell.replace("\n", " ") for cell in row) + " |" for row in rows]


def write_demo_report(
    facts: DemoFacts, state: DemoState, spent: dict[str, float], steps: list[Step], total: float
) -> Path:
    """``REPORT.md``: every step's result in full, the model and calls of the LLM steps, every signature,
    and what each step's commands printed."""
    out = facts.out
    lines = ["# StickerConv demo", "", f"Total time this run: {total / 60:.1f} min.", ""]
    step_rows = []
    for step in steps:
        record = state.steps[step.name]
        built = "cached" if spent[step.name] == 0 else "built"
        model = facts.models_line(step.stores, record.get("started"), step.llm) if step.llm else "-"
        step_rows.append([step.name, model, f"{record['seconds']:.0f}", built])
    lines += _md_table(["step", "model (calls when built)", "seconds when built", "this run"], step_rows)

    lines += ["", "## Sticker pack", ""]
    lines += [f"- {name}: {value}" for name, value in facts.pack()]
    searches = (_read_json(out / "pack" / PACK_FACTS) or {}).get("searches", {})
    for query, hits in searches.items():
        lines += ["", f"Search “{query}”:", ""]
        hit_rows = [[str(h["rank"]), f"{h['score']:.3f}", h["label"] or "-", h["id"], h["description"]] for h in hits]
        lines += _md_table(["#", "score", "label", "id", "description"], hit_rows)

    lines += ["", "## Personas", ""]
    lines += [f"- {name}: {value}" for name, value in facts.personas(state, state.steps["personas"].get("llm"))]

    lines += ["", "## Simulated sessions", ""]
    lines += [f"- {name}: {value}" for name, value in facts.simulate(state, state.steps["simulate"].get("llm"))]
    lines += ["", "Quality of the sessions: [sessions/quality/quality.md](sessions/quality/quality.md)."]
    lines += ["", "## Dataset", ""]
    lines += [f"- {name}: {value}" for name, value in facts.dataset()]
    lines += ["", "Statistics and plots: [dataset/stats/report.md](dataset/stats/report.md)."]

    lines += ["", "## PEGS", ""]
    lines += [f"- {name}: {value}" for name, value in facts.pegs()]
    lines += ["", "Stage losses are in the PEGS command output below."]

    lines += _evaluation_section(facts)
    lines += _calls_section(facts, state, steps)
    lines += ["", "## Command output", ""]
    for step in steps:
        log = out / LOGS / f"{step.name}.log"
        if log.is_file():
            text = log.read_text(encoding="utf-8").rstrip()
            lines += [
                f"<details><summary>{step.name}: {step.title}</summary>",
                "",
                "```text",
                text,
                "```",
                "</details>",
            ]
    path = out / "REPORT.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _calls_section(facts: DemoFacts, state: DemoState, steps: list[Step]) -> list[str]:
    """Every LLM call of the LLM steps' builds, by model and role: the run's own record of what it ran on."""
    rows = []
    for step in steps:
        if step.llm is None:
            continue
        for (model, role), tally in facts.calls(step.stores, state.steps[step.name].get("started")).items():
            rows.append([step.name, model, role, str(tally["calls"]), str(tally["cached"])])
    if not rows:
        return []
    return ["", "## LLM calls", "", *_md_table(["step", "model", "role", "calls", "cached"], rows)]


def _evaluation_section(facts: DemoFacts) -> list[str]:
    scores, retrieval = facts.scores(), facts.retrieval()
    if not scores and not retrieval:
        return []
    headings, rows = facts.headline(_figure)
    lines = ["", "## Evaluation on the held-out turns", "", "Cells: score [95% bootstrap interval]."]
    lines += ["", *_md_table(["responder", *headings], rows), "", facts.chance() + "."]
    if scores:
        systems = list(scores)
        metrics = list(dict.fromkeys(m for system in systems for m in scores[system]))
        lines += ["", "### Replies (every metric)", ""]
        table = ([m, *(_figure(scores[s].get(m), 4) for s in systems)] for m in metrics)
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
            table = ([m, *(_figure(p.get(group, {}).get(m), 4) for p in retrieval.values())] for m in metrics)
            lines += _md_table(["metric", *retrieval], table)
    signatures = dict.fromkeys(
        result["signature_text"]
        for results in [*scores.values(), *(group for payload in retrieval.values() for group in payload.values())]
        for result in results.values()
        if "signature_text" in result
    )
    lines += ["", "### Signatures", "", *(f"- `{text}`" for text in signatures)]
    return lines
