"""``stickerconv stickers annotate``: describe a library's stickers with a vision model (method reference §3).

The command chooses the models, checks that the vision model can see images, runs the library's
stages (``stickers/annotate.py``) with a progress bar per stage and prints the report.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.markup import escape
from rich.table import Table

from stickerconv.cli.common import UserError, console, err, progress_bar
from stickerconv.stickers.annotate import AnnotateOptions

VLM_ROLE, KNOWLEDGE_ROLE = "sticker_vlm", "sticker_knowledge"  # roles of an --config file
VISION_OPTIONS = """\
Options:
  --vlm openai:gpt-4o-mini                                     OpenAI (export OPENAI_API_KEY)
  --vlm openai:llava-hf/llava-1.5-7b-hf --base-url http://localhost:8000/v1
                                                               vLLM: vllm serve llava-hf/llava-1.5-7b-hf
                                                               (or Qwen/Qwen2.5-VL-7B-Instruct)
  --vlm openai:llava:13b --base-url http://localhost:11434/v1  Ollama: ollama pull llava:13b
  --config FILE with [roles.sticker_vlm] llm = "openai:MODEL"
Stickers that already have text (e.g. from `stickerconv stickers ingest --labels FILE`) and the
embedded emoji pack need no annotation. See docs/annotation.md."""


class _StageBars:
    """One progress bar per stage, opened when the stage reports first."""

    def __init__(self) -> None:
        self._stack, self._stage, self._update = ExitStack(), None, None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage != self._stage:
            self._stack.close()
            self._stack = ExitStack()
            self._update = self._stack.enter_context(progress_bar(stage))
            self._stage = stage
        self._update(done, total)

    def close(self) -> None:
        self._stack.close()


def annotate(
    lib_dir: Annotated[Path, typer.Argument(help="Sticker library folder (stickers.jsonl + images).")],
    vlm: Annotated[
        str | None,
        typer.Option(
            "--vlm",
            help="Vision model for filter and captions: openai:MODEL (OpenAI, vLLM, Ollama); local has no vision.",
        ),
    ] = None,
    llm: Annotated[
        str | None, typer.Option("--llm", help="Text model of the knowledge summary (default: the --vlm model).")
    ] = None,
    base_url: Annotated[
        str | None, typer.Option(help="OpenAI-compatible server URL (else OPENAI_BASE_URL), e.g. vLLM or Ollama.")
    ] = None,
    samples: Annotated[
        int, typer.Option(min=1, help="Filter samples per sticker; kept if #yes >= #no.")
    ] = AnnotateOptions.samples,
    concurrency: Annotated[int, typer.Option(min=1, help="Stickers in flight at once.")] = AnnotateOptions.concurrency,
    limit: Annotated[int | None, typer.Option(min=1, help="Only the next N stickers not started yet.")] = None,
    max_image_side: Annotated[
        int, typer.Option(min=64, help="Images are scaled down to this longest side (px) before sending.")
    ] = AnnotateOptions.max_side,
    skip_filter: Annotated[bool, typer.Option(help="Caption every sticker without the suitability filter.")] = False,
    overwrite: Annotated[
        bool, typer.Option(help="Annotate stickers that already have text too (old text kept in meta).")
    ] = False,
    adopt_labels: Annotated[
        bool, typer.Option(help="Stickers without a label take the proposed one (marked in meta.label_source).")
    ] = False,
    retry_failed: Annotated[
        bool, typer.Option(help="Ask again for stickers whose answers were refused or malformed.")
    ] = False,
    config: Annotated[
        Path | None, typer.Option("--config", help="LLM config file (roles sticker_vlm, sticker_knowledge).")
    ] = None,
    store: Annotated[Path | None, typer.Option(help="Cache + ledger (default LIB_DIR/annotate/llm.sqlite).")] = None,
    cache: Annotated[str | None, typer.Option(help="use (default), replay, refresh or off.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Annotate stickers with a vision model: suitability filter, five-question captions, knowledge summary.

    Resumable: each stage appends to LIB_DIR/annotate/*.jsonl; run the same command again to continue.
    """
    import asyncio

    from stickerconv.stickers.annotate import ANNOTATE_DIR, AnnotateAbort, Annotation, is_emoji_pack
    from stickerconv.stickers.library import StickerLibrary

    library = StickerLibrary.load(lib_dir)
    options = AnnotateOptions(
        samples=samples,
        concurrency=concurrency,
        limit=limit,
        max_side=max_image_side,
        skip_filter=skip_filter,
        overwrite=overwrite,
        adopt_labels=adopt_labels,
        retry_failed=retry_failed,
    )
    annotation = Annotation(library, options)
    if not annotation.targets:
        if library.stickers and all(is_emoji_pack(s) for s in library):
            console.print(
                f"{lib_dir} is the embedded emoji pack: its texts and labels come from emoji metadata, so it needs "
                "no annotation (--overwrite annotates it with a vision model anyway)"
            )
        else:
            console.print(
                f"nothing to annotate in {lib_dir}: every sticker has a description, emotion and recommendation "
                "(--overwrite annotates them again)"
            )
        return

    cfg = _config(config, store, lib_dir / ANNOTATE_DIR / "llm.sqlite", cache, base_url)
    vlm_spec = vlm or _role_llm(cfg, VLM_ROLE)
    llm_spec = llm or _role_llm(cfg, KNOWLEDGE_ROLE) or vlm_spec
    if annotation.pending_images() and vlm_spec is None:
        count = len(annotation.pending_images())
        raise UserError(
            f"no vision model configured: {count} sticker(s) in {lib_dir} need annotation, and annotating reads "
            f"the images with a vision-language model served over an OpenAI-compatible API.\n{VISION_OPTIONS}"
        )
    if annotation.pending_knowledge() and llm_spec is None:
        raise UserError("captioned stickers wait for their knowledge summary: give a text model with --llm (or --vlm)")
    cfg.roles[VLM_ROLE] = _role(cfg, VLM_ROLE, vlm_spec)
    cfg.roles[KNOWLEDGE_ROLE] = _role(cfg, KNOWLEDGE_ROLE, llm_spec)
    options.vlm_settings = options.vlm_settings.model_copy(update=_overrides(cfg, VLM_ROLE))
    options.knowledge_settings = options.knowledge_settings.model_copy(update=_overrides(cfg, KNOWLEDGE_ROLE))

    from stickerconv.llm import LLMFactory

    vlm_model = None
    if annotation.pending_images():
        _check_vision(vlm_spec)
    factory = LLMFactory(cfg)
    if annotation.pending_images():
        vlm_model = factory.chat_model(VLM_ROLE)
        if not vlm_model.backend.accepts_images:
            _refuse(vlm_spec, f"{vlm_model.backend.name}:{vlm_model.model}")
    llm_model = factory.chat_model(KNOWLEDGE_ROLE) if llm_spec else None

    async def run() -> dict[str, Any]:
        try:
            return await annotation.run(vlm_model, llm_model, on_progress=bars)
        finally:
            await factory.aclose()

    bars = _StageBars()
    try:
        report = asyncio.run(run())
    except AnnotateAbort as exc:
        raise UserError(str(exc)) from None
    finally:
        bars.close()
    if as_json:
        typer.echo(json.dumps(report, ensure_ascii=False, indent=2))
        return
    _print_report(report, lib_dir)


