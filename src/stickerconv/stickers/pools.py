"""Disjoint sticker pools: a seeded, theme-level split of one library, so that a test set's stickers are
unseen in training by construction (method reference §2.10, §9 items 8, 9 and 18).

The original split its sticker pool into 80 train and 20 test shards and ran each profile window on one
shard, so train and test were only *probably* disjoint. Here a manifest, ``pools.json`` in the library
folder, names each pool's stickers with a 1-based ``seq_num`` within the pool (as within a shard file), the
seed, the ratios, the theme rule and the library digest; ``restrict`` searches one pool of the library's
index alone.

Whole themes move together: two stickers of one theme look alike, and a model that saw one of them in
training has half seen the other. A sticker's theme (``theme_of``) is, in order:

* emoji-pack stickers (``meta`` has ``hexcode`` and ``name``): ``emoji:`` + the emoji's base name (its name
  before any ``:`` qualifier), so the same emoji in every style and skin tone shares one pool;
* ingested stickers (SER30K and other folders): ``style``, the folder holding the image, which is the
  SER30K theme;
* otherwise the id's folder part, or the id itself.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stickerconv.schema import Sticker
from stickerconv.stickers.index import StickerIndex
from stickerconv.stickers.library import StickerLibrary

POOLS_FILE = "pools.json"
FORMAT_VERSION = 1
THEME_RULE = "emoji: base name across styles; else style (the SER30K theme folder); else the id's folder"
DEFAULT_POOL_RATIOS: dict[str, float] = {"train": 0.8, "test": 0.2}
POOL_KEY = "sticker_pool"  # the ``meta`` key (and summary.json key) of a run made on one pool


class PoolError(ValueError):
    """A pool manifest that is missing, malformed or does not fit its library."""


def theme_of(sticker: Sticker) -> str:
    """The unit that goes to one pool whole (see the module docstring for the rule and why)."""
    meta = sticker.meta or {}
    if meta.get("hexcode") and meta.get("name"):
        return "emoji:" + str(meta["name"]).split(":")[0].strip().lower()
    if sticker.style:
        return "theme:" + sticker.style
    folder, _, _ = sticker.id.rpartition("/")
    return "id:" + (folder or sticker.id)


def check_pool_ratios(ratios: Mapping[str, float]) -> dict[str, float]:
    if len(ratios) < 2 or any(r <= 0 for r in ratios.values()) or abs(sum(ratios.values()) - 1) > 1e-6:
        raise PoolError(f"pool ratios must be two or more positive shares that sum to 1, got {dict(ratios)}")
    return dict(ratios)


@dataclass(frozen=True)
class PoolManifest:
    """``pools`` maps each pool to its sticker ids in ``seq_num`` order (seq_num = position + 1)."""

    seed: int
    ratios: dict[str, float]
    pools: dict[str, list[str]]
    themes: dict[str, list[str]]
    library_digest: str
    theme_rule: str = THEME_RULE

    def pool_of(self) -> dict[str, str]:
        """Sticker id -> its pool."""
        return {sticker_id: name for name, ids in self.pools.items() for sticker_id in ids}

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "seed": self.seed,
            "ratios": self.ratios,
            "theme_rule": self.theme_rule,
            "library_digest": self.library_digest,
            "themes": self.themes,
            "pools": {
                name: [{"seq_num": n, "id": sticker_id} for n, sticker_id in enumerate(ids, 1)]
                for name, ids in self.pools.items()
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PoolManifest:
        if data.get("format_version") != FORMAT_VERSION:
            raise PoolError(f"pool manifest format {data.get('format_version')!r}, expected {FORMAT_VERSION}")
        pools = {}
        for name, rows in data["pools"].items():
            if [row["seq_num"] for row in rows] != list(range(1, len(rows) + 1)):
                raise PoolError(f"pool {name!r}: seq_num must run 1..{len(rows)} in order")
            pools[name] = [row["id"] for row in rows]
        return cls(
            data["seed"], dict(data["ratios"]), pools, dict(data["themes"]), data["library_digest"], data["theme_rule"]
        )

    def save(self, library_root: Path | str) -> Path:
        path = Path(library_root) / POOLS_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, library_root: Path | str) -> PoolManifest:
        path = Path(library_root) / POOLS_FILE
        if not path.is_file():
            raise PoolError(
                f"the library at {library_root} has no sticker pools ({path} is missing); "
                f"make them with `stickerconv stickers pools {library_root}`"
            )
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (KeyError, TypeError, json.JSONDecodeError) as exc:
            raise PoolError(
                f"{path} is not a pool manifest ({exc!r}); remake it with `stickerconv stickers pools`"
            ) from None


def split_pools(library: StickerLibrary, ratios: Mapping[str, float], seed: int) -> PoolManifest:
    """Assign whole themes to pools: themes ordered by a content hash (any input order gives the same split),
    shuffled with ``seed``, each placed in the pool its midpoint falls in so pool sizes in stickers track the
    ratios. Every pool gets at least one theme when there are enough themes."""
    ratios = check_pool_ratios(ratios)
    members: dict[str, list[str]] = {}
    for sticker in library:
        members.setdefault(theme_of(sticker), []).append(sticker.id)
    if len(members) < len(ratios):
        raise PoolError(f"{len(members)} theme(s) in {library.root} cannot fill {len(ratios)} pools")
    order = sorted(members, key=lambda theme: hashlib.sha256(theme.encode("utf-8")).hexdigest())
    random.Random(seed).shuffle(order)
    names = list(ratios)
    assigned = _place([len(members[theme]) for theme in order], [ratios[name] for name in names])
    themes: dict[str, list[str]] = {name: [] for name in names}
    for theme, pool in zip(order, assigned, strict=True):
        themes[names[pool]].append(theme)
    for name in names:  # a tiny library can leave a pool empty: it takes the largest pool's last theme
        if not themes[name]:
            donor = max(names, key=lambda n: len(themes[n]))
            themes[name].append(themes[donor].pop())
    position = {sticker.id: i for i, sticker in enumerate(library)}
    pools = {
        name: sorted((i for theme in themes[name] for i in members[theme]), key=position.__getitem__) for name in names
    }
    return PoolManifest(seed, ratios, pools, {n: sorted(t) for n, t in themes.items()}, library.digest())


def _place(sizes: Sequence[int], shares: Sequence[float]) -> list[int]:
    """The bucket of every item, in order: the one its midpoint (by cumulative size) falls in."""
    total = sum(sizes)
    bounds = [sum(shares[: i + 1]) * total for i in range(len(shares))]
    placed, buckets = 0, []
    for size in sizes:
        middle = placed + size / 2
        buckets.append(next((i for i, bound in enumerate(bounds) if middle <= bound), len(shares) - 1))
        placed += size
    return buckets


class _PoolAnn:
    """The library's search structure (exact or IVF) searched within one pool's rows. Row numbers it takes
    and returns are the pool's own (0..n-1), so the restricted index needs neither a copy nor a rebuild."""

    def __init__(self, ann: Any, rows: np.ndarray):
        self.ann, self.rows, self.kind = ann, rows, ann.kind  # rows: sorted library rows of the pool

    @property
    def vectors(self) -> np.ndarray:
        return np.asarray(self.ann.vectors)[self.rows]

    def __len__(self) -> int:
        return len(self.rows)

    def search(self, queries: np.ndarray, k: int, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        wanted = self.rows if rows is None else self.rows[rows]
        scores, found = self.ann.search(queries, min(k, len(wanted)), wanted)
        mapped = np.where(found >= 0, np.searchsorted(self.rows, np.maximum(found, 0)), -1)
        return scores, mapped

    def params(self) -> dict:
        return self.ann.params()


def restrict(index: StickerIndex, manifest: PoolManifest, pool: str) -> StickerIndex:
    """The index searching only ``pool``'s stickers: the sticker tool then cannot retrieve any other."""
    if pool not in manifest.pools:
        raise PoolError(f"no pool {pool!r} in the library's {POOLS_FILE}; it has {', '.join(manifest.pools)}")
    known = {s.id for s in index.library}
    missing = [i for i in manifest.pools[pool] if i not in known]
    if missing:
        raise PoolError(
            f"pool {pool!r} lists {len(missing)} sticker(s) not in the library (e.g. {missing[0]!r}); "
            f"remake the pools with `stickerconv stickers pools {index.library.root}`"
        )
    wanted = set(manifest.pools[pool])
    rows = np.array([i for i, s in enumerate(index.stickers) if s.id in wanted], dtype=np.int64)
    if len(rows) == 0:
        raise PoolError(f"pool {pool!r} has no indexed sticker (annotate and index the library first)")
    stickers = [index.stickers[i] for i in rows]
    ann = _PoolAnn(index.ann, rows)
    return StickerIndex(
        index.library, index.embedder, ann, stickers, index.template, index.emotion_weight, index.profile
    )
