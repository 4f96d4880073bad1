import pytest

from stickerconv.jsonl import RecordError, drop_torn_tail, read_jsonl, write_jsonl_atomic
from stickerconv.schema import Sticker


def test_round_trip_and_blank_lines(tmp_path):
    path = tmp_path / "s.jsonl"
    stickers = [Sticker(image=f"images/{i}.png", description="café ’") for i in range(3)]
    assert write_jsonl_atomic(path, stickers) == 3
    path.write_text(path.read_text(encoding="utf-8") + "\n\n", encoding="utf-8")
    assert read_jsonl(path, Sticker) == stickers
    assert "café ’" in path.read_text(encoding="utf-8")  # written as UTF-8, not \u escapes


@pytest.mark.parametrize(
    ("line", "field", "message"),
    [
        ("{not json", None, "not valid JSON"),
        ('["a list"]', None, "expected a JSON object"),
        ('{"image": "a.png", "label": "Joyful"}', "label", "Input should be"),
        ('{"description": "no image"}', "image", "Field required"),
    ],
)
def test_bad_line_names_file_line_and_field(tmp_path, line, field, message):
    path = tmp_path / "stickers.jsonl"
    path.write_text('{"image": "ok.png"}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(RecordError) as info:
        read_jsonl(path, Sticker)
    err = info.value
    assert (err.path, err.line, err.field) == (path, 2, field)
    assert message in str(err) and f"{path}:2" in str(err)


def test_failed_write_leaves_old_file(tmp_path):
    path = tmp_path / "s.jsonl"
    write_jsonl_atomic(path, [Sticker(image="a.png")])

    def broken():
        yield Sticker(image="b.png")
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        write_jsonl_atomic(path, broken())
    assert [s.image for s in read_jsonl(path, Sticker)] == ["a.png"]
    assert list(tmp_path.iterdir()) == [path]


def test_drop_torn_tail(tmp_path):
    path = tmp_path / "runs.jsonl"
    path.write_text('{"image": "a.png"}\n{"ima')
    assert drop_torn_tail(path) is True
    assert path.read_text() == '{"image": "a.png"}\n'
    assert drop_torn_tail(path) is False and drop_torn_tail(tmp_path / "missing.jsonl") is False
