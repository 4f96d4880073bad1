"""The ``stickerconv`` command. Commands parse options, call library functions and print results;
all user-facing output happens here. Heavy modules are imported inside commands so that
``stickerconv --help`` starts instantly.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from stickerconv.cli.annotate import annotate as annotate_command
from stickerconv.cli.common import UserError, console, err, progress_bar
from stickerconv.cli.data import data_app
from stickerconv.cli.demo import demo as demo_command
from stickerconv.cli.eval import eval_app
from stickerconv.cli.pegs import pegs_app
from stickerconv.cli.serve import serve as serve_command
from stickerconv.schema import EMOTION_LABELS
from stickerconv.stickers.embed import DEFAULT_EMBEDDER
from stickerconv.stickers.emoji_pack import DEFAULT_STYLES
from stickerconv.stickers.index import DEFAULT_EMOTION_WEIGHT, DEFAULT_TEMPLATE, TEXT_TEMPLATES

app = typer.Typer(
    help="StickerConv: multimodal empathetic dialogue with stickers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
stickers_app = typer.Typer(help="Build, ingest, index and search sticker libraries.", no_args_is_help=True)
app.add_typer(stickers_app, name="stickers")
stickers_app.command("annotate")(annotate_command)
llm_app = typer.Typer(help="Talk to the configured LLMs and inspect the call ledger.", no_args_is_help=True)
app.add_typer(llm_app, name="llm")
personas_app = typer.Typer(help="Check and generate user personas.", no_args_is_help=True)
app.add_typer(personas_app, name="personas")
app.add_typer(data_app, name="data")
app.add_typer(eval_app, name="eval")
app.add_typer(pegs_app, name="pegs")
app.command("serve")(serve_command)
app.command("demo")(demo_command)

DEFAULT_LIBRARY = Path("runs/default-pack")


def _labels_option(labels: list[str] | None) -> list[str] | None:
    if not labels:
        return None
    by_lower = {name.lower(): name for name in EMOTION_LABELS}
    out = []
    for label in labels:
        if label.lower() not in by_lower:
            raise UserError(f"unknown label {label!r}; choose from {', '.join(EMOTION_LABELS)}")
        out.append(by_lower[label.lower()])
    return out


# ---------------------------------------------------------------------------- stickers


@stickers_app.command("build-default")
def build_default(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write the pack into.")],
    styles: Annotated[str, typer.Option(help="Comma-separated styles: noto, twemoji, openmoji (CC BY-SA).")] = ",".join(
        DEFAULT_STYLES
    ),
    assets: Annotated[
        Path | None, typer.Option(help="node_modules folder holding emojibase-data and the SVG sets.")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Render only the first N emoji (for quick tries).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the build report as JSON.")] = False,
) -> None:
    """Render the embedded default sticker pack (emoji as stickers) with text and emotion labels."""
    from stickerconv.stickers.emoji_pack import build_default_pack

    style_list = [s.strip() for s in styles.split(",") if s.strip()]
    start = time.perf_counter()
    with progress_bar("rendering stickers") as update:
        report = build_default_pack(out_dir, style_list, assets=assets, limit=limit, on_progress=update)
    if as_json:
        console.print_json(json.dumps(report.to_dict()))
        return
    console.print(f"[bold]{report.stickers}[/] stickers written to {out_dir} in {time.perf_counter() - start:.1f}s")
    console.print("per style: " + ", ".join(f"{k} {v}" for k, v in report.per_style.items()))
    console.print("labels: " + ", ".join(f"{k} {v}" for k, v in report.labels.items()))
    for style, codes in report.missing.items():
        console.print(
            f"[yellow]{style}: {len(codes)} emoji have no image in this set and were left out[/] "
            f"(listed in {out_dir / 'build_report.json'})"
        )


@stickers_app.command("ingest")
def ingest(
    src_dir: Annotated[Path, typer.Argument(help="Folder of images (SER30K theme/sticker_N.jpg, or flat).")],
    out_dir: Annotated[Path, typer.Argument(help="New library folder.")],
    labels: Annotated[
        Path | None,
        typer.Option(
            help="Annotations: a JSON object {image name: label}, or records (JSONL, JSON array, CSV) with "
            "image + label/description/emotion/recommendation."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Turn a folder of sticker images into a library; bad files are reported and skipped."""
    from stickerconv.stickers.ingest import ingest_folder

    with progress_bar("checking images") as update:
        report = ingest_folder(src_dir, out_dir, labels, on_progress=update)
    if as_json:
        console.print_json(
            json.dumps(
                {
                    "added": report.added,
                    "annotated": report.annotated,
                    "bad": [{"path": str(b.path), "reason": b.reason} for b in report.bad],
                    "skipped_non_image_ext": [str(p) for p in report.skipped_non_image_ext],
                    "unmatched_annotations": report.unmatched_annotations,
                }
            )
        )
        return
    for bad in report.bad:
        err.print(f"[yellow]skipped[/] {escape(str(bad.path))}: {escape(bad.reason)}")
    for path in report.skipped_non_image_ext:
        err.print(f"[yellow]skipped[/] {escape(str(path))}: not an image file extension")
    console.print(
        f"[bold]{report.added}[/] stickers added to {out_dir}; {len(report.bad)} bad file(s), "
        f"{len(report.skipped_non_image_ext)} non-image file(s) skipped; {report.annotated} annotated"
    )
    if report.unmatched_annotations:
        console.print(
            f"[yellow]{len(report.unmatched_annotations)} annotation(s) matched no image[/] "
            f"(e.g. {report.unmatched_annotations[0]})"
        )


