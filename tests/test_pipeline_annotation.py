"""``pipelines.annotation`` without the CLI: a library annotated through the scripted vision server, the
rerun that asks nothing, the progress it reports per stage, and the runs it refuses or skips."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from stickerconv.pipelines import PipelineError
from stickerconv.pipelines.annotation import AnnotateLibraryOptions, annotate_library
from stickerconv.stickers.annotate import ANNOTATE_DIR, AnnotateOptions
from stickerconv.stickers.library import StickerLibrary

from helpers.annotate import GOOD, PROPOSED, Script, make_library
from helpers.fake_openai_server import FakeOpenAIServer


@pytest.fixture
def config(tmp_path, monkeypatch) -> Path:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "test")
    path = tmp_path / "llm.toml"
    path.write_text("[retry]\nmax_attempts = 3\nbase_delay = 0.0\nmax_delay = 0.0\n")
    return path


class Recorder:
    """A progress factory that keeps what each stage reported."""

    def __init__(self) -> None:
        self.stages: dict[str, list[tuple[int, int]]] = {}

    @contextlib.contextmanager
    def __call__(self, description: str):
        updates = self.stages.setdefault(description, [])
        yield lambda done, total: updates.append((done, total))


def test_annotate_library_writes_the_stages_and_the_library_and_a_rerun_asks_nothing(tmp_path, config):
    library = make_library(tmp_path / "lib")
    stages = AnnotateOptions(concurrency=3)
    with FakeOpenAIServer(reply=Script(library), model="fake-vlm") as server:
        options = AnnotateLibraryOptions(
            library.root, vlm="openai:fake-vlm", base_url=server.base_url, config=config, stages=stages
        )
        progress = Recorder()
        result = annotate_library(options, progress=progress)
        asked = len(server.requests)
        again = annotate_library(options)
        assert len(server.requests) == asked  # every answer came back from the cache beside the library
    report = result.report
    assert result.skipped is None and result.library == library.root
    assert report["targets"] == 15 and report["knowledge"]["done"] == len(GOOD)
    assert report["filter"]["passed"] == 9 and report["filter"]["rejected"] == 1
    assert report["agreement"] == again.report["agreement"] and report["agreement"]["agree"] == 1
    assert {"checking images", "filter", "caption", "knowledge"} <= set(progress.stages)
    assert progress.stages["knowledge"][-1][0] == progress.stages["knowledge"][-1][1]
    folder = library.root / ANNOTATE_DIR
    assert (folder / "llm.sqlite").is_file()
    assert len((folder / "knowledge.jsonl").read_text().splitlines()) == len(GOOD)
    annotated = {s.id: s for s in StickerLibrary.load(library.root) if s.meta and "proposed_label" in s.meta}
    assert sorted(annotated) == sorted(GOOD)
    assert annotated["happy"].meta["proposed_label"] == PROPOSED["happy"] and annotated["happy"].description


def test_a_role_in_the_config_file_names_the_models_and_its_sampling(tmp_path, config):
    library = make_library(tmp_path / "lib")
    with FakeOpenAIServer(reply=Script(library), model="fake-vlm") as server:
        config.write_text(
            f'base_url = "{server.base_url}"\n[roles.sticker_vlm]\nllm = "openai:fake-vlm"\ntemperature = 0.9\n'
            + config.read_text()
        )
        stages = AnnotateOptions()
        options = AnnotateLibraryOptions(
            library.root, config=config, store=tmp_path / "elsewhere.sqlite", stages=stages
        )
        result = annotate_library(options)
        temperatures = {request.get("temperature") for request in server.requests}
    assert result.report["knowledge"]["done"] == len(GOOD)
    assert temperatures == {0.9, 0.5}  # the role's vision temperature; the summary keeps the method's
    assert stages.vlm_settings.temperature == AnnotateOptions().vlm_settings.temperature != 0.9  # caller's untouched
    assert (tmp_path / "elsewhere.sqlite").is_file() and not (library.root / ANNOTATE_DIR / "llm.sqlite").exists()


def test_a_missing_or_blind_vision_model_is_refused_before_anything_is_written(tmp_path, config):
    library = make_library(tmp_path / "lib")
    with pytest.raises(PipelineError, match=r"no vision model configured: 15 sticker\(s\)"):
        annotate_library(AnnotateLibraryOptions(library.root, config=config))
    with pytest.raises(PipelineError, match="--vlm local: the embedded local model .* cannot see images"):
        annotate_library(AnnotateLibraryOptions(library.root, vlm="local", config=config))
    assert not (library.root / ANNOTATE_DIR).exists()


def test_the_emoji_pack_and_a_finished_library_are_skipped(tmp_path):
    from stickerconv.stickers.emoji_pack import build_default_pack

    build_default_pack(tmp_path / "pack", ["noto"], limit=4)
    skipped = annotate_library(AnnotateLibraryOptions(tmp_path / "pack"))
    assert skipped.skipped == "emoji_pack" and skipped.report is None
    library = make_library(tmp_path / "lib")
    finished = StickerLibrary(library.root, [s for s in library if s.id == "done"])
    finished.save()
    assert annotate_library(AnnotateLibraryOptions(library.root)).skipped == "complete"
    assert not (tmp_path / "pack" / ANNOTATE_DIR).exists() and not (library.root / ANNOTATE_DIR).exists()
