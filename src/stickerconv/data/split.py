"""Train/validation/test splits with no persona in two splits.

A model evaluated on a persona it was trained on is graded on memory, so sessions are grouped by
persona and whole groups are assigned. The group key is the persona text; where a record carries a
persona id (``meta.persona_id``, our runs), records sharing either the text or the id are one group
(the published profiles reuse some persona texts under different ids, so neither key alone is enough).
Groups are shuffled with a seeded generator after sorting by a content hash, so the same input,
ratios and seed give the same split on any machine and in any input order. The split files are
written in the layout asked for (JSON Lines by default; a JSON array or parquet).
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

SPLITS = ("train", "validation", "test")
DEFAULT_RATIOS = (0.8, 0.1, 0.1)
MANIFEST = "split.json"


@dataclass
class SplitReport:
    out: Path
    seed: int
    ratios: tuple[float, ...]
    sessions: dict[str, int] = field(default_factory=dict)
    groups: dict[str, int] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)


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


def assign(records: Sequence[dict[str, Any]], ratios: Sequence[float], seed: int) -> list[str]:
    """The split name of every record, keeping each persona group whole."""
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
    bounds = [sum(ratios[: i + 1]) * len(records) for i in range(len(SPLITS))]
    names = [""] * len(records)
    placed = 0
    for root in order:
        # A group goes to the split its midpoint falls in, so sizes track the ratios closely.
        middle = placed + len(members[root]) / 2
        split = next((name for name, bound in zip(SPLITS, bounds, strict=True) if middle <= bound), SPLITS[-1])
        for i in members[root]:
            names[i] = split
        placed += len(members[root])
    return names


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
    report = SplitReport(out, seed, tuple(ratios))
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
        "sessions": report.sessions,
        "personas": report.groups,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return report
