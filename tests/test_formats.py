"""Formats by content, not by name: writers honour the extension they are given, readers tell conversations,
samples, predictions and chat examples apart by their keys in any layout, and `--labels` takes a plain
image-name -> label object.

Self-contained: the sticker library is ingested from tiny images drawn here and the conversations are
written here, so nothing outside the checkout is read.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from stickerconv.data.convert import ImageLocator, convert
from stickerconv.data.io import (
    DataInputError,
    file_layout,
    iter_raw,
    load_conversations,
    open_source,
    output_layout,
    write_conversations,
    write_records,
)
from stickerconv.data.resolve import StickerResolver
from stickerconv.data.samples import load_samples, write_samples
from stickerconv.data.split import split_file
from stickerconv.data.stats import compute_stats
from stickerconv.data.validate import validate
from stickerconv.evaluate.predict import load_items, load_predictions, predict
from stickerconv.jsonl import RecordError
from stickerconv.llm import ChatModel
from stickerconv.responders import TextOnlyResponder
from stickerconv.schema import Conversation
from stickerconv.stickers.ingest import ingest_folder, load_annotations
from stickerconv.stickers.library import StickerLibrary

from helpers.fake_openai_server import FakeOpenAIServer
from helpers.llm_fakes import ScriptedBackend

SCRIPT = Path(sys.executable).parent / "stickerconv"
LAYOUTS = {".jsonl": "jsonl", ".json": "json", ".parquet": "parquet"}
LAYOUT_NAMES = {".jsonl": "JSON Lines", ".json": "JSON array", ".parquet": "parquet"}
LABELS = ["Happiness", "Sadness", "Anger", "Fear", "Surprise", "Neutral"]
NAMES = [f"0{i}-panda-bear_sticker_{i}.jpg" for i in range(1, 7)]
UNKNOWN_EXT = "unknown extension '.txt' for a data file; use .jsonl (JSON Lines), .json (one JSON array) or .parquet"


def draw_images(folder: Path) -> Path:
    """Six tiny JPEGs named as a flat labelled sticker set names them."""
    folder.mkdir(parents=True)
    for i, name in enumerate(NAMES):
        Image.new("RGB", (16, 16), (40 * i, 255 - 40 * i, 128)).save(folder / name, "JPEG")
    return folder


def labels_object() -> dict:
    """The simplest labels file: image name -> label; one entry is an object with a record's keys."""
    labels: dict = dict(zip(NAMES, LABELS, strict=True))
    labels[NAMES[0]] = {"label": "happiness", "description": "a panda waving", "emotion": "cheerful"}
    return labels


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lib")
    labels = root / "labels.json"
    labels.write_text(json.dumps(labels_object(), indent=2), encoding="utf-8")
    report = ingest_folder(draw_images(root / "src"), root / "lib", labels)
    assert (report.added, report.annotated, report.unmatched_annotations) == (6, 6, [])
    return root / "lib"


def sticker(library: Path, i: int) -> dict:
    s = StickerLibrary.load(library).stickers[i]
    return {
        "seq_num": i + 1,
        "image": s.image,
        "description": s.description or f"sticker {i}",
        "emotion": s.emotion or "calm",
        "recommendation": "any time",
        "origin_anno": s.label.value if s.label else None,
    }


def sessions(library: Path, n: int = 3) -> list[dict]:
    """``n`` published-format sessions of two turns, a user sticker in turn 1 and a system sticker in turn 2."""
    out = []
    for k in range(n):
        turns = [
            {
                "turn": 1,
                "user_message": f"I lost my keys again ({k}).",
                "system_message": "That is annoying; they will turn up.",
                "user_sticker": sticker(library, k % 6),
                "system_sticker": None,
            },
            {
                "turn": 2,
                "user_message": "I found them in the fridge.",
                "system_message": "Ha, the fridge keeps them cool!",
                "user_sticker": None,
                "system_sticker": sticker(library, (k + 1) % 6),
            },
        ]
        out.append({"conversation": turns, "user_persona": f"Persona {k}", "user_status": f"Status {k}"})
    return out


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def write(path: Path, records: list) -> Path:
    """Write ``records`` in the layout ``path``'s extension names."""
    write_records(path, records)
    return path


