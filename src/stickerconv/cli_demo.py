"""``stickerconv demo``: from nothing to a running sticker chat on the embedded defaults.

Why a module of its own: the demo composes the other commands (pack, personas, simulation,
dataset tools, PEGS training, evaluation, serving) exactly as a user would run them one by one,
so it is the one command module that imports the others. Each step is cached: ``demo-state.json``
in the run folder records a key per step (its options and the keys of the steps it reads), so a
second run skips what is done, an interrupted step resumes (the commands it calls are
resumable), and a step whose options changed is redone from scratch together with every step
after it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from stickerconv.cli_common import UserError, console

DEMO_VERSION = 1  # bump when a step's behaviour changes, so old caches are redone
STATE_FILE = "demo-state.json"
DEMO_HEAD_LR = 2e-3  # the retrieval heads start from random and get tens of steps, not the paper's 140k
DEMO_SEARCHES = ("I failed my exam again", "We won the championship!")
SYSTEMS = ("text", "tool", "pegs-ret")  # the two LLM baselines and PEGS, predicted on the same test turns
REPORT_METRICS = ("bleu1", "bleu4", "rougeL", "dist2_corpus", "mm_relevance_f_proxy", "send_f1")
RETRIEVAL_SCORERS = ("index", "tool", "pegs")  # the index over the dialogue, the tool baseline's query, PEGS
RETRIEVAL_METRICS = ("r10@1", "r10@5", "pool_r@10", "pool_mrr")


@dataclass
class Step:
    name: str
    title: str
    outputs: list[Path]  # removed before a fresh run of the step
    params: dict[str, Any]
    run: Callable[[], None]
    after: list[str] = field(default_factory=list)  # steps whose results this one reads


class DemoState:
    """``demo-state.json``: per step, its key, whether it finished, and how long it took."""

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


def step_key(step: Step, keys: dict[str, str]) -> str:
    blob = json.dumps(
        {"v": DEMO_VERSION, "params": step.params, "after": [keys[a] for a in step.after]}, sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run_steps(steps: list[Step], state: DemoState) -> dict[str, float]:
    """Run or skip each step; returns the seconds each took this time (0 for a cached one)."""
    keys: dict[str, str] = {}
    spent: dict[str, float] = {}
    for number, step in enumerate(steps, 1):
        key = keys[step.name] = step_key(step, keys)
        record = state.steps.get(step.name, {})
        head = f"[bold][{number}/{len(steps)}] {step.title}[/]"
        if record.get("key") == key and record.get("done") and all(p.exists() for p in step.outputs):
            console.print(f"{head}: cached (took {record.get('seconds', 0):.0f}s when built)")
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
        state.steps[step.name] = {"key": key, "done": False}
        state.save()
        start = time.perf_counter()
        step.run()
        seconds = time.perf_counter() - start
        state.steps[step.name] = {
            "key": key,
            "done": True,
            "seconds": round(seconds, 1),
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        state.save()
        spent[step.name] = seconds
    return spent


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
    pegs_steps: Annotated[int, typer.Option(min=1, help="Optimiser steps of each PEGS alignment stage.")] = 40,
    joint_steps: Annotated[int, typer.Option(min=1, help="Optimiser steps of the PEGS joint (dialogue) stage.")] = 20,
    vision_steps: Annotated[int, typer.Option(min=1, help="Steps of the PEGS vision pretraining.")] = 300,
    eval_items: Annotated[int | None, typer.Option(min=1, help="Test turns each system answers (default all).")] = (
        None
    ),
    pack_limit: Annotated[int | None, typer.Option(min=8, help="Only the first N emoji of the pack (quick tries).")] = (
        None
    ),
    seed: Annotated[int, typer.Option()] = 0,
    serve: Annotated[bool, typer.Option(help="Serve the chat page at the end (--no-serve: stop after the report).")] = (
        True
    ),
    responder: Annotated[str, typer.Option(help="What the chat page talks to: pegs-ret, tool or text.")] = "pegs-ret",
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535)] = 8000,
) -> None:
    """Build everything from scratch on the embedded defaults (sticker pack, index, personas, simulated
    sessions, dataset statistics, a trained PEGS, an evaluation of the baselines and PEGS), then serve
    the web chat. Steps are cached in OUT: rerun to resume or to reuse what is built."""
    from stickerconv import cli, cli_data, cli_eval, cli_pegs, cli_serve

    if responder not in SYSTEMS:
        raise UserError(f"--responder {responder!r}: choose from {', '.join(SYSTEMS)}")
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    pack, profiles, sessions = out / "pack", out / "personas.jsonl", out / "sessions"
    dataset, pegs_dir, evaluation = out / "dataset", out / "pegs", out / "eval"
    checkpoint = pegs_dir / "final"
    train_samples, test_samples = dataset / "train.json", dataset / "test.json"

    def build_pack() -> None:
        cli.build_default(pack, styles=",".join(cli.DEFAULT_STYLES), assets=None, limit=pack_limit, as_json=False)
        cli.index(pack, embedder=cli.DEFAULT_EMBEDDER, kind="auto", template=cli.DEFAULT_TEMPLATE)
        from stickerconv.stickers.index import StickerIndex

        found = StickerIndex.load(pack)
        for query in DEMO_SEARCHES:
            cli._print_hits(query, found.search(query, k=3))

    def make_personas() -> None:
        cli.personas_generate(
            n=personas,
            out=profiles,
            seeds=None,
            threshold=0.7,
            seed=seed,
            llm=None,
            config=None,
            store=None,
            cache=None,
        )

    def simulate() -> None:
        cli.generate(
            personas=profiles,
            stickers=pack,
            out=sessions,
            llm=None,
            config=None,
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
                llm=None,
                config=None,
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
        common |= {"bootstrap": 1000, "seed": seed, "image_root": None, "llm": None, "llm_config": None}
        for name in RETRIEVAL_SCORERS:
            extra = {"scorer_name": "index" if name == "pegs" else name}
            extra["checkpoint"] = checkpoint if name == "pegs" else None
            cli_eval.retrieval(out=evaluation / f"retrieval-{name}.json", concurrency=2, **common, **extra)

    steps = [
        Step("pack", "sticker pack and index", [pack], {"limit": pack_limit}, build_pack),
        Step(
            "personas", f"{personas} personas (self-instruct)", [profiles], {"n": personas, "seed": seed}, make_personas
        ),
        Step(
            "simulate",
            "Agent4SC sessions",
            [sessions],
            {"max_turns": max_turns, "seed": seed},
            simulate,
            ["pack", "personas"],
        ),
        Step(
            "dataset",
            "dataset statistics, split, samples",
            [dataset],
            {"test": test_share, "seed": seed},
            build_dataset,
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
            ["dataset"],
        ),
        Step(
            "evaluate", "baselines and PEGS on the test turns", [evaluation], {"items": eval_items}, evaluate, ["pegs"]
        ),
    ]
    state = DemoState(out / STATE_FILE)
    spent = run_steps(steps, state)
    report = write_demo_report(out, state, spent)
    total = time.perf_counter() - started
    _print_summary(state, spent, total)
    console.print(f"report: {report}")
    if serve:
        cli_serve.serve(
            responder=responder,
            stickers=pack,
            checkpoint=checkpoint if responder.startswith("pegs") else None,
            uploads_dir=out / "uploads",  # users' images stay with the run, beside what it built
            host=host,
            port=port,
        )


def _print_summary(state: DemoState, spent: dict[str, float], total: float) -> None:
    table = Table(title="demo steps", title_justify="left")
    for column in ("step", "this run", "when built"):
        table.add_column(column)
    for name, seconds in spent.items():
        table.add_row(name, "cached" if seconds == 0 else f"{seconds:.0f}s", f"{state.steps[name]['seconds']:.0f}s")
    console.print(table)
    console.print(f"total time {total / 60:.1f} min ({total:.0f}s)")


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _figure(result: dict[str, Any] | None) -> str:
    if not result:
        return "-"
    ci = result.get("ci")
    return f"{result['score']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def write_demo_report(out: Path, state: DemoState, spent: dict[str, float]) -> Path:
    """``REPORT.md``: the headline figures of every step and where each full report is."""
    lines = ["# StickerConv demo", "", "| step | seconds when built | this run |", "|---|---:|---|"]
    for name, seconds in spent.items():
        lines.append(f"| {name} | {state.steps[name]['seconds']:.0f} | {'cached' if seconds == 0 else 'built'} |")
    summary = _read_json(out / "sessions" / "summary.json") or {}
    stats = _read_json(out / "dataset" / "stats" / "stats.json") or {}
    if stats:
        stickers = stats["stickers"]
        lines += [
            "",
            "## Simulated dataset",
            "",
            f"{stats['sessions']} sessions kept ({summary.get('rejected', 0)} rejected), "
            f"{stats['turns']['total']} turns, "
            f"{stickers['total']} stickers ({stickers['unique']} distinct). Statistics and plots: "
            "[dataset/stats/report.md](dataset/stats/report.md); quality: sessions/quality/.",
        ]
    scores = _read_json(out / "eval" / "scores.json") or {}
    if scores:
        systems = list(scores)
        metrics = [m for m in REPORT_METRICS if any(m in scores[s] for s in systems)]
        lines += ["", "## Replies on the held-out turns", "", "| metric | " + " | ".join(systems) + " |"]
        lines.append("|---|" + "---:|" * len(systems))
        for metric in metrics:
            lines.append(f"| {metric} | " + " | ".join(_figure(scores[s].get(metric)) for s in systems) + " |")
        lines += ["", "All metrics, intervals and signatures: [eval/report.md](eval/report.md)."]
    files = {name: out / "eval" / f"retrieval-{name}.json" for name in RETRIEVAL_SCORERS}
    retrieval = {name: _read_json(path) for name, path in files.items() if path.is_file()}
    if retrieval:
        lines += [
            "",
            "## Sticker retrieval on the held-out turns (gold: the simulated assistant's sticker)",
            "",
            "| scorer | " + " | ".join(RETRIEVAL_METRICS) + " |",
            "|---|" + "---:|" * len(RETRIEVAL_METRICS),
        ]
        for name, payload in retrieval.items():
            cells = [_figure(payload["all"].get(m)) for m in RETRIEVAL_METRICS]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        pool = next(iter(retrieval.values()))["all"].get("pool_r@10", {}).get("signature", {}).get("pool")
        chance = f"; full-pool R@10 {10 / int(pool):.3f} ({pool} stickers)" if pool else ""
        lines += ["", f"Chance: R10@1 0.100, R10@5 0.500{chance}. Signatures are in the JSON files in eval/."]
    path = out / "REPORT.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
