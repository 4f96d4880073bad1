"""Fetching the published StickerConv dataset (``NEUDM/StickerConv``) into local JSON Lines files.

The Hub files and hand-downloaded copies go through the same code: ``datasets.load_dataset`` on the
hub id, or on the local files with the ``json`` builder. Every record is validated and written back
in the published format (§4.3), one ``<split>.jsonl`` per split. Columnar loading fills keys missing
from some records with null (an absent ``meta`` becomes ``"meta": null``); writing through the schema
drops those again, so the output equals the published records. Offline, the error says how to fetch
the files by hand and load them with ``--from-file``.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from stickerconv.data.io import field_path, write_conversations
from stickerconv.jsonl import RecordError
from stickerconv.schema import Conversation

log = logging.getLogger(__name__)

DEFAULT_HUB_ID = "NEUDM/StickerConv"


class HubUnavailable(RuntimeError):
    """The Hub cannot be reached (offline mode, no network); the message says what to do instead."""


@dataclass
class PullReport:
    out: Path
    sessions: dict[str, int] = field(default_factory=dict)  # split -> records written
    files: list[Path] = field(default_factory=list)


def _offline_message(hub_id: str, reason: str) -> str:
    return (
        f"cannot download {hub_id} from the Hugging Face Hub ({reason}). Download its data files "
        f"(train.json, validation.json, test.json) by hand from https://huggingface.co/datasets/{hub_id}/tree/main, "
        "then run `stickerconv data pull "
        f"{hub_id} --from-file train.json --from-file validation.json --from-file test.json --out DIR`, "
        "or point the data commands (validate, stats, split, convert) at the downloaded files directly"
    )


def _load(hub_id: str, files: Sequence[Path], cache_dir: str | None):
    import datasets

    if files:
        data_files = {Path(f).stem: str(f) for f in files}
        return datasets.load_dataset("json", data_files=data_files, cache_dir=cache_dir)
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}:
        raise HubUnavailable(_offline_message(hub_id, "HF_HUB_OFFLINE is set"))
    try:
        return datasets.load_dataset(hub_id, cache_dir=cache_dir)
    except ConnectionError as exc:
        raise HubUnavailable(_offline_message(hub_id, f"no connection: {exc}")) from None
    except FileNotFoundError:
        raise  # no such dataset: datasets' own message names it
    except OSError as exc:  # requests/httpx network errors derive from OSError
        raise HubUnavailable(_offline_message(hub_id, f"network error: {exc}")) from None


def pull(hub_id: str, out: Path | str, *, from_files: Sequence[Path] = (), cache_dir: str | None = None) -> PullReport:
    """Write ``out/<split>.jsonl`` for every split of the dataset (or of the given local files)."""
    out = Path(out)
    missing = [str(f) for f in from_files if not Path(f).is_file()]
    if missing:
        raise FileNotFoundError(f"--from-file: {', '.join(missing)} not found")
    if from_files and cache_dir is None:
        with tempfile.TemporaryDirectory(prefix="stickerconv-pull-") as tmp:  # a one-off: no cache left behind
            splits = _load(hub_id, from_files, tmp)
            return _write(splits, out, hub_id)
    return _write(_load(hub_id, from_files, cache_dir), out, hub_id)


def _write(splits, out: Path, source: str) -> PullReport:
    report = PullReport(out)
    for name, dataset in splits.items():
        path = out / f"{name}.jsonl"
        report.sessions[name] = write_conversations(path, _validated(dataset, path, source))
        report.files.append(path)
        log.info("%s: %d sessions", path, report.sessions[name])
    return report


def _validated(dataset, path: Path, source: str):
    for row, record in enumerate(dataset, start=1):
        try:
            yield Conversation.model_validate(record)
        except ValidationError as exc:
            error = exc.errors()[0]
            raise RecordError(source, row, f"{error['msg']} (while writing {path})", field_path(error["loc"])) from None
