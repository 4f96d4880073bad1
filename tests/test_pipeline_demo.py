"""``stickerconv.pipelines.demo.run_demo`` from Python, without the command line: at toy sizes against a
scripted OpenAI-compatible server it builds every step's files and the report and returns what the console
shows; a second run reuses every step without a call to the model. The step cache (keys, resume, redo) and
the step logs are checked on their own with steps that only write a file."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from stickerconv.llm.types import ConfigError
from stickerconv.pipelines.common import PipelineError, no_progress
from stickerconv.pipelines.demo import (
    ALIGN_RECORD,
    Alignment,
    DemoFacts,
    DemoModel,
    DemoOptions,
    DemoResult,
    DemoState,
    Step,
    StepReport,
    demo_steps,
    run_demo,
    run_steps,
    step_log,
)
from stickerconv.pipelines.demo_report import HEADLINE, SYSTEMS, Figure, RunFolder

from helpers.demo import demo_reply
from helpers.fake_openai_server import FakeOpenAIServer

STEPS = ["pack", "personas", "simulate", "dataset", "pegs", "evaluate"]
TOY = {"n_personas": 3, "max_turns": 2, "pegs_preset": "tiny", "pegs_steps": 2, "joint_steps": 2}
TOY |= {"vision_steps": 20, "eval_items": 2, "pack_limit": 60, "llm": "openai:fake-model"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """The demo built once, then run again on the same folder; the events each run reported and the calls the
    server answered during each."""
    options = DemoOptions(out=tmp_path_factory.mktemp("pipeline-demo") / "run", **TOY)
    first: list[StepReport] = []
    again: list[StepReport] = []
    with FakeOpenAIServer(model="fake-model", reply=demo_reply) as server, pytest.MonkeyPatch.context() as patch:
        patch.setenv("OPENAI_BASE_URL", server.base_url)
        patch.setenv("OPENAI_API_KEY", "test")
        built = run_demo(options, on_step=first.append)
        calls = len(server.requests)
        reused = run_demo(options, on_step=again.append)
        calls_again = len(server.requests) - calls
    runs = {"options": options, "built": built, "first": first, "reused": reused, "again": again}
    return runs | {"calls": calls, "calls_again": calls_again}


def test_every_step_is_built_into_the_run_folder(runs) -> None:
    built: DemoResult = runs["built"]
    run = RunFolder(runs["options"].out)
    assert [step.name for step in built.steps] == STEPS and {step.status for step in built.steps} == {"built"}
    assert [(e.name, e.status) for e in runs["first"]] == [(s, status) for s in STEPS for status in ("new", "built")]
    assert runs["calls"] > 0
    state = json.loads((run.out / "demo-state.json").read_text())
    assert list(state) == STEPS and all(record["done"] for record in state.values())
    assert len(run.profiles.read_text().splitlines()) == 3
    assert (run.sessions / "conversations.jsonl").is_file() and (run.pack / "demo-pack.json").is_file()
    assert run.train_samples.is_file() and run.test_samples.is_file()
    assert (run.checkpoint / "pegs_config.json").is_file()
    assert len(json.loads((run.evaluation / "pred-text.json").read_text())) == 2  # eval_items
    scores = json.loads((run.evaluation / "scores.json").read_text())
    assert list(scores) == list(SYSTEMS)
    for name in ("index", "tool", "pegs"):
        assert "all" in json.loads((run.evaluation / f"retrieval-{name}.json").read_text())
    for step in STEPS:
        assert run.log(step).stat().st_size > 0
    # PEGS's sticker-only stages ran in a second process beside the simulation, and the PEGS step adopted them
    assert "sticker-only stages started beside the simulation" in run.log("simulate").read_text()
    adopted = "adopted 00-vision, 01-perception, 02-retrieval, 03-generation, trained in"
    assert adopted in run.log("pegs").read_text() and run.log("pegs-align").stat().st_size > 0
    assert not run.pegs_align.exists() and (run.pegs / "04-joint" / "pegs_config.json").is_file()
    assert "pegs-align" not in (run.pegs / "02-retrieval" / "pegs_config.json").read_text()
    report = built.report.read_text()
    assert built.report == run.out / "REPORT.md"
    for section in ("## Sticker pack", "## Dataset", "## Evaluation on the held-out turns", "## LLM calls"):
        assert section in report
    assert "| personas | openai:fake-model (" in report and "### Signatures" in report


def test_the_result_carries_the_rows_and_the_headline_the_console_shows(runs) -> None:
    built: DemoResult = runs["built"]
    steps = {step.name: step for step in built.steps}
    assert dict(steps["personas"].rows)["model"].startswith("openai:fake-model (")
    assert dict(steps["dataset"].rows)["sessions"].endswith(", 2.00 turns each (max 2)")
    assert steps["pack"].seconds is not None and steps["pack"].log == RunFolder(built.out).log("pack")
    headline = built.headline
    assert headline is not None and steps["evaluate"].headline == headline and steps["evaluate"].rows == []
    assert headline.headings == [heading for heading, _, _ in HEADLINE]
    assert [row.responder for row in headline.rows] == [*SYSTEMS, "index"]
    scores = json.loads((built.out / "eval" / "scores.json").read_text())
    sent = headline.headings.index("stickers sent")
    for row in headline.rows[:3]:
        assert row.cells[sent] == Figure.read(scores[row.responder]["sticker_frequency"])
    index_r1 = headline.rows[3].cells[headline.headings.index("R10@1")]
    assert isinstance(index_r1, Figure) and 0 <= index_r1.score <= 1
    assert headline.samples == 2
    assert DemoResult.model_validate_json(built.model_dump_json()) == built  # what --json prints reads back


def test_a_second_run_reuses_every_step_without_a_call(runs) -> None:
    reused: DemoResult = runs["reused"]
    assert [(e.name, e.status) for e in runs["again"]] == [(s, "cached") for s in STEPS]
    assert runs["calls_again"] == 0
    assert reused.headline == runs["built"].headline
    assert {step.name: step.rows for step in reused.steps} == {step.name: step.rows for step in runs["built"].steps}


# ---------------------------------------------------------------------------------------- the step cache
def _steps(out: Path, params: dict[str, dict], ran: list[str]) -> list[Step]:
    """Three steps that each write one file; ``b`` reads ``a``'s result and ``c`` reads ``b``'s."""

    def work(name: str):
        def run() -> dict:
            ran.append(name)
            (out / name).write_text(name)
            return {"wrote": name}

        return run

    after = {"a": [], "b": ["a"], "c": ["b"]}
    return [
        Step(name, f"step {name}", [out / name], params[name], work(name), lambda: [("ok", "yes")], after[name])
        for name in "abc"
    ]


def test_only_stages_finished_under_the_runs_own_options_are_adopted(tmp_path) -> None:
    options = DemoOptions(out=tmp_path / "run", **TOY)
    run, alignment = options.run, Alignment(options)
    (run.pegs_align / "00-vision").mkdir(parents=True)
    cnn = json.dumps({"vision": {"name_or_path": "vision-cnn.pt"}})  # checkpoints carry their CNN: no rewrite
    (run.pegs_align / "01-perception").mkdir()
    (run.pegs_align / "01-perception" / "pegs_config.json").write_text(cnn)
    assert alignment.adopt(run.pegs) == [] and run.pegs_align.is_dir()  # unfinished: no align.json
    other = json.loads(alignment.wanted.model_copy(update={"steps": 99}).model_dump_json())
    (run.pegs_align / ALIGN_RECORD).write_text(json.dumps({"options": other, "seconds": 1.0}))
    assert alignment.adopt(run.pegs) == [] and not run.pegs.exists()  # finished under other options
    wanted = json.loads(alignment.wanted.model_dump_json())
    (run.pegs_align / ALIGN_RECORD).write_text(json.dumps({"options": wanted, "seconds": 1.0}))
    assert alignment.adopt(run.pegs) == ["00-vision", "01-perception"] and not run.pegs_align.exists()
    assert (run.pegs / "01-perception" / "pegs_config.json").is_file() and (run.pegs / "00-vision").is_dir()


def test_what_the_alignment_process_prints_goes_to_its_log(tmp_path, capfd) -> None:
    """Without a pack the stages fail at once: the traceback the process prints is in its log, and nothing
    reaches the demo's console; nothing is adopted."""
    options = DemoOptions(out=tmp_path / "run", **TOY)
    alignment = Alignment(options)
    alignment.start()
    assert alignment.adopt(options.run.pegs) == []  # waits for the process
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err and "pegs" not in (out + err).lower()
    text = options.run.log("pegs-align").read_text()
    assert "PEGS sticker-only stages failed" in text and "Traceback" in text