def read_back(path: Path) -> list:
    return [r.data for r in iter_raw(path)]


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = os.environ | {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "COLUMNS": "200"}
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=300, env=full_env | (env or {}))


def one_line(text: str) -> str:
    return " ".join(text.split())


# --- the user's scenario, through the real command ------------------------------------------------------------


def test_samples_jsonl_from_convert_feeds_predict_score_and_pegs_train(tmp_path, library):
    conversations = write_jsonl(tmp_path / "conversations.jsonl", sessions(library))
    samples = tmp_path / "x.jsonl"
    result = run_cli("data", "convert", str(conversations), "--to", "samples", "--out", str(samples))
    assert result.returncode == 0, result.stderr
    assert f"{conversations}: 3 conversations (JSON Lines)" in result.stdout
    assert "-> 6 samples in" in one_line(result.stdout) and "(JSON Lines)" in result.stdout.splitlines()[-1]
    lines = samples.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 6 and all(json.loads(line)["input_text"] for line in lines)  # one sample a line

    preds = tmp_path / "pred.jsonl"
    with FakeOpenAIServer() as server:
        env = {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "test"}
        args = ["--responder", "text", "--llm", "openai:fake-model", "--data", str(samples), "--out", str(preds)]
        result = run_cli("eval", "predict", *args, env=env)
    assert result.returncode == 0, result.stderr
    assert f"{samples}: 6 samples (JSON Lines)" in result.stdout
    assert file_layout(preds) == "jsonl" and len(load_predictions(preds)) == 6

    result = run_cli("eval", "score", "--pred", str(preds), "--out", str(tmp_path / "r"), "--metrics", "bleu")
    assert result.returncode == 0, result.stderr
    assert f"{preds}: 6 predictions (JSON Lines)" in result.stdout

    args = ["--preset", "tiny", "--stickers", str(library), "--out", str(tmp_path / "pegs"), "--data", str(samples)]
    result = run_cli("pegs", "train", *args, "--stages", "joint", "--steps", "2", "--batch-size", "2")
    assert result.returncode == 0, result.stderr
    assert f"{samples}: 6 samples (JSON Lines)" in result.stdout
    assert "joint: 2 steps" in one_line(result.stdout)


def test_pegs_train_renders_conversations_and_refuses_predictions(tmp_path, library):
    from typer.testing import CliRunner

    from stickerconv.cli import app

    conversations = write_jsonl(tmp_path / "c.json", sessions(library))  # JSON Lines behind a .json name
    base = ["pegs", "train", "--preset", "tiny", "--stickers", str(library), "--stages", "joint", "--steps", "1"]
    result = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "p"), "--data", str(conversations)])
    assert "the joint stage has 6 example(s), fewer than one batch of 8; lower --batch-size" in str(result.exception)
    base += ["--batch-size", "2"]
    result = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "p"), "--data", str(conversations)])
    assert result.exit_code == 0, result.output
    assert f"{conversations}: 3 conversations (JSON Lines) -> 6 samples (one a turn, v1.5 style)" in one_line(
        result.output
    )
    preds = write(tmp_path / "p.json", [prediction(s) for s in samples_of(library)])
    result = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "q"), "--data", str(preds)])
    assert isinstance(result.exception, DataInputError)
    assert str(result.exception) == f"{preds}: found predictions (JSON array), expected samples or conversations"
    assert not (tmp_path / "q").exists()  # refused before any training


def test_a_json_array_named_jsonl_is_still_read_as_samples(tmp_path, library):
    """The file the old `data convert --to samples --out x.jsonl` wrote: a JSON array in a .jsonl file."""
    path = tmp_path / "old.jsonl"
    samples = samples_of(library)
    path.write_text("[\n" + ",\n".join(json.dumps(s) for s in samples) + "\n]\n", encoding="utf-8")
    source = open_source(path)
    items = load_items(source)
    assert (source.kind, source.layouts, len(items)) == ("samples", ["json"], 6)
    assert source.describe() == f"{path}: 6 samples (JSON array)"