@stickers_app.command("index")
def index(
    lib_dir: Annotated[Path, typer.Argument(help="Sticker library folder.")],
    embedder: Annotated[
        str, typer.Option(help="minilm (offline, int8 ONNX), minilm-st (fp32), or a sentence-transformers model.")
    ] = DEFAULT_EMBEDDER,
    kind: Annotated[str, typer.Option(help="auto (exact up to 100k stickers, else FAISS IVF), exact or ivf.")] = "auto",
    template: Annotated[str, typer.Option(help="Indexed text: " + ", ".join(TEXT_TEMPLATES) + ".")] = DEFAULT_TEMPLATE,
) -> None:
    """Embed every sticker's text and save the index in LIB_DIR/index/."""
    from stickerconv.stickers.embed import load_embedder
    from stickerconv.stickers.index import StickerIndex
    from stickerconv.stickers.library import StickerLibrary

    start = time.perf_counter()
    library = StickerLibrary.load(lib_dir)
    model = load_embedder(embedder)
    with progress_bar(f"embedding with {model.name}") as update:
        built, skipped = StickerIndex.build(library, model, kind=kind, template=template, on_progress=update)
    folder = built.save()
    console.print(
        f"indexed [bold]{len(built)}[/] stickers with {model.name} ({built.ann.kind}) into {folder} "
        f"in {time.perf_counter() - start:.1f}s"
    )
    if skipped:
        console.print(
            f"[yellow]{len(skipped)} sticker(s) have no text and were not indexed[/] "
            f"(e.g. {skipped[0].id}); annotate them with `stickerconv stickers annotate`"
        )


@stickers_app.command("search")
def search(
    lib_dir: Annotated[Path, typer.Argument(help="Sticker library folder (indexed).")],
    query: Annotated[str, typer.Argument(help="What the sticker should express.")],
    k: Annotated[int, typer.Option("-k", "--top", min=1, help="How many stickers.")] = 10,
    label: Annotated[list[str] | None, typer.Option(help="Only stickers with this label (repeatable).")] = None,
    embedder: Annotated[str | None, typer.Option(help="Must match the index's embedder (default: that one).")] = None,
    emotion_weight: Annotated[
        float, typer.Option(min=0.0, help="Bonus for stickers whose label the query's emotion words name; 0 = off.")
    ] = DEFAULT_EMOTION_WEIGHT,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False,
) -> None:
    """Print the stickers that best match QUERY."""
    from stickerconv.stickers.index import StickerIndex

    found = StickerIndex.load(lib_dir, embedder)
    found.emotion_weight = emotion_weight
    hits = found.search(query, k, _labels_option(label))
    if as_json:
        typer.echo(json.dumps([h.to_dict() for h in hits], ensure_ascii=False, indent=2))
        return
    _print_hits(query, hits)


def _print_hits(query: str, hits) -> None:
    table = Table(title=f"“{query}”", title_justify="left")
    for column in ("#", "score", "label", "id", "description"):
        table.add_column(column, overflow="fold")
    for hit in hits:
        s = hit.sticker
        table.add_row(
            str(hit.rank), f"{hit.score:.3f}", s.label.value if s.label else "-", escape(s.id), escape(s.description)
        )
    console.print(table)


# ---------------------------------------------------------------------------- llm

