"""``stickerconv stickers pools``: parse, call ``pipelines.pools``, print (root.py adds it to the group)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from stickerconv.cli.common import JsonOption, console
from stickerconv.pipelines.pools import PoolOptions, make_pools


def pools_command(
    lib_dir: Annotated[Path, typer.Argument(help="The sticker library to split.")],
    pools: Annotated[
        str, typer.Option(help="Pools and their shares of the stickers, NAME=SHARE comma-separated.")
    ] = PoolOptions.pools,
    seed: Annotated[int, typer.Option(help="The same library, pools and seed give the same split.")] = PoolOptions.seed,
    as_json: JsonOption = False,
) -> None:
    """Split a library into disjoint, theme-level sticker pools (for `generate --pool`)."""
    result = make_pools(PoolOptions(lib_dir, pools, seed))
    if as_json:
        console.print_json(json.dumps(result.to_dict()))
        return
    summary = result.to_dict()
    for name, count in summary["stickers"].items():
        console.print(f"{name}: {count:,} stickers in {summary['themes'][name]:,} themes")
    console.print(f"manifest: {result.path}")