# --- writers honour the extension -----------------------------------------------------------------------------


def samples_of(library: Path) -> list[dict]:
    from stickerconv.data.samples import render_samples

    rendered = [render_samples(Conversation.model_validate(s), "v1.5", lambda x: x.image) for s in sessions(library)]
    return [s.model_dump(mode="json") for group in rendered for s in group]


def prediction(sample: dict) -> dict:
    return sample | {"item_id": "s0", "pred_text_response": "ok", "pred_image": [], "pred_image_metadata": None}


@pytest.mark.parametrize("suffix", list(LAYOUTS))
def test_every_writer_writes_the_layout_its_extension_names_and_reads_back(tmp_path, library, suffix):
    records = sessions(library)
    source = write_jsonl(tmp_path / "in.jsonl", records)
    layout = LAYOUTS[suffix]

    out = tmp_path / f"conversations{suffix}"
    assert write_conversations(out, load_conversations(source)) == 3
    assert (file_layout(out), open_source(out).kind, read_back(out)) == (layout, "conversations", records)

    out = tmp_path / f"samples{suffix}"
    assert convert(source, "samples", out).written == 6
    assert (file_layout(out), open_source(out).kind, read_back(out)) == (layout, "samples", samples_of(library))
    loaded = load_samples(out, "v1.5", lambda x: x.image)
    assert [s.model_dump(mode="json") for s in loaded] == samples_of(library)
    out2 = tmp_path / f"again{suffix}"
    assert write_samples(out2, loaded) == 6 and read_back(out2) == read_back(out)

    out = tmp_path / f"chat{suffix}"
    assert convert(source, "chat", out).written == 3
    assert (file_layout(out), open_source(out).kind) == (layout, "chat")

    out = tmp_path / f"pred{suffix}"
    model = ChatModel(ScriptedBackend(default="I hear you."), cache="off")
    items = load_items(source)
    assert asyncio.run(predict(TextOnlyResponder(model), items, out)) == 6
    assert (file_layout(out), open_source(out).kind) == (layout, "predictions")
    assert [r["pred_text_response"] for r in load_predictions(out)] == ["I hear you."] * 6
    assert [r["item_id"] for r in load_predictions(out)] == [i.item_id for i in items]

    report = split_file(source, tmp_path / f"split{suffix}", ratios=[0.34, 0.33, 0.33], layout=layout)
    assert {p.name for p in report.files.values()} == {f"{n}{suffix}" for n in ("train", "validation", "test")}
    assert all(file_layout(p) == layout for p in report.files.values())
    assert sorted(map(json.dumps, read_back(tmp_path / f"split{suffix}"))) == sorted(map(json.dumps, records))

    out = tmp_path / f"fixed{suffix}"
    assert validate(source, fix_out=out).written == 3
    assert (file_layout(out), read_back(out)) == (layout, records)


def test_a_json_file_is_one_array_with_one_record_a_line(tmp_path):
    path = tmp_path / "x.json"
    write_records(path, [{"a": 1}, {"b": 2}])
    assert path.read_text(encoding="utf-8") == '[\n{"a": 1},\n{"b": 2}\n]\n'
    write_records(path, [])
    assert path.read_text(encoding="utf-8") == "[]\n" and read_back(path) == []


def test_unknown_extensions_are_refused_before_any_work(tmp_path, library):
    missing = tmp_path / "no-such-input.jsonl"  # never read: the output name fails first
    bad = tmp_path / "out.txt"
    for call in (
        lambda: write_records(bad, [{"a": 1}]),
        lambda: convert(missing, "samples", bad),
        lambda: convert(missing, "chat", bad),
        lambda: validate(missing, fix_out=bad),
        lambda: asyncio.run(predict(TextOnlyResponder(ChatModel(ScriptedBackend(), cache="off")), [], bad)),
    ):
        with pytest.raises(DataInputError) as info:
            call()
        assert str(info.value) == f"{bad}: {UNKNOWN_EXT}"
    with pytest.raises(DataInputError, match="no extension for a data file"):
        output_layout(tmp_path / "samples")
    with pytest.raises(ValueError, match="unknown layout 'csv'; choose from jsonl, json, parquet"):
        split_file(missing, tmp_path / "s", layout="csv")  # type: ignore[arg-type]
    assert not bad.exists() and list(tmp_path.iterdir()) == []

    source = write_jsonl(tmp_path / "in.jsonl", sessions(library))
    result = run_cli("data", "convert", str(source), "--to", "samples", "--out", str(bad))
    assert result.returncode == 2 and one_line(f"error: {bad}: {UNKNOWN_EXT}") in one_line(result.stderr)
    assert f"{source}: 3 conversations" not in result.stdout  # refused before reading