def test_changed_options_redo_their_step_and_the_ones_after_it(tmp_path) -> None:
    state, run, ran = DemoState(tmp_path / "demo-state.json"), RunFolder(tmp_path), []
    params = {"a": {"n": 1}, "b": {"n": 1}, "c": {"n": 1}}
    reports, spent = run_steps(_steps(tmp_path, params, ran), state, run, lambda report: None)
    assert ran == ["a", "b", "c"] and [r.status for r in reports] == ["built"] * 3 and set(spent) == {"a", "b", "c"}
    assert "step a done" in run.log("a").read_text() and '"wrote": "a"' in run.log("a").read_text()
    events: list[StepReport] = []
    run_steps(_steps(tmp_path, params | {"b": {"n": 2}}, ran), DemoState(state.path), run, events.append)
    assert ran[3:] == ["b", "c"]
    assert [(e.name, e.status) for e in events] == [
        ("a", "cached"),
        ("b", "redoing"),
        ("b", "built"),
        ("c", "redoing"),
        ("c", "built"),
    ]
    (tmp_path / "c").unlink()  # a lost output redoes its step under the same key: it resumes
    events.clear()
    run_steps(_steps(tmp_path, params | {"b": {"n": 2}}, ran), DemoState(state.path), run, events.append)
    assert ran[5:] == ["c"] and ("c", "resuming") in [(e.name, e.status) for e in events]


