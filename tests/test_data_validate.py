"""Validation on real-format files with injected defects: every problem, at its exact location."""

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from stickerconv.data.resolve import StickerResolver
from stickerconv.data.validate import Problem, validate
from stickerconv.stickers.library import StickerLibrary

from helpers.data import make_library, published_sessions, published_stickers, write_jsonl

SCRIPT = Path(sys.executable).parent / "stickerconv"


def defective_file(path: Path) -> Path:
    """Twelve lines of published sessions, each after the first with one kind of defect."""
    s = published_sessions()
    wrong_types = copy.deepcopy(s[8])
    wrong_types["conversation"][2]["user_sticker"]["origin_anno"] = 5
    wrong_types["conversation"][1]["turn"] = "2"
    missing_turn = copy.deepcopy(s[1])
    del missing_turn["conversation"][1]
    unknown = copy.deepcopy(s[3])
    unknown["conversation"][1]["user_sticker"]["image"] = "/datas/llm_datasets/SER_Dataset/Images/pepe-7/sticker_99.jpg"
    empty = copy.deepcopy(s[4])
    empty["conversation"][0]["system_message"] = "  "
    extra_key = copy.deepcopy(s[5]) | {"profile_id": 7}
    sticker_keys = copy.deepcopy(s[6])
    sticker = sticker_keys["conversation"][0]["system_sticker"]
    del sticker["origin_anno"]
    sticker["id"] = "pepe-7/x"
    no_sticker = copy.deepcopy(s[2])
    no_sticker["conversation"][0]["system_sticker"] = None
    missing_key = copy.deepcopy(s[7])
    del missing_key["conversation"][0]["user_sticker"]
    lines = [
        json.dumps(r, ensure_ascii=False)
        for r in (s[0], wrong_types, missing_turn, unknown, [1, 2], empty, s[0], extra_key, sticker_keys)
    ]
    lines += [json.dumps(no_sticker), json.dumps(missing_key)]
    truncated = json.dumps(s[9])
    path.write_text("\n".join(lines) + "\n" + truncated[: len(truncated) // 2], encoding="utf-8")
    return path


EXPECTED = [
    (2, "conversation[1].turn", "Input should be a valid integer"),
    (2, "conversation[2].user_sticker.origin_anno", "Input should be 'Anger', 'Disgust'"),
    (3, "conversation[1].turn", "turn 3 where 2 expected: turn 2 is missing"),
    (
        4,
        "conversation[1].user_sticker.image",
        "unknown sticker '/datas/llm_datasets/SER_Dataset/Images/pepe-7/sticker_99",
    ),
    (5, "record", "expected a JSON object, got array"),
    (6, "conversation[0].system_message", "empty message"),
    (7, "record", "duplicate session: same persona, situation and messages as {file}:1"),
    (8, "profile_id", "not a key of the published format; provenance belongs under 'meta'"),
    (9, "conversation[0].system_sticker.origin_anno", "missing"),
    (9, "conversation[0].system_sticker.id", "not a key of the published sticker"),
    (10, "conversation", "no sticker in any turn"),
    (11, "conversation[0].user_sticker", "missing (write null when the turn has no sticker)"),
    (12, "record", "not valid JSON (Unterminated string"),
]


@pytest.fixture()
def library(tmp_path):
    return StickerResolver(StickerLibrary.load(make_library(tmp_path / "lib", published_stickers())))


def test_every_injected_defect_is_reported_at_its_exact_location(tmp_path, library):
    path = defective_file(tmp_path / "bad.jsonl")
    report = validate(path, resolver=library)
    got = [(p.line, p.field) for p in report.problems]
    assert got == [(line, field) for line, field, _ in EXPECTED]
    for problem, (_, _, message) in zip(report.problems, EXPECTED, strict=True):
        assert problem.file == str(path)
        assert problem.message.startswith(message.format(file=path)), problem
    assert "the file ends inside this record (truncated?)" in report.problems[-1].message
    assert "(got 5)" in report.problems[1].message  # the offending value is shown
    assert (report.records, report.valid) == (12, 1)
    assert str(report.problems[2]) == f"{path}:3: conversation[1].turn: turn 3 where 2 expected: turn 2 is missing"


def test_without_a_library_stickers_are_not_resolved(tmp_path):
    report = validate(defective_file(tmp_path / "bad.jsonl"))
    assert 4 not in {p.line for p in report.problems}
    assert report.valid == 2


def test_published_fixture_is_valid_and_missing_images_only_warn(tmp_path):
    stickers = published_stickers()
    path = write_jsonl(tmp_path / "train.jsonl", published_sessions())
    assert validate(path).ok
    resolver = StickerResolver(StickerLibrary.load(make_library(tmp_path / "lib", stickers, without_image=2)))
    report = validate(path, resolver=resolver)
    assert report.ok and report.stickers_checked == 20
    absent = {s["image"].rsplit("/", 1)[-1].removesuffix(".jpg") for s in stickers[-2:]}
    assert report.missing_images and all(any(a in p.message for a in absent) for p in report.missing_images)
    strict = validate(path, resolver=resolver, require_images=True)
    assert not strict.ok and len(strict.problems) == len(report.missing_images)
    assert all(p.field.endswith("_sticker.image") and "is missing" in p.message for p in strict.problems)


def test_fix_out_writes_the_valid_part_which_then_validates(tmp_path, library):
    fixed = tmp_path / "fixed.jsonl"
    report = validate(defective_file(tmp_path / "bad.jsonl"), resolver=library, fix_out=fixed)
    assert report.written == report.valid == 1
    assert validate(fixed, resolver=library).ok


def test_json_array_problems_name_the_elements_line(tmp_path):
    records = published_sessions()[:3]
    records[2]["conversation"][0]["user_message"] = ""
    path = tmp_path / "test.json"
    path.write_text(json.dumps(records, indent=2), encoding="utf-8")
    report = validate(path)
    starts = [number for number, line in enumerate(path.read_text().splitlines(), start=1) if line == "  {"]
    assert report.problems == [Problem(str(path), starts[2], "conversation[0].user_message", "empty message")]


def test_duplicates_across_files_point_at_the_first_copy(tmp_path):
    records = published_sessions()
    write_jsonl(tmp_path / "a_train.jsonl", records[:6])
    write_jsonl(tmp_path / "b_test.jsonl", records[5:])
    report = validate(tmp_path)
    assert [str(p) for p in report.problems] == [
        f"{tmp_path / 'b_test.jsonl'}:1: record: duplicate session: same persona, situation and messages as "
        f"{tmp_path / 'a_train.jsonl'}:6"
    ]


def test_cli_prints_each_problem_and_exits_1(tmp_path, library):
    path = defective_file(tmp_path / "bad.jsonl")
    result = subprocess.run(
        [str(SCRIPT), "data", "validate", str(path), "--stickers", str(library.root)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    for line, field, _ in EXPECTED:
        assert any(out.startswith(f"{path}:{line}: {field}: ") for out in lines), (line, field)
    assert "12 records (conversations), 19 stickers: 1 valid; 13 problem(s)" in result.stdout
    ok = subprocess.run(
        [str(SCRIPT), "data", "validate", str(write_jsonl(tmp_path / "ok.jsonl", published_sessions()))],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0 and "10 valid; valid" in ok.stdout