LLMOption = Annotated[
    str | None, typer.Option("--llm", help="local (default), local:/path/model.gguf or openai:MODEL_NAME.")
]
ConfigOption = Annotated[Path | None, typer.Option("--config", help="LLM config file (TOML or JSON), per-role models.")]
StoreOption = Annotated[Path | None, typer.Option("--store", help="SQLite file of the response cache and the ledger.")]


def _llm_config(
    llm: str | None,
    config: Path | None,
    store: Path | None,
    cache: str | None,
    base_url: str | None = None,
    structured_output: str | None = None,
):
    from stickerconv.llm import LLMConfig

    cfg = LLMConfig.load(config) if config else LLMConfig()
    overrides = {
        "llm": llm,
        "store": store,
        "cache": cache,
        "base_url": base_url,
        "structured_output": structured_output,
    }
    return LLMConfig.model_validate(
        cfg.model_dump(exclude_unset=True) | {k: v for k, v in overrides.items() if v is not None}
    )


def _factory(
    llm: str | None,
    config: Path | None,
    store: Path | None,
    cache: str | None,
    base_url: str | None = None,
    structured_output: str | None = None,
):
    from stickerconv.llm import LLMFactory

    return LLMFactory(_llm_config(llm, config, store, cache, base_url, structured_output))