def test_a_step_whose_result_was_deleted_inside_its_kept_folder_is_redone(tmp_path) -> None:
    state, run, ran = DemoState(tmp_path / "demo-state.json"), RunFolder(tmp_path), []

    def train() -> None:
        ran.append("train")
        (tmp_path / "out" / "final").mkdir(parents=True, exist_ok=True)
        (tmp_path / "out" / "final" / "weights").write_text("w")

    result = [tmp_path / "out" / "final" / "weights"]
    step = Step("train", "train", [tmp_path / "out"], {}, train, lambda: [], result=result)
    run_steps([step], state, run, lambda report: None)
    (tmp_path / "out" / "final" / "weights").unlink()  # the folder stays: the old check called this cached
    events: list[StepReport] = []
    run_steps([step], DemoState(state.path), run, events.append)
    assert ran == ["train", "train"] and [e.status for e in events] == ["resuming", "built"]


def test_the_demos_pegs_step_is_finished_only_with_its_whole_checkpoint(tmp_path) -> None:
    """The chat reads ``pegs/final``: a kept ``pegs/`` with stage folders but no final checkpoint is redone."""
    options = DemoOptions(out=tmp_path / "run", **TOY)
    facts = DemoFacts(options.run, lambda name: None)
    steps = {s.name: s for s in demo_steps(options, DemoModel.resolve(options.llm, None), facts, no_progress)}
    (options.run.pegs / "05-send").mkdir(parents=True)
    assert not steps["pegs"].finished()
    for path in steps["pegs"].result:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.mkdir() if path.name == "tokenizer" else path.write_text("{}")
    assert steps["pegs"].finished() and {p.name for p in steps["pegs"].result} >= {"pegs_config.json"}
    (options.run.checkpoint / "weights.safetensors").unlink()
    assert not steps["pegs"].finished()
    options.run.dataset.mkdir(parents=True)
    assert not steps["dataset"].finished()  # the folder alone is not the split


def test_a_failing_step_is_reported_logged_and_left_unfinished(tmp_path) -> None:
    state, run = DemoState(tmp_path / "demo-state.json"), RunFolder(tmp_path)

    def fail() -> None:
        raise RuntimeError("the model is gone")

    step = Step("a", "step a", [tmp_path / "a"], {}, fail, lambda: [])
    events: list[StepReport] = []
    with pytest.raises(RuntimeError, match="the model is gone"):
        run_steps([step], state, run, events.append)
    assert [e.status for e in events] == ["new", "failed"] and events[-1].log == run.log("a")
    assert "the model is gone" in run.log("a").read_text()
    assert json.loads(state.path.read_text())["a"]["done"] is False