# --- readers detect the kind from the content -----------------------------------------------------------------


@pytest.mark.parametrize("suffix", list(LAYOUTS))
def test_each_kind_is_detected_in_each_layout_whatever_the_name(tmp_path, library, suffix):
    samples = samples_of(library)
    kinds = {
        "conversations": sessions(library),
        "samples": samples,
        "predictions": [prediction(s) for s in samples],
        "chat": [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}],
    }
    for kind, records in kinds.items():
        path = tmp_path / f"{kind}{suffix}"
        write_records(path, records)
        source = open_source(path)
        assert (source.kind, source.layouts) == (kind, [LAYOUTS[suffix]])
        assert len(list(source.raw())) == len(records)
        noun = "chat example" if kind == "chat" else kind
        assert source.describe() == f"{path}: {len(records)} {noun} ({LAYOUT_NAMES[suffix]})"
    # the name does not decide: each layout behind every other extension is read by its content
    for other in LAYOUTS:
        renamed = tmp_path / f"renamed{other}"
        renamed.write_bytes((tmp_path / f"samples{suffix}").read_bytes())
        source = open_source(renamed)
        assert (source.kind, source.layouts, read_back(renamed)) == ("samples", [LAYOUTS[suffix]], samples)


def test_a_reader_given_the_wrong_kind_says_what_it_found_and_expected(tmp_path, library):
    samples = samples_of(library)
    preds = write(tmp_path / "preds.json", [prediction(s) for s in samples])
    sample_file = write(tmp_path / "s.jsonl", samples)
    conversations = write(tmp_path / "c.parquet", sessions(library))
    cases = [
        (lambda: compute_stats(preds), f"{preds}: found predictions (JSON array), expected conversations"),
        (lambda: load_conversations(sample_file), f"{sample_file}: found samples (JSON Lines), expected conversations"),
        (lambda: split_file(preds, tmp_path / "x"), f"{preds}: found predictions (JSON array), expected conversations"),
        (
            lambda: convert(sample_file, "chat", tmp_path / "chat.jsonl"),
            f"{sample_file}: found samples (JSON Lines), expected conversations",
        ),
        (
            lambda: load_items(preds),
            f"{preds}: found predictions (JSON array), expected conversations or samples",
        ),
        (
            lambda: load_predictions(sample_file),
            f"{sample_file}: found samples (JSON Lines), expected predictions (`stickerconv eval predict` writes them)",
        ),
        (
            lambda: load_predictions(conversations),
            f"{conversations}: found conversations (parquet), expected predictions "
            "(`stickerconv eval predict` writes them)",
        ),
    ]
    for call, message in cases:
        with pytest.raises(DataInputError) as info:
            call()
        assert str(info.value) == message
    assert not (tmp_path / "x").exists() and not (tmp_path / "chat.jsonl").exists()

    result = run_cli("data", "stats", str(preds))
    assert result.returncode == 2
    assert one_line(result.stderr) == f"error: {preds}: found predictions (JSON array), expected conversations"