@llm_app.command("chat")
def llm_chat(
    message: Annotated[str, typer.Argument(help="The user message.")],
    llm: LLMOption = None,
    base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible server URL (else OPENAI_BASE_URL).")] = None,
    system_prompt: Annotated[str | None, typer.Option("--system", help="A system prompt.")] = None,
    image: Annotated[list[Path] | None, typer.Option(help="Attach an image (vision models only; repeatable).")] = None,
    json_schema: Annotated[Path | None, typer.Option(help="JSON schema file the answer must match.")] = None,
    structured_output: Annotated[
        str | None,
        typer.Option(
            help="How --json-schema reaches the server: auto (negotiate; default), json_schema, json_object_schema "
            "(llama.cpp's server), json_object or prompt."
        ),
    ] = None,
    temperature: Annotated[float | None, typer.Option(min=0.0, max=2.0)] = None,
    max_tokens: Annotated[int | None, typer.Option(min=1)] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    role: Annotated[str, typer.Option(help="Role whose settings (from --config) apply.")] = "default",
    config: ConfigOption = None,
    store: StoreOption = None,
    cache: Annotated[str | None, typer.Option(help="use, replay, refresh or off.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole result as JSON.")] = False,
) -> None:
    """Send one message to an LLM, e.g. to check that a backend works."""
    from stickerconv.llm import ImagePart, system, user

    schema = None
    if json_schema is not None:
        try:
            schema = json.loads(json_schema.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise UserError(f"cannot read JSON schema {json_schema}: {exc}") from None
    images = [ImagePart.from_file(p) for p in image or []]
    messages = ([system(system_prompt)] if system_prompt else []) + [user(message, images)]
    factory = _factory(llm, config, store, cache, base_url, structured_output)
    model = factory.chat_model(role)
    overrides = {"temperature": temperature, "max_tokens": max_tokens, "seed": seed}
    settings = model.settings.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    result = model.complete_sync(messages, schema, settings=settings)
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
    elif schema is not None:
        typer.echo(json.dumps(result.parsed, ensure_ascii=False, indent=2))
    else:
        typer.echo(result.text)
    cost = "n/a" if result.cost_usd is None else f"${result.cost_usd:.6f}"
    mode = f" · structured output: {result.structured_mode}" if result.structured_mode else ""
    err.print(
        f"[dim]{result.backend}:{result.model} · {result.usage.prompt_tokens}+{result.usage.completion_tokens} tokens"
        f" · {result.latency_s:.2f}s · {'cached' if result.cached else f'{result.attempts} attempt(s)'} · {cost}"
        f"{mode}[/]"
    )


@llm_app.command("ledger")
def llm_ledger(
    store: Annotated[Path, typer.Argument(help="SQLite file of the cache and ledger.")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Calls, tokens and cost per model and role, and the structured-output mode each server took."""
    from dataclasses import asdict

    from stickerconv.llm.store import LLMStore

    if not store.is_file():
        raise UserError(f"no ledger at {store}")
    rows = LLMStore(store).ledger()
    if as_json:
        typer.echo(json.dumps([asdict(r) for r in rows], indent=2))
        return
    table = Table(title=f"LLM ledger {store}", title_justify="left")
    columns = ("model", "role", "calls", "cached", "errors", "prompt tok", "completion tok", "cost USD", "structured")
    for column in columns:
        table.add_column(column, overflow="fold")  # wrapped, not cut: a narrow terminal still shows each mode
    for r in rows:
        cost = "unpriced" if r.cost_usd is None else f"{r.cost_usd:.4f}"
        table.add_row(
            f"{r.backend}:{r.model}",
            r.role,
            str(r.calls),
            str(r.cached),
            str(r.errors),
            str(r.prompt_tokens),
            str(r.completion_tokens),
            cost,
            r.structured_output or "-",
        )
    console.print(table)


# ---------------------------------------------------------------------------- personas


@personas_app.command("generate")
def personas_generate(
    n: Annotated[int, typer.Option("--n", min=1, help="How many profiles the output should hold.")],
    out: Annotated[Path, typer.Option("--out", help="JSONL file of generated profiles (appended, resumable).")],
    seeds: Annotated[Path | None, typer.Option(help="Seed profiles (JSON/JSONL); default: the shipped seeds.")] = None,
    threshold: Annotated[
        float, typer.Option(help="Reject a situation whose ROUGE-L F1 to any kept one is this or more.")
    ] = 0.7,
    seed: Annotated[int, typer.Option(help="Random seed of the example sampling.")] = 0,
    llm: LLMOption = None,
    config: ConfigOption = None,
    store: StoreOption = None,
    cache: Annotated[str | None, typer.Option(help="use, replay, refresh or off.")] = None,
) -> None:
    """Self-instruct generation of user profiles with ROUGE-L de-duplication (method reference §2.4)."""
    import asyncio

    from stickerconv.agent4sc.personas import PersonaGenerator, load_personas

    factory = _factory(llm, config, store or out.with_suffix(".llm.sqlite"), cache)
    generator = PersonaGenerator(
        factory.chat_model("persona_generator"), load_personas(seeds) if seeds else None, threshold=threshold, seed=seed
    )
    with progress_bar("generating personas") as update:
        report = asyncio.run(generator.generate(n, out, on_progress=update))
    console.print(
        f"{report.accepted}/{n} profiles in {out} ({report.new} new; {report.rejected_similar} rejected as too "
        f"similar, {report.failed_calls} failed calls); candidates logged in {out.with_suffix('.candidates.jsonl')}"
    )
    if report.accepted < n:
        raise UserError(
            f"stopped at {report.accepted} of {n} profiles: too many near-duplicates or failed calls; "
            "run the same command again to continue, or raise --threshold"
        )


@personas_app.command("check")
def personas_check(path: Annotated[Path, typer.Argument(help="Profiles, JSON or JSONL.")]) -> None:
    """Load profiles, validate them and show how their emotions normalise to the 7 labels."""
    from collections import Counter

    from stickerconv.agent4sc.personas import load_personas
    from stickerconv.schema import normalise_emotion

    personas = load_personas(path)
    raw = Counter(p.emotion for p in personas)
    table = Table(title=f"{len(personas)} profiles in {path}", title_justify="left")
    for column in ("raw emotion", "count", "label"):
        table.add_column(column)
    unknown = []
    for emotion, count in raw.most_common():
        try:
            label = normalise_emotion(emotion).value
        except ValueError:
            label, unknown = "(unknown)", [*unknown, emotion]
        table.add_row(escape(emotion), str(count), label)
    console.print(table)
    if unknown:
        raise UserError(f"{len(unknown)} raw emotion(s) do not map to the 7 labels: {', '.join(unknown)}")


# ---------------------------------------------------------------------------- generate


@app.command()
def generate(
    personas: Annotated[Path, typer.Option(help="Profiles (JSON/JSONL, the published format).")],
    stickers: Annotated[Path, typer.Option(help="Indexed sticker library folder.")],
    out: Annotated[Path, typer.Option(help="Run folder: conversations.jsonl, rejected.jsonl, summary.json.")],
    llm: LLMOption = None,
    config: ConfigOption = None,
    concurrency: Annotated[int, typer.Option(min=1, help="Dialogues simulated at once.")] = 4,
    max_turns: Annotated[int, typer.Option(min=1, max=20)] = 6,
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N personas.")] = None,
    seed: Annotated[int, typer.Option()] = 0,
    cache: Annotated[str | None, typer.Option(help="use (default), replay, refresh or off.")] = None,
    executor: Annotated[
        str, typer.Option(help="local (asyncio in this process) or ray (shards over a Ray cluster).")
    ] = ("local"),
    ray_address: Annotated[
        str | None, typer.Option(help="Ray cluster to join (default: RAY_ADDRESS, else a local Ray instance).")
    ] = None,
    shards: Annotated[int | None, typer.Option(min=1, help="Ray shards (default: the cluster's CPUs).")] = None,
    call_pattern: Annotated[
        str, typer.Option(help="lean (fewer calls and tokens, every step kept) or original (the paper's calls).")
    ] = "lean",
    manager_rules: Annotated[
        str,
        typer.Option(
            help="default (judges checked by cues, fresh answer lines; for small models) or original (the paper's)."
        ),
    ] = "default",
) -> None:
    """Simulate Agent4SC dialogues (resumable: rerun the same command to continue)."""
    import asyncio

    from stickerconv.agent4sc.manager import MANAGER_RULES
    from stickerconv.agent4sc.pattern import CALL_PATTERNS
    from stickerconv.agent4sc.personas import load_personas
    from stickerconv.agent4sc.runner import CONVERSATIONS, SUMMARY, run_generation
    from stickerconv.llm import LLMFactory
    from stickerconv.stickers.index import StickerIndex

    if executor not in ("local", "ray"):
        raise UserError(f"unknown executor {executor!r}; choose local or ray")
    if call_pattern not in CALL_PATTERNS:
        raise UserError(f"unknown call pattern {call_pattern!r}; choose {' or '.join(CALL_PATTERNS)}")
    pattern = CALL_PATTERNS[call_pattern]
    if manager_rules not in MANAGER_RULES:
        raise UserError(f"unknown manager rules {manager_rules!r}; choose {' or '.join(MANAGER_RULES)}")
    index = StickerIndex.load(stickers)  # also checks the library before any shard starts
    llm_config = _llm_config(llm, config, out / "llm.sqlite", cache)
    if "concurrency" not in llm_config.limits.model_fields_set:  # else the default of 4 calls would cap the sessions
        llm_config.limits.concurrency = max(llm_config.limits.concurrency, concurrency)
    people = load_personas(personas)
    with progress_bar(f"simulating dialogues ({executor})") as update:
        options = {
            "concurrency": concurrency,
            "max_turns": max_turns,
            "limit": limit,
            "seed": seed,
            "on_progress": update,
            "call_pattern": pattern,
            "manager_config": MANAGER_RULES[manager_rules],
        }
        if executor == "ray":
            try:
                from stickerconv.agent4sc.ray_executor import run_generation_ray
            except ImportError as exc:
                raise UserError(f"--executor ray needs Ray: pip install 'stickerconv[ray]' ({exc})") from None
            report = run_generation_ray(
                people, stickers, llm_config, out, address=ray_address, shards=shards, **options
            )
        else:
            report = asyncio.run(run_generation(people, index, LLMFactory(llm_config), out, **options))
    summary = json.loads((out / SUMMARY).read_text(encoding="utf-8"))
    console.print(
        f"{report.kept} kept, {report.rejected} rejected, {report.skipped_done} already done; "
        f"{report.wall_s:.1f}s. Sessions in {out / CONVERSATIONS}"
    )
    reasons = ", ".join(f"{reason} {n}" for reason, n in summary["end_reasons"].items())
    console.print(f"sessions ended by: {reasons or 'none yet'}; {summary['turns_per_simulated_session']} turns each")
    modes = summary["structured_output"]
    if modes:
        console.print("structured output: " + ", ".join(f"{server} {mode}" for server, mode in modes.items()))
    if (out / CONVERSATIONS).is_file():  # the cheap quality figures of the whole run, every time
        from stickerconv.evaluate.quality.metrics import dataset_quality
        from stickerconv.evaluate.quality.report import write_quality

        result = dataset_quality(out)
        if result["sessions"]:
            console.print(f"quality report: {write_quality([result], [out.name], out / 'quality')}")


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from pydantic import ValidationError

    from stickerconv.jsonl import RecordError
    from stickerconv.llm.types import LLMError
    from stickerconv.stickers.embed import EmbedderError
    from stickerconv.stickers.emoji_pack import PackSourceError
    from stickerconv.stickers.index import StickerIndexError
    from stickerconv.stickers.library import LibraryError

    try:
        app()
    except (
        UserError,
        RecordError,
        LibraryError,
        StickerIndexError,
        EmbedderError,
        PackSourceError,
        ValidationError,
        FileNotFoundError,
        NotADirectoryError,
        ValueError,
        LLMError,
    ) as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        sys.exit(2)