def teststep_logs_keep_info_and_still_show_the_callers_warnings(tmp_path, caplog) -> None:
    logger = logging.getLogger("stickerconv")
    before = (logger.level, logger.propagate)
    with caplog.at_level(logging.WARNING), step_log(tmp_path / "step.log"):
        logging.getLogger("stickerconv.somewhere").info("kept in the log")
        logging.getLogger("stickerconv.somewhere").warning("shown to the caller")
    text = (tmp_path / "step.log").read_text()
    assert "kept in the log" in text and "shown to the caller" in text
    assert [r.getMessage() for r in caplog.records] == ["shown to the caller"]
    assert (logger.level, logger.propagate) == before and not any(
        isinstance(h, logging.FileHandler) for h in logger.handlers
    )


def test_input_errors_stop_before_any_step(tmp_path) -> None:
    with pytest.raises(PipelineError, match="--responder 'pegs-gen': choose from text, tool, pegs-ret"):
        run_demo(DemoOptions(out=tmp_path / "a", responder="pegs-gen"))
    with pytest.raises(ConfigError, match="unknown LLM 'gpt-4o'"):
        run_demo(DemoOptions(out=tmp_path / "b", llm="gpt-4o"))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "demo-state.json").write_text("{not json")
    with pytest.raises(PipelineError, match="not a demo state file"):
        run_demo(DemoOptions(out=tmp_path / "c"))


def _sessions_without_system_stickers(records: list[dict], stripped: set[int]) -> str:
    for i in stripped:
        for turn in records[i]["conversation"]:
            turn["system_sticker"] = None
    return "".join(json.dumps(r) + "\n" for r in records)


def test_the_split_seed_moves_on_until_train_and_test_both_have_a_sticker_reply(runs, tmp_path) -> None:
    """A toy run's few sessions can put every sticker reply on one side of the split: the dataset step then
    tries the next seeds, and stops with a clear error only when no split of its seeds has one on both sides."""
    import shutil

    from stickerconv.data.split import assign
    from stickerconv.pipelines.demo import SPLIT_SEEDS, _dataset

    source: RunFolder = runs["options"].run
    records = [json.loads(line) for line in (source.sessions / "conversations.jsonl").read_text().splitlines()]
    with_sticker = [i for i, r in enumerate(records) if any(t["system_sticker"] for t in r["conversation"])]
    assert with_sticker, "the scripted demo's sessions have no sticker reply"
    for n in range(3):  # three more personas with sticker replies, so some outlive the first seed's test side
        twin = json.loads(json.dumps(records[with_sticker[0]]))
        twin["user_persona"] += f" Twin {n}."
        twin["meta"]["persona_id"] = f"{twin['meta']['persona_id']}-twin-{n}"
        records.append(twin)
    options = DemoOptions(out=tmp_path / "run", **TOY)
    run = options.run
    run.sessions.mkdir(parents=True)
    shutil.copytree(source.pack, run.pack)
    shutil.copy(source.profiles, run.profiles)
    shares = (round(1 - options.test_share, 4), 0.0, round(options.test_share, 4))
    tested = {i for i, name in enumerate(assign(records, shares, options.seed)) if name == "test"}
    kept = [
        i for i in set(range(len(records))) - tested if any(t["system_sticker"] for t in records[i]["conversation"])
    ]
    assert tested and len(kept) >= 2, (tested, kept)  # another seed can then put one on each side
    # The first seed's test sessions lose their sticker replies, so the first seed cannot do.
    (run.sessions / "conversations.jsonl").write_text(_sessions_without_system_stickers(records, tested))
    _dataset(options, no_progress)
    for samples in (run.train_samples, run.test_samples):
        assert any(sample["response_image"] for sample in json.loads(samples.read_text()))
    # Sticker replies in one session only: no split has them on both sides.
    only = set(range(len(records))) - {with_sticker[0]}
    (run.sessions / "conversations.jsonl").write_text(_sessions_without_system_stickers(records, only))
    with pytest.raises(PipelineError, match=f"under any of {SPLIT_SEEDS} split seeds"):
        _dataset(options, no_progress)
