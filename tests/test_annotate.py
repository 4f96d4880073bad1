"""The annotation pipeline (filter, captions, knowledge) against a real OpenAI-compatible test server that
checks image parts and answers from a script: good, refused, empty and malformed answers, bad image files,
resuming after a failure mid-stage, and what ends up in stickers.jsonl."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from stickerconv.llm import ChatModel
from stickerconv.llm.backends.openai_compat import OpenAICompatBackend
from stickerconv.llm.policy import RetryPolicy
from stickerconv.schema import Sticker
from stickerconv.stickers.annotate import (
    ANNOTATE_DIR,
    AnnotateAbort,
    AnnotateOptions,
    Annotation,
    CaptionRecord,
    FilterRecord,
    KnowledgeRecord,
    RejectRecord,
)
from stickerconv.stickers.annotate_prompts import CAPTION_QUESTIONS
from stickerconv.stickers.library import StickerLibrary

from helpers.annotate import BAD_FILES, COLOURS, GOOD, Script, make_library, write_png
from helpers.fake_openai_server import FakeOpenAIServer, FaultPlan


def chat_model(server: FakeOpenAIServer, attempts: int = 3) -> ChatModel:
    backend = OpenAICompatBackend("fake-vlm", base_url=server.base_url, api_key="test")
    return ChatModel(backend, cache="off", retry=RetryPolicy(max_attempts=attempts, base_delay=0.0, max_delay=0.0))


def run(library: StickerLibrary, server: FakeOpenAIServer, attempts: int = 3, **options) -> dict:
    annotation = Annotation(StickerLibrary.load(library.root), AnnotateOptions(**options))
    model = chat_model(server, attempts)

    async def go():
        try:
            return await annotation.run(model, model)
        finally:
            await model.aclose()

    return asyncio.run(go())


def records(root: Path, name: str, model) -> list:
    path = root / ANNOTATE_DIR / name
    return [model.model_validate_json(line) for line in path.read_text().splitlines()] if path.is_file() else []


def by_id(items) -> dict:
    ids = [r.id for r in items]
    assert len(ids) == len(set(ids)), f"duplicate records: {ids}"
    return {r.id: r for r in items}


@pytest.fixture
def library(tmp_path):
    return make_library(tmp_path / "lib")


def test_three_stages_write_their_records_rejects_and_the_library(library):
    script = Script(library)
    with FakeOpenAIServer(reply=script) as server:
        report = run(library, server)
        requests = list(server.requests)
    root = library.root

    filtered = by_id(records(root, "filter.jsonl", FilterRecord))
    assert set(filtered) == set(COLOURS)  # every usable image voted on, no bad file and not "done"
    assert (filtered["nope"].suit, filtered["nope"].suitable, filtered["nope"].unsuitable) == (False, 1, 3)
    assert (filtered["tie"].suit, filtered["tie"].suitable, filtered["tie"].unsuitable, filtered["tie"].unknown) == (
        True,
        2,
        2,
        1,
    )
    assert filtered["happy"].suitable == 5 and filtered["happy"].model == "fake-vlm"

    captions = by_id(records(root, "caption.jsonl", CaptionRecord))
    assert set(captions) == {*GOOD, "garbled"}
    qa = captions["happy"].qa
    assert [q.idx for q in qa] == [1, 2, 3, 4, 5]
    assert qa[0].query == "<image>\n" + CAPTION_QUESTIONS[0] and qa[4].query == CAPTION_QUESTIONS[4]
    assert qa[2].output == "[happy] Answer 3 about the happy sticker."

    known = by_id(records(root, "knowledge.jsonl", KnowledgeRecord))
    assert set(known) == set(GOOD)
    assert known["angry_h"].proposed_label == "Disgust" and known["tie"].proposed_label == "Neutral"
    assert known["happy"].qa == captions["happy"].qa

    rejects = by_id(records(root, "rejects.jsonl", RejectRecord))
    assert {i: (r.stage, r.kind) for i, r in rejects.items()} == {
        "corrupt": ("image", "bad_image"),
        "animated": ("image", "bad_image"),
        "huge": ("image", "bad_image"),
        "not_image": ("image", "bad_image"),
        "missing": ("image", "bad_image"),
        "nope": ("filter", "unsuitable"),
        "refuser": ("caption", "failed"),
        "mumbler": ("caption", "failed"),
        "garbled": ("knowledge", "failed"),
    }
    assert "truncated or corrupt" in rejects["corrupt"].reason
    assert "animated (2 frames)" in rejects["animated"].reason
    assert "too large: 5000x8" in rejects["huge"].reason
    assert "not an image" in rejects["not_image"].reason
    assert "missing" in rejects["missing"].reason
    assert (
        "refused question 1" in rejects["refuser"].reason and "empty answer to question 3" in rejects["mumbler"].reason
    )
    assert "no valid knowledge summary after 3 attempt(s)" in rejects["garbled"].reason
    assert "1 yes, 3 no, 1 unclear" in rejects["nope"].reason

    # the library: text from the knowledge stage, human labels untouched, proposals apart, fields kept
    after = StickerLibrary.load(root).by_id()
    happy = after["happy"]
    assert happy.description == "A happy square." and happy.emotion.startswith("The happy feeling")
    assert happy.recommendation == "Send it when you feel happy."
    assert (happy.seq_num, happy.style, happy.source, happy.licence) == (1, "test", "hand-made", "CC0-1.0")
    assert happy.meta["keep"] == [1, 2] and happy.meta["proposed_label"] == "Happiness"
    assert happy.label is None  # a proposal is not a label
    assert happy.meta["annotation"]["filter"] == {"suitable": 5, "unsuitable": 0, "unknown": 0}
    assert after["angry_h"].label == "Anger" and after["angry_h"].meta["proposed_label"] == "Disgust"
    assert after["nope"].description == "" and after["nope"].meta["annotation"]["rejected"]["stage"] == "filter"
    assert after["done"].model_dump() == library.by_id()["done"].model_dump()

    # the report
    assert report["filter"] == {"voted": 10, "passed": 9, "rejected": 1, "skipped": False}
    assert report["bad_images"] == 5 and report["caption"]["failed"] == 2 and report["knowledge"]["failed"] == 1
    assert report["knowledge"]["done"] == 6 and report["targets"] == 15
    assert report["labels"]["human"] == {"Anger": 1, "Neutral": 1, "Sadness": 1}
    assert report["labels"]["proposed"] == {"Disgust": 1, "Happiness": 1, "Neutral": 2, "Sadness": 1, "Surprise": 1}
    assert report["agreement"]["n"] == 2 and report["agreement"]["agree"] == 1 and report["agreement"]["rate"] == 0.5
    assert report["agreement"]["confusion"] == {"Sadness": {"Sadness": 1}, "Anger": {"Disgust": 1}}
    assert {b["id"] for b in report["bad_image_files"]} == set(BAD_FILES)
    assert json.loads((root / ANNOTATE_DIR / "report.json").read_text())["knowledge"]["done"] == 6

    # what went over the wire: image parts as data URIs, resized, with the method's sampling settings
    with_images = [r for r in requests if "image_url" in json.dumps(r["messages"])]
    assert len(with_images) == 10 * 5 * 3 + 7 * 5 + 2 * 1 + 2 * 3  # filter, captions, refuser and mumbler tries
    first = with_images[0]
    assert (first["temperature"], first["top_p"], first["max_tokens"]) == (0.2, 0.7, 1024)
    for request in with_images:
        parts = request["messages"][0]["content"]
        assert [p["type"] for p in parts] == ["text", "image_url"]
        assert parts[1]["image_url"]["url"].startswith("data:image/png;base64,")
    big = next(u for u, n in script.by_url.items() if n == "big")
    with Image.open(io.BytesIO(base64.b64decode(big.split(",", 1)[1]))) as img:
        assert img.size == (768, 480) and img.mode == "RGB"
    summaries = [r for r in requests if r.get("response_format")]
    assert summaries[0]["temperature"] == 0.5 and summaries[0]["max_tokens"] == 500
    prompts = [m["content"] for r in summaries for m in r["messages"] if m["role"] == "user"]
    assert any("QUESTION: What does this sticker depict?\nANSWER: [happy] Answer 1" in p for p in prompts)


def test_rerun_asks_nothing_and_changes_nothing(library):
    script = Script(library)
    with FakeOpenAIServer(reply=script) as server:
        run(library, server)
        files = {p.name: p.read_bytes() for p in (library.root / ANNOTATE_DIR).glob("*.jsonl")}
        stickers = library.jsonl_path.read_bytes()
        count = len(server.requests)
        report = run(library, server)
        assert len(server.requests) == count
    assert {p.name: p.read_bytes() for p in (library.root / ANNOTATE_DIR).glob("*.jsonl")} == files
    assert library.jsonl_path.read_bytes() == stickers
    assert report["changed"] == 0 and report["pending"] == {"filter": 0, "caption": 0, "knowledge": 0}


def _final_state(root: Path) -> dict:
    return {
        "filter": sorted(r.model_dump_json() for r in by_id(records(root, "filter.jsonl", FilterRecord)).values()),
        "caption": sorted(r.model_dump_json() for r in by_id(records(root, "caption.jsonl", CaptionRecord)).values()),
        "knowledge": sorted(
            r.model_dump_json() for r in by_id(records(root, "knowledge.jsonl", KnowledgeRecord)).values()
        ),
        "rejects": sorted(r.model_dump_json() for r in by_id(records(root, "rejects.jsonl", RejectRecord)).values()),
        "stickers": (root / "stickers.jsonl").read_text(),
    }


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    whole = make_library(tmp_path_factory.mktemp("whole") / "lib")
    with FakeOpenAIServer(reply=Script(whole)) as server:
        run(whole, server)
    return _final_state(whole.root)


# About 150 filter calls come first, then about 43 caption calls, then the summaries.
@pytest.mark.parametrize(("fail_after", "stage"), [(40, "filter"), (160, "caption"), (196, "knowledge")])
def test_failure_mid_stage_then_rerun_gives_no_duplicates_and_no_loss(tmp_path, uninterrupted, fail_after, stage):
    broken = make_library(tmp_path / "broken")
    script = Script(broken)
    script.fail_after = fail_after
    with FakeOpenAIServer(reply=script) as server:
        with pytest.raises(AnnotateAbort, match="failed on sticker .*run the same command again"):
            run(broken, server, concurrency=2)
        partial = _final_state(broken.root)
        assert 0 < len(partial[stage]) < len(uninterrupted[stage])  # it stopped in the middle of that stage
        later = ("filter", "caption", "knowledge")[("filter", "caption", "knowledge").index(stage) + 1 :]
        assert all(not partial[s] for s in later)
        script.fail_after = None
        # a crash while a line was being written leaves a torn tail: it is cut on the rerun
        with (broken.root / ANNOTATE_DIR / f"{stage}.jsonl").open("a") as fh:
            fh.write('{"id": "torn", "ima')
        run(broken, server, concurrency=2)
    final = _final_state(broken.root)
    assert final == uninterrupted
    for name in ("filter", "caption", "knowledge"):  # what was done before the failure is kept as it was
        assert set(partial[name]) <= set(final[name])


def test_transient_server_faults_are_retried_and_change_nothing(tmp_path, uninterrupted):
    library = make_library(tmp_path / "lib")
    script = Script(library)
    # A summary that is always malformed would use up its attempts, and whether the last one meets a
    # fault (the run stops) or a malformed answer (the sticker is rejected) depends on request order.
    script.malformed = set()
    faults = FaultPlan(rate=0.15, kinds=("429", "500", "truncated", "invalid_json"), retry_after="0", seed=3)
    with FakeOpenAIServer(reply=script, faults=faults) as server:
        run(library, server, attempts=10)
        assert sum(server.faults_injected.values()) > 10
    final = _final_state(library.root)
    assert final["filter"] == uninterrupted["filter"] and final["caption"] == uninterrupted["caption"]
    assert set(uninterrupted["knowledge"]) < set(final["knowledge"])
    ids = {json.loads(r)["id"] for r in uninterrupted["rejects"]} - {"garbled"}
    assert {json.loads(r)["id"] for r in final["rejects"]} == ids


def test_retry_failed_asks_again_and_a_fixed_image_is_checked_again(library):
    script = Script(library)
    with FakeOpenAIServer(reply=script) as server:
        run(library, server)
        write_png(library.root / "images" / "corrupt.png", (5, 5, 5))  # the user repairs a file
        script.by_url = Script(library).by_url
        report = run(library, server, retry_failed=True)
    rejects = by_id(records(library.root, "rejects.jsonl", RejectRecord))
    assert "corrupt" not in rejects and {"refuser", "mumbler", "garbled", "nope"} <= set(rejects)
    assert report["knowledge"]["done"] == 7 and report["bad_images"] == 4
    assert StickerLibrary.load(library.root).by_id()["corrupt"].description == "A corrupt square."


def test_adopt_labels_fills_only_missing_labels(library):
    with FakeOpenAIServer(reply=Script(library)) as server:
        report = run(library, server, adopt_labels=True)
    after = StickerLibrary.load(library.root).by_id()
    assert after["happy"].label == "Happiness" and after["happy"].meta["label_source"] == "proposed"
    assert after["angry_h"].label == "Anger" and "label_source" not in after["angry_h"].meta
    assert report["agreement"]["n"] == 2  # adopted labels are not counted as human ones


def test_skip_filter_limit_and_overwrite(library):
    with FakeOpenAIServer(reply=Script(library)) as server:
        report = run(library, server, skip_filter=True, limit=3)
        assert report["targets"] == 3 and report["filter"]["voted"] == 0
        assert not (library.root / ANNOTATE_DIR / "filter.jsonl").exists()
        report = run(library, server, skip_filter=True, limit=2, overwrite=True)
    assert report["targets"] == 5
    done = StickerLibrary.load(library.root).by_id()
    assert sum(1 for s in done.values() if s.meta and "proposed_label" in s.meta) == 5


def test_overwrite_keeps_the_replaced_text_in_meta(tmp_path):
    root = tmp_path / "lib"
    (root / "images").mkdir(parents=True)
    write_png(root / "images" / "happy.png", COLOURS["happy"])
    old = {"description": "Old words.", "emotion": "Old feeling.", "recommendation": "Old advice."}
    StickerLibrary(root, [Sticker(id="happy", image="images/happy.png", **old)]).save()
    library = StickerLibrary.load(root)
    with FakeOpenAIServer(reply=Script(library)) as server:
        assert run(library, server)["targets"] == 0
        run(library, server, overwrite=True)
    happy = StickerLibrary.load(root).by_id()["happy"]
    assert happy.description == "A happy square." and happy.meta["previous_text"] == old


def test_the_index_is_stale_after_annotation(library, embedder):
    from stickerconv.stickers.index import StickerIndex, StickerIndexError

    StickerIndex.build(StickerLibrary.load(library.root), embedder)[0].save()
    with FakeOpenAIServer(reply=Script(library)) as server:
        report = run(library, server, limit=1)
    assert report["index"] == "stale"
    with pytest.raises(StickerIndexError, match="stale"):
        StickerIndex.load(library.root, embedder)
