"""Sticker pools from Python: split a library into disjoint, theme-level pools (``stickerconv stickers
pools``), and open one pool's index for generation (``generate --pool``). The rule and the manifest are
described in ``stickers/pools.py``."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stickerconv.pipelines.common import PipelineError
from stickerconv.stickers.pools import DEFAULT_POOL_RATIOS, POOL_KEY

if TYPE_CHECKING:
    from stickerconv.stickers.index import StickerIndex
    from stickerconv.stickers.pools import PoolManifest

log = logging.getLogger(__name__)


def parse_ratios(spec: str) -> dict[str, float]:
    """``train=0.8,test=0.2`` -> {"train": 0.8, "test": 0.2}, refusing what cannot be a split."""
    from stickerconv.stickers.pools import PoolError, check_pool_ratios

    ratios: dict[str, float] = {}
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        name, sep, value = part.partition("=")
        try:
            share = float(value)
        except ValueError:
            share = -1.0
        if not sep or not name.strip() or share < 0 or name.strip() in ratios:
            raise PipelineError(f"--pools {spec!r}: write NAME=SHARE pairs, e.g. train=0.8,test=0.2")
        ratios[name.strip()] = share
    try:
        return check_pool_ratios(ratios)
    except PoolError as exc:
        raise PipelineError(f"--pools {spec!r}: {exc}") from None


@dataclass(frozen=True)
class PoolOptions:
    """How to split the library in ``lib_dir`` into pools; the manifest goes to ``lib_dir``/pools.json."""

    lib_dir: Path
    pools: str = ",".join(f"{name}={share}" for name, share in DEFAULT_POOL_RATIOS.items())
    seed: int = 0  # the same library, ratios and seed give the same pools


@dataclass(frozen=True)
class PoolResult:
    manifest: PoolManifest
    path: Path

    def to_dict(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "manifest": str(self.path),
            "seed": m.seed,
            "ratios": m.ratios,
            "stickers": {name: len(ids) for name, ids in m.pools.items()},
            "themes": {name: len(themes) for name, themes in m.themes.items()},
        }


def make_pools(options: PoolOptions) -> PoolResult:
    """Split the library theme by theme and write its manifest (an earlier one is replaced)."""
    from stickerconv.stickers.library import LibraryError, StickerLibrary
    from stickerconv.stickers.pools import PoolError, split_pools

    ratios = parse_ratios(options.pools)
    try:
        library = StickerLibrary.load(options.lib_dir)
        manifest = split_pools(library, ratios, options.seed)
    except (LibraryError, PoolError) as exc:
        raise PipelineError(str(exc)) from None
    path = manifest.save(library.root)
    log.info("pools %s written to %s", {n: len(ids) for n, ids in manifest.pools.items()}, path)
    return PoolResult(manifest, path)


def load_index(stickers: Path, pool: str | None) -> StickerIndex:
    """The library's index, or only ``pool``'s stickers of it: a run on the train pool cannot retrieve a
    test-pool sticker. A pool asked of a library without ``pools.json`` names the command that makes one."""
    from stickerconv.stickers.index import StickerIndex
    from stickerconv.stickers.pools import PoolError, PoolManifest, restrict

    index = StickerIndex.load(stickers)
    if pool is None:
        return index
    try:
        return restrict(index, PoolManifest.load(stickers), pool)
    except PoolError as exc:
        raise PipelineError(f"--pool {pool}: {exc}") from None


def pool_provenance(pool: str | None) -> dict[str, str]:
    """What a run's summary.json and every session's ``meta`` record about the pool (nothing without one)."""
    return {} if pool is None else {POOL_KEY: pool}