def test_eval_predict_takes_conversations_or_samples_and_validate_any_kind(tmp_path, library):
    conversations = write(tmp_path / "c.parquet", sessions(library))
    samples = write(tmp_path / "s.json", samples_of(library))
    from_conversations, from_samples = load_items(conversations), load_items(samples)
    assert [i.sample for i in from_conversations] == [i.sample for i in from_samples]
    assert [i.item_id for i in from_samples] == [f"s{n}" for n in range(6)]
    preds = write(tmp_path / "p.jsonl", [prediction(s) for s in samples_of(library)])
    for path, kind in ((conversations, "conversations"), (samples, "samples"), (preds, "predictions")):
        report = validate(path)
        assert (report.kind, report.ok, report.records) == (kind, True, 3 if kind == "conversations" else 6)


def test_records_of_another_kind_or_of_no_kind_are_located(tmp_path, library):
    records = sessions(library)
    records.insert(2, samples_of(library)[0])
    mixed = write_jsonl(tmp_path / "mixed.jsonl", records)
    with pytest.raises(RecordError) as info:
        load_conversations(mixed)
    assert str(info.value) == f"{mixed}:3: a sample in a file of conversations; one file holds one kind of record"
    report = validate(mixed)
    assert [(p.line, p.field, p.message) for p in report.problems] == [
        (3, "record", "a sample in a file of conversations; one file holds one kind of record")
    ]

    odd = write_jsonl(tmp_path / "odd.jsonl", [{"b": 1, "a": 2}])
    with pytest.raises(RecordError) as info:
        load_items(odd)
    assert str(info.value) == (
        f"{odd}:1: cannot tell what this record is (keys: a, b): a conversation has 'conversation', a sample "
        "'input_text' and 'response_text', a prediction also 'pred_text_response', a chat example 'messages'"
    )

    folder = tmp_path / "folder"
    folder.mkdir()
    write_jsonl(folder / "a.jsonl", sessions(library))
    write_jsonl(folder / "b.jsonl", samples_of(library))
    with pytest.raises(DataInputError) as info:
        open_source(folder)
    assert str(info.value) == (
        f"{folder}: the files hold different kinds of record: conversations (a.jsonl), samples (b.jsonl); "
        "read them one by one"
    )


def test_a_bad_sample_or_prediction_is_located_by_file_line_and_field(tmp_path, library):
    samples = samples_of(library)
    samples[1]["input_text"] = 7
    path = write_jsonl(tmp_path / "bad.jsonl", samples)
    with pytest.raises(RecordError) as info:
        load_items(path)
    assert str(info.value) == f"{path}:2: field 'input_text': Input should be a valid string"

    samples = samples_of(library)
    samples[2]["input_image"] = []
    path = write_jsonl(tmp_path / "img.jsonl", samples)
    with pytest.raises(RecordError) as info:
        load_samples(path, "v1.5", lambda x: x.image)
    assert str(info.value) == f"{path}:3: field 'input_image': 0 image(s) but input_text has 1 <IMG>"

    preds = [prediction(s) for s in samples_of(library)]
    preds[4]["pred_image"] = "one.png"
    path = tmp_path / "p.json"
    path.write_text(json.dumps(preds, indent=1), encoding="utf-8")
    line = next(r.line for i, r in enumerate(iter_raw(path)) if i == 4)
    with pytest.raises(RecordError) as info:
        load_predictions(path)
    assert str(info.value) == f"{path}:{line}: field 'pred_image': Input should be a valid array"


def test_misspelt_prediction_key_of_the_original_code_is_a_prediction(tmp_path, library):
    record = samples_of(library)[0] | {"pred_text_reponse": "old spelling"}
    path = write_jsonl(tmp_path / "old.jsonl", [record])
    assert open_source(path).kind == "predictions"
    assert load_predictions(path)[0]["pred_text_reponse"] == "old spelling"


# --- labels files ---------------------------------------------------------------------------------------------


def test_a_labels_object_is_ingested_with_its_labels_through_the_cli(tmp_path):
    images = draw_images(tmp_path / "images")
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps(labels_object(), indent=2), encoding="utf-8")
    result = run_cli("stickers", "ingest", str(images), str(tmp_path / "lib"), "--labels", str(labels))
    assert result.returncode == 0, result.stderr
    assert "6 annotated" in one_line(result.stdout)
    stickers = {s.id: s for s in StickerLibrary.load(tmp_path / "lib")}
    assert {i: s.label.value for i, s in stickers.items()} == {
        name.removesuffix(".jpg"): label for name, label in zip(NAMES, LABELS, strict=True)
    }
    first = stickers[NAMES[0].removesuffix(".jpg")]
    assert (first.description, first.emotion) == ("a panda waving", "cheerful")


