"""Loading conversations from every file form, and saving them back without loss."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stickerconv.data.io import (
    DataInputError,
    data_files,
    iter_raw,
    load_conversations,
    write_conversations,
)
from stickerconv.jsonl import RecordError

from helpers.data import published_sessions, write_jsonl


def test_published_jsonl_load_save_is_lossless(tmp_path):
    records = published_sessions()
    source = write_jsonl(tmp_path / "train.jsonl", records)
    conversations = load_conversations(source)
    assert len(conversations) == len(records) == 10
    saved = tmp_path / "saved.jsonl"
    assert write_conversations(saved, conversations) == 10
    again = [json.loads(line) for line in saved.read_text(encoding="utf-8").splitlines()]
    assert again == records
    assert [list(r) for r in again] == [list(r) for r in records]  # key order kept too
    assert [list(t) for r in again for t in r["conversation"]] == [list(t) for r in records for t in r["conversation"]]
    assert "I can’t stop" in saved.read_text(encoding="utf-8")  # UTF-8 written as such


def test_json_array_elements_are_located_by_their_first_line(tmp_path):
    records = published_sessions()[:3]
    path = tmp_path / "validation.json"
    path.write_text(json.dumps(records, indent=2, ensure_ascii=False), encoding="utf-8")
    raw = list(iter_raw(path))
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [r.data for r in raw] == records
    assert all(lines[r.line - 1] == "  {" for r in raw)
    assert [c.to_published() for c in load_conversations(path)] == records


def test_truncated_json_array_names_the_line(tmp_path):
    path = tmp_path / "cut.json"
    text = json.dumps(published_sessions()[:2], indent=2)
    path.write_text(text[: len(text) // 2 + 200], encoding="utf-8")
    raw = list(iter_raw(path))
    assert raw[0].error is None and raw[-1].error is not None
    assert "truncated" in raw[-1].error


def test_parquet_loads_the_same_conversations(tmp_path):
    records = published_sessions()
    path = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist(records), path)
    assert [c.to_published() for c in load_conversations(path)] == records
    assert [r.line for r in iter_raw(path)] == list(range(1, 11))


def test_a_run_folder_reads_only_its_kept_sessions(tmp_path):
    records = published_sessions()
    write_jsonl(tmp_path / "conversations.jsonl", records[:4])
    write_jsonl(tmp_path / "rejected.jsonl", [{"meta": {"reject_reason": "no sticker"}}])
    (tmp_path / "summary.json").write_text("{}")
    assert data_files(tmp_path) == [tmp_path / "conversations.jsonl"]
    assert len(load_conversations(tmp_path)) == 4


def test_a_folder_of_split_files_reads_every_data_file(tmp_path):
    records = published_sessions()
    write_jsonl(tmp_path / "train.jsonl", records[:6])
    write_jsonl(tmp_path / "test.jsonl", records[6:])
    (tmp_path / "split.json").write_text("{}")
    assert [p.name for p in data_files(tmp_path)] == ["test.jsonl", "train.jsonl"]
    assert len(load_conversations(tmp_path)) == 10


def test_bad_inputs_say_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data_files(tmp_path / "nope.jsonl")
    (tmp_path / "data.csv").write_text("a,b\n")
    with pytest.raises(DataInputError, match="unsupported file type '.csv'"):
        data_files(tmp_path / "data.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataInputError, match="no conversations.jsonl"):
        data_files(tmp_path / "empty")


def test_strict_loading_stops_at_the_first_bad_record_with_its_location(tmp_path):
    records = published_sessions()
    records[3]["conversation"][1]["user_message"] = 42
    path = write_jsonl(tmp_path / "bad.jsonl", records)
    with pytest.raises(RecordError) as info:
        load_conversations(path)
    assert (info.value.line, info.value.field) == (4, "conversation[1].user_message")
    assert str(info.value).startswith(f"{path}:4: field 'conversation[1].user_message': Input should be a valid string")


def test_json_array_missing_comma_is_located(tmp_path):
    a, b = (json.dumps(r) for r in published_sessions()[:2])
    path = tmp_path / "x.json"
    path.write_text(f"[\n{a}\n{b}\n]\n", encoding="utf-8")
    raw = list(iter_raw(path))
    assert [(r.line, r.error) for r in raw] == [
        (2, None),
        (3, "not valid JSON (expected ',' or ']' after the element that starts on line 2)"),
    ]
