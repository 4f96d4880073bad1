"""Train/validation/test splits with no persona in two splits.

A model evaluated on a persona it was trained on is graded on memory, so sessions are grouped by
persona and whole groups are assigned. The group key is the persona text; where a record carries a
persona id (``meta.persona_id``, our runs), records sharing either the text or the id are one group
(the published profiles reuse some persona texts under different ids, so neither key alone is enough).
Groups are shuffled with a seeded generator after sorting by a content hash, so the same input,
ratios and seed give the same split on any machine and in any input order. The split files are
written in the layout asked for (JSON Lines by default; a JSON array or parquet).

Conversations generated on a sticker pool (``generate --pool``, ``meta.sticker_pool``) follow it: test-pool
dialogues go to test, train-pool ones to train and validation (by their ratios), so a test sticker is unseen
in training by construction, not by chance. The test ratio then has no say: the pools' sizes decide.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stickerconv.data.io import (
    LAYOUT_SUFFIXES,
    DataSource,
    Layout,
    Progress,
    open_source,
    parse_conversation,
    write_records,
)
from stickerconv.stickers.pools import POOL_KEY

SPLITS = ("train", "validation", "test")
DEFAULT_RATIOS = (0.8, 0.1, 0.1)
MANIFEST = "split.json"
POOL_SPLITS: dict[str, tuple[str, ...]] = {
    "train": ("train", "validation"),
    "validation": ("validation",),
    "test": ("test",),
}


@dataclass
class SplitReport:
    out: Path
    seed: int
    ratios: tuple[float, ...]
    sessions: dict[str, int] = field(default_factory=dict)
    groups: dict[str, int] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    by_pool: bool = False  # the records' sticker pools decided the splits


def check_ratios(ratios: Sequence[float]) -> tuple[float, ...]:
    if len(ratios) != len(SPLITS) or any(r < 0 for r in ratios) or abs(sum(ratios) - 1) > 1e-6:
        raise ValueError(
            f"ratios must be {len(SPLITS)} non-negative numbers for {'/'.join(SPLITS)} that sum to 1, "
            f"got {list(ratios)}"
        )
    return tuple(ratios)


class _Groups:
    """Union-find over persona texts and persona ids."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, key: str) -> str:
        root = self.parent.setdefault(key, key)
        while root != self.parent[root]:
            root = self.parent[root]
        while key != root:  # path compression
            self.parent[key], key = root, self.parent[key]
        return root

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def persona_keys(record: dict[str, Any]) -> list[str]:
    keys = ["text:" + record["user_persona"]]
    meta = record.get("meta")
    if isinstance(meta, dict) and meta.get("persona_id") is not None:
        keys.append(f"id:{meta['persona_id']}")
    return keys


def record_pool(record: dict[str, Any]) -> str | None:
    meta = record.get("meta")
    return meta.get(POOL_KEY) if isinstance(meta, dict) else None


def assign(records: Sequence[dict[str, Any]], ratios: Sequence[float], seed: int) -> list[str]:
    """The split name of every record, keeping each persona group whole and, where the records carry
    sticker pools, each pool's records in that pool's splits."""
    ratios = check_ratios(ratios)
    groups = _Groups()
    keys = [persona_keys(r) for r in records]
    for record_keys in keys:
        for key in record_keys[1:]:
            groups.union(record_keys[0], key)
    members: dict[str, list[int]] = {}
    for i, record_keys in enumerate(keys):
        members.setdefault(groups.find(record_keys[0]), []).append(i)
    order = sorted(members, key=lambda root: hashlib.sha256(root.encode("utf-8")).hexdigest())
    random.Random(seed).shuffle(order)
    names = [""] * len(records)
    shares = dict(zip(SPLITS, ratios, strict=True))
    for splits, roots in _by_pool(records, members, order).items():
        total = sum(shares[split] for split in splits)
        if total == 0:
            raise ValueError(f"ratios give {'/'.join(splits)} nothing, but sticker-pool records must go there")
        _place([members[root] for root in roots], splits, [shares[split] / total for split in splits], names)
    return names


def _by_pool(
    records: Sequence[dict[str, Any]], members: dict[str, list[int]], order: list[str]
) -> dict[tuple[str, ...], list[str]]:
    """The persona groups (in ``order``) per set of splits they may go to: every split without pools."""
    pools = [record_pool(r) for r in records]
    if all(pool is None for pool in pools):
        return {SPLITS: order}
    if any(pool is None for pool in pools):
        raise ValueError(f"some records carry meta.{POOL_KEY} and some do not: split runs on pools or none")
    placed: dict[tuple[str, ...], list[str]] = {}
    for root in order:
        found = {pools[i] for i in members[root]}
        if len(found) > 1:
            raise ValueError(
                f"persona {records[members[root][0]]['user_persona'][:60]!r} has dialogues in sticker pools "
                f"{', '.join(sorted(found))}: generate each pool from its own personas"
            )
        pool = found.pop()
        if pool not in POOL_SPLITS:
            raise ValueError(f"sticker pool {pool!r} has no split; pools that split: {', '.join(POOL_SPLITS)}")
        placed.setdefault(POOL_SPLITS[pool], []).append(root)
    return placed


def _place(groups: Sequence[list[int]], splits: Sequence[str], shares: Sequence[float], names: list[str]) -> None:
    """A group goes to the split its midpoint falls in, so sizes track the shares closely."""
    total = sum(len(group) for group in groups)
    bounds = [sum(shares[: i + 1]) * total for i in range(len(splits))]
    placed = 0
    for group in groups:
        middle = placed + len(group) / 2
        split = next((name for name, bound in zip(splits, bounds, strict=True) if middle <= bound), splits[-1])
        for i in group:
            names[i] = split
        placed += len(group)


def split_file(
    path: Path | str | DataSource,
    out: Path | str,
    *,
    ratios: Sequence[float] = DEFAULT_RATIOS,
    seed: int = 0,
    layout: Layout = "jsonl",
    on_progress: Progress = None,
) -> SplitReport:
    """Write ``train/validation/test.<layout>`` (records unchanged) and ``split.json`` into ``out``.

    Every record is validated first (the first bad one raises with its location), so a split never
    carries a broken record; a file of anything but conversations is refused before that.
    """
    suffix = next((s for s, name in LAYOUT_SUFFIXES.items() if name == layout), None)
    if suffix is None:
        raise ValueError(f"unknown layout {layout!r}; choose from {', '.join(LAYOUT_SUFFIXES.values())}")
    out = Path(out)
    records = []
    source = open_source(path, ("conversations",))
    for raw, _ in source.checked(on_progress):
        parse_conversation(raw)
        records.append(raw.data)
    names = assign(records, ratios, seed)
    report = SplitReport(out, seed, tuple(ratios), by_pool=any(record_pool(r) is not None for r in records))
    for split in SPLITS:
        chosen = [r for r, name in zip(records, names, strict=True) if name == split]
        report.files[split] = out / f"{split}{suffix}"
        report.sessions[split] = write_records(report.files[split], chosen)
        report.groups[split] = len({persona_keys(r)[0] for r in chosen})
    manifest = {
        "source": str(source.path),
        "seed": seed,
        "ratios": dict(zip(SPLITS, ratios, strict=True)),
        "group_key": "user_persona text, joined with meta.persona_id where present",
        "by_sticker_pool": {pool: list(splits) for pool, splits in POOL_SPLITS.items()} if report.by_pool else None,
        "sessions": report.sessions,
        "personas": report.groups,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return report