def test_labels_files_in_every_form_give_the_same_annotations(tmp_path):
    records = [{"image": name, "label": label} for name, label in zip(NAMES, LABELS, strict=True)]
    forms = {
        "object.json": json.dumps(dict(zip(NAMES, LABELS, strict=True)), indent=2),
        "one-line-object.json": json.dumps(dict(zip(NAMES, LABELS, strict=True))),
        "records.json": json.dumps(records, indent=2),
        "records.jsonl": "".join(json.dumps(r) + "\n" for r in records),
        "records.csv": "image,label\n" + "".join(f"{r['image']},{r['label']}\n" for r in records),
    }
    expected = {name.removesuffix(".jpg"): label for name, label in zip(NAMES, LABELS, strict=True)}
    for name, text in forms.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
        found = load_annotations(tmp_path / name)
        assert {k: a.label.value for k, a in found.items()} == expected, name
    single = tmp_path / "single.json"
    single.write_text(json.dumps({"image": NAMES[0], "label": "Fear"}), encoding="utf-8")
    assert {k: a.label.value for k, a in load_annotations(single).items()} == {NAMES[0].removesuffix(".jpg"): "Fear"}


LABEL_LIST = "Anger, Disgust, Fear, Happiness, Neutral, Sadness, Surprise"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{\n  "a.jpg": "Happy"\n}', f"2: field 'a.jpg': unknown label 'Happy'; use one of {LABEL_LIST} (any case)"),
        (
            '{\n  "a.jpg": "Fear",\n  "b.jpg": 3\n}',
            f"3: field 'b.jpg': expected a label ({LABEL_LIST}) or an object with label, description, emotion "
            "and recommendation, got a number",
        ),
        ('{"a.jpg": ""}', f"1: field 'a.jpg': empty label; use one of {LABEL_LIST}"),
        (
            '{"a.jpg": {"image": "b.jpg", "label": "Fear"}}',
            "1: field 'a.jpg': the key names the image; leave 'image' and 'path' out of the value",
        ),
        ('{"a.jpg": {"label": "Fear", "emotion": 3}}', "1: field 'a.jpg.emotion': Input should be a valid string"),
        (
            '{\n  "a.jpg": "Fear",\n  "a.jpg": "Anger"\n}',
            "3: field 'image': duplicate annotation for 'a' (first at line/record 2)",
        ),
        ('{\n  "a.jpg": "Fear"\n  "b.jpg": "Anger"\n}', "3: not valid JSON (Expecting ',' delimiter at column 3)"),
        (
            '[{"image": "a.jpg", "label": "joy"}]',
            f"1: field 'label': unknown label 'joy'; use one of {LABEL_LIST} (any case)",
        ),
    ],
)
def test_a_bad_labels_file_names_the_real_problem(tmp_path, text, message):
    path = tmp_path / "labels.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(RecordError) as info:
        load_annotations(path)
    assert str(info.value) == f"{path}:{message}"


def test_a_label_name_that_matches_no_image_is_reported(tmp_path):
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({NAMES[0]: "Fear", "nowhere.jpg": "Anger"}), encoding="utf-8")
    report = ingest_folder(draw_images(tmp_path / "images"), tmp_path / "lib", labels)
    assert (report.annotated, report.unmatched_annotations) == (1, ["nowhere"])


def test_convert_with_a_library_keeps_library_paths_in_every_layout(tmp_path, library):
    source = write_jsonl(tmp_path / "in.jsonl", sessions(library))
    locator = ImageLocator(StickerResolver(StickerLibrary.load(library)))
    convert(source, "samples", tmp_path / "s.parquet", locator=locator)
    first = read_back(tmp_path / "s.parquet")[0]
    assert first["input_image"] and all((library / p).is_file() for p in first["input_image"])
