"""``stickerconv llm chat | ledger``: one message to a configured LLM, and the call ledger of a store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from stickerconv.cli.common import (
    CacheOption,
    ConfigOption,
    JsonOption,
    LLMOption,
    StoreOption,
    UserError,
    console,
    err,
)
from stickerconv.llm.types import StructuredOutput

llm_app = typer.Typer(help="Talk to the configured LLMs and inspect the call ledger.", no_args_is_help=True)


def _read_schema(path: Path | None) -> dict | None:
    if path is None:
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read JSON schema {path}: {exc}") from None


@llm_app.command("chat")
def llm_chat(
    message: Annotated[str, typer.Argument(help="The user message.")],
    llm: LLMOption = None,
    base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible server URL (else OPENAI_BASE_URL).")] = None,
    system_prompt: Annotated[str | None, typer.Option("--system", help="A system prompt.")] = None,
    image: Annotated[list[Path] | None, typer.Option(help="Attach an image (vision models only; repeatable).")] = None,
    json_schema: Annotated[Path | None, typer.Option(help="JSON schema file the answer must match.")] = None,
    structured_output: Annotated[
        StructuredOutput | None,
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
    cache: CacheOption = None,
    as_json: JsonOption = False,
) -> None:
    """Send one message to an LLM, e.g. to check that a backend works."""
    from stickerconv.llm import ImagePart, LLMConfig, LLMFactory, system, user

    schema = _read_schema(json_schema)
    images = [ImagePart.from_file(p) for p in image or []]
    messages = ([system(system_prompt)] if system_prompt else []) + [user(message, images)]
    flags = {"llm": llm, "store": store, "cache": cache, "base_url": base_url, "structured_output": structured_output}
    model = LLMFactory(LLMConfig.resolve(config, **flags)).chat_model(role)
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
    usage = result.usage
    reused = f" ({usage.cached_prompt_tokens} cached)" if usage.cached_prompt_tokens else ""
    err.print(
        f"[dim]{result.backend}:{result.model} · {usage.prompt_tokens}{reused}+{usage.completion_tokens} tokens"
        f" · {result.latency_s:.2f}s · {'cached' if result.cached else f'{result.attempts} attempt(s)'} · {cost}"
        f"{mode}[/]"
    )


@llm_app.command("ledger")
def llm_ledger(
    store: Annotated[Path, typer.Argument(help="SQLite file of the cache and ledger.")],
    as_json: JsonOption = False,
) -> None:
    """Calls, tokens and estimated cost per model and role, and the structured-output mode each server took.
    "cache hits" are calls our response cache answered (free); "cached prompt" the prompt tokens of the other
    calls that the server took from its prefix cache (billed at the model's cached price)."""
    from dataclasses import asdict

    from stickerconv.llm.store import LEDGER_SUMS, LLMStore, ledger_total

    if not store.is_file():
        raise UserError(f"no ledger at {store}")
    rows = [asdict(r) for r in LLMStore(store).ledger()]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title=f"LLM ledger {store}", title_justify="left")
    columns = ("model", "role", "calls", "cache hits", "errors", "prompt tok", "cached prompt", "uncached prompt")
    for column in (*columns, "completion tok", "cost USD", "structured"):
        table.add_column(column, overflow="fold")  # wrapped, not cut: a narrow terminal still shows each mode
    total = {"backend": "", "model": "total", "role": "", "structured_output": ""} | ledger_total(rows)
    for r in [*rows, total] if len(rows) > 1 else rows:
        cost = "unpriced" if r["cost_usd"] is None else f"{r['cost_usd']:.4f}"
        where = f"{r['backend']}:{r['model']}" if r["backend"] else r["model"]
        counts = [f"{r[name]:,}" for name in LEDGER_SUMS]
        table.add_row(where, r["role"], *counts, cost, r["structured_output"] or "-")
    console.print(table)