def _check_vision(spec: str) -> None:
    """Refuse a text-only backend before it is built (the embedded model would load for nothing)."""
    from stickerconv.llm import parse_llm_spec

    if parse_llm_spec(spec)[0] == "local":
        from stickerconv.llm.backends.local import LocalBackend

        if not LocalBackend.accepts_images:
            _refuse(spec, "the embedded local model (SmolLM2)")


def _refuse(spec: str, what: str) -> NoReturn:
    raise UserError(
        f"--vlm {spec}: {what} is a text-only model and cannot see images; choose a vision model.\n{VISION_OPTIONS}"
    )


def _config(config: Path | None, store: Path | None, default_store: Path, cache: str | None, base_url: str | None):
    """The LLM config: the file's, then the options; the cache sits beside the library unless one is named."""
    from stickerconv.llm import LLMConfig

    cfg = LLMConfig.load(config) if config else LLMConfig()
    data = cfg.model_dump(exclude_unset=True)
    overrides = {"store": store or (None if "store" in data else default_store), "cache": cache, "base_url": base_url}
    return LLMConfig.model_validate(data | {k: v for k, v in overrides.items() if v is not None})


def _role_llm(cfg, role: str) -> str | None:
    found = cfg.roles.get(role)
    return found.llm if found is not None else None


def _role(cfg, role: str, spec: str | None):
    from stickerconv.llm.config import RoleConfig

    current = cfg.roles.get(role, RoleConfig())
    return current.model_copy(update={"llm": spec}) if spec else current


def _overrides(cfg, role: str) -> dict[str, Any]:
    """Sampling settings a config file gives the role explicitly; the rest stay the method's (§2.2)."""
    found = cfg.roles.get(role)
    if found is None:
        return {}
    return found.model_dump(include={"temperature", "max_tokens", "top_p", "seed"}, exclude_none=True)


def _print_report(report: dict[str, Any], lib_dir: Path) -> None:
    for bad in report.get("bad_image_files", []):
        err.print(f"[yellow]skipped[/] {escape(str(lib_dir / bad['image']))}: {escape(bad['reason'])}")
    flt, cap, kno = report["filter"], report["caption"], report["knowledge"]
    filter_line = (
        "filter skipped"
        if flt["skipped"] and not flt["voted"]
        else f"filter: {flt['passed']} of {flt['voted']} passed ({flt['rejected']} unsuitable)"
    )
    console.print(
        f"[bold]{kno['done']}[/] of {report['targets']} sticker(s) annotated in {lib_dir}; {filter_line}; "
        f"{report['bad_images']} bad image(s); failed: {cap['failed']} caption, {kno['failed']} knowledge"
    )
    pending = {stage: n for stage, n in report["pending"].items() if n}
    if pending:
        console.print(
            "[yellow]still pending[/]: "
            + ", ".join(f"{n} {stage}" for stage, n in pending.items())
            + " (run the same command again to continue)"
        )
    labels = report["labels"]
    if labels["human"] or labels["proposed"]:
        table = Table(title="labels", title_justify="left")
        for column in ("label", "human", "proposed"):
            table.add_column(column)
        for label in sorted(set(labels["human"]) | set(labels["proposed"])):
            table.add_row(label, str(labels["human"].get(label, 0)), str(labels["proposed"].get(label, 0)))
        console.print(table)
    agree = report["agreement"]
    if agree["n"]:
        kappa = "n/a" if agree["kappa"] is None else f"{agree['kappa']:.3f}"
        console.print(
            f"proposed vs human label: {agree['agree']}/{agree['n']} agree ({agree['rate']:.1%}), Cohen's kappa {kappa}"
        )
    rejected = cap["failed"] + kno["failed"] + flt["rejected"] + report["bad_images"]
    if rejected:
        console.print(f"rejected stickers and reasons: {report['files']['rejects.jsonl']}")
    if report["index"] == "stale":
        console.print(
            f"[yellow]the index of {lib_dir} is now stale[/] (stickers.jsonl changed); "
            f"rebuild it with `stickerconv stickers index {lib_dir}`"
        )
    elif report["index"] == "none" and kno["done"]:
        console.print(f"next: `stickerconv stickers index {lib_dir}`")
