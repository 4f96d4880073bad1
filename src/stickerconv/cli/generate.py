"""``stickerconv generate``: parse the flags into ``GenerationOptions``, run ``pipelines.generation``, print."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated, Literal

import typer

from stickerconv.agent4sc.manager import MANAGER_RULES
from stickerconv.agent4sc.pattern import CALL_PATTERNS
from stickerconv.cli.common import (
    CacheOption,
    ConfigOption,
    JsonOption,
    LLMOption,
    ProfileOption,
    StickersOption,
    console,
    progress_bar,
)
from stickerconv.pipelines.generation import (
    ESTIMATE_PERSONAS,
    EXECUTORS,
    GenerationEstimate,
    GenerationOptions,
    GenerationResult,
    estimate,
    generate,
)

CallPatternName = Literal[tuple(CALL_PATTERNS)]  # the choices typer offers and checks come from the registries
ManagerRulesName = Literal[tuple(MANAGER_RULES)]
ExecutorName = Literal[EXECUTORS]
CallPatternOption = Annotated[
    CallPatternName | None,
    typer.Option(
        help="lean (fewer calls and tokens, every step kept) or original (the paper's calls); "
        "default: the profile's (default lean, paper original)."
    ),
]
ManagerRulesOption = Annotated[
    ManagerRulesName | None,
    typer.Option(
        help="default (judges checked by cues, fresh answer lines; for small models) or original (the paper's); "
        "default: the profile's."
    ),
]


def generate_command(
    personas: Annotated[Path, typer.Option(help="Profiles (JSON/JSONL, the published format).")],
    stickers: StickersOption,
    out: Annotated[Path, typer.Option(help="Run folder: conversations.jsonl, rejected.jsonl, summary.json.")],
    llm: LLMOption = None,
    config: ConfigOption = None,
    concurrency: Annotated[
        int, typer.Option(min=1, help="Dialogues simulated at once.")
    ] = GenerationOptions.concurrency,
    max_turns: Annotated[int, typer.Option(min=1, max=20)] = GenerationOptions.max_turns,
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N personas.")] = GenerationOptions.limit,
    seed: Annotated[int, typer.Option()] = GenerationOptions.seed,
    cache: CacheOption = None,
    executor: Annotated[
        ExecutorName, typer.Option(help="local (asyncio in this process) or ray (shards over a Ray cluster).")
    ] = GenerationOptions.executor,
    ray_address: Annotated[
        str | None, typer.Option(help="Ray cluster to join (default: RAY_ADDRESS, else a local Ray instance).")
    ] = GenerationOptions.ray_address,
    shards: Annotated[int | None, typer.Option(min=1, help="Ray shards (default: the cluster's CPUs).")] = (
        GenerationOptions.shards
    ),
    profile: ProfileOption = GenerationOptions.profile,
    call_pattern: CallPatternOption = GenerationOptions.call_pattern,
    manager_rules: ManagerRulesOption = GenerationOptions.manager_rules,
    pool: Annotated[
        str | None,
        typer.Option(help="Retrieve only from this sticker pool (train, test; made by `stickers pools`)."),
    ] = GenerationOptions.pool,
    estimate_only: Annotated[
        bool,
        typer.Option(
            "--estimate",
            help="Print the expected calls, tokens and cost of the whole run, from a few sessions simulated in a "
            "temporary folder; --out is left untouched.",
        ),
    ] = False,
    estimate_personas: Annotated[int, typer.Option(min=1, help="Sessions --estimate simulates.")] = ESTIMATE_PERSONAS,
    as_json: JsonOption = False,
) -> None:
    """Simulate Agent4SC dialogues (resumable: rerun the same command to continue). --profile paper runs the
    paper's settings (calls, manager, memory) on an index built with `stickers index --profile paper`;
    --call-pattern and --manager-rules, when given, win over the profile's."""
    given = locals()  # first: the parameters alone, named as GenerationOptions' fields
    fields = {field.name for field in dataclasses.fields(GenerationOptions)}
    options = GenerationOptions(**{name: value for name, value in given.items() if name in fields})
    if estimate_only:
        expected = estimate(options, personas=estimate_personas, progress=progress_bar)
        if as_json:
            console.print_json(json.dumps(expected.to_dict()))
        else:
            _print_estimate(expected)
        return
    result = generate(options, progress=progress_bar)
    if as_json:
        console.print_json(json.dumps(result.to_dict()))
    else:
        _print_run(result)


def _print_estimate(expected: GenerationEstimate) -> None:
    console.print(
        f"estimate for {expected.sessions} session(s), from {expected.sampled} simulated in "
        f"{expected.sample_wall_s:.1f}s ({expected.sample_kept} kept) on {', '.join(expected.models) or 'no model'}"
    )
    for name, row, digits in (("per session", expected.per_session, 1), ("whole run", expected.total, 0)):
        n = {key: f"{value:,.{digits}f}" for key, value in row.items() if key != "cost_usd"}
        cost = "unpriced" if row["cost_usd"] is None else f"${row['cost_usd']:,.4f}"
        console.print(
            f"{name}: {n['calls']} calls, {n['prompt_tokens']} prompt tokens ({n['cached_prompt_tokens']} cached, "
            f"{n['uncached_prompt_tokens']} uncached), {n['completion_tokens']} completion tokens, {cost}"
        )
    if expected.unpriced:
        console.print(f'no price for {", ".join(expected.unpriced)}: add \\[prices."MODEL"] to the --config file')


def _print_run(result: GenerationResult) -> None:
    report, summary = result.report, result.summary
    console.print(
        f"{report.kept} kept, {report.rejected} rejected, {report.skipped_done} already done; "
        f"{report.wall_s:.1f}s. Sessions in {result.conversations}"
    )
    reasons = ", ".join(f"{reason} {n}" for reason, n in summary["end_reasons"].items())
    console.print(f"sessions ended by: {reasons or 'none yet'}; {summary['turns_per_simulated_session']} turns each")
    modes = summary["structured_output"]
    if modes:
        console.print("structured output: " + ", ".join(f"{server} {mode}" for server, mode in modes.items()))
    if result.quality:
        console.print(f"quality report: {result.quality}")
