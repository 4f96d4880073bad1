"""Every command's `--help` default is the default of the options object its pipeline takes, so a notebook
user calling the pipeline and a shell user running the command get the same run. The defaults live in one
place (the options classes); this test fails the day a command retypes one and the two drift."""

from __future__ import annotations

import dataclasses
import enum
from pathlib import Path
from typing import Any

import pytest
import typer
from pydantic import BaseModel

from stickerconv.cli import app
from stickerconv.pipelines.annotation import AnnotateLibraryOptions
from stickerconv.pipelines.dataset import ConvertOptions, QualityOptions, SplitOptions, StatsOptions, ValidateOptions
from stickerconv.pipelines.demo import DemoOptions
from stickerconv.pipelines.evaluation import EpitomeTrainOptions, PredictOptions, RetrievalOptions, ScoreOptions
from stickerconv.pipelines.generation import GenerationOptions
from stickerconv.pipelines.pegs_training import FitSendOptions, PegsTrainingOptions
from stickerconv.pipelines.personas import PersonaOptions
from stickerconv.pipelines.pools import PoolOptions
from stickerconv.pipelines.serving import ServeOptions
from stickerconv.pipelines.stickers import IndexOptions, IngestOptions, PackOptions, SearchOptions
from stickerconv.serve.settings import ServeSettings
from stickerconv.stickers.annotate import AnnotateOptions

# command path -> the options classes whose field defaults the command's flags must show
OPTIONS: dict[str, tuple[type, ...]] = {
    "generate": (GenerationOptions,),
    "serve": (ServeOptions, ServeSettings),
    "demo": (DemoOptions,),
    "stickers build-default": (PackOptions,),
    "stickers ingest": (IngestOptions,),
    "stickers index": (IndexOptions,),
    "stickers search": (SearchOptions,),
    "stickers annotate": (AnnotateLibraryOptions, AnnotateOptions),
    "stickers pools": (PoolOptions,),
    "personas generate": (PersonaOptions,),
    "data validate": (ValidateOptions,),
    "data stats": (StatsOptions,),
    "data quality": (QualityOptions,),
    "data split": (SplitOptions,),
    "data convert": (ConvertOptions,),
    "eval predict": (PredictOptions,),
    "eval score": (ScoreOptions,),
    "eval retrieval": (RetrievalOptions,),
    "eval epitome-train": (EpitomeTrainOptions,),
    "pegs train": (PegsTrainingOptions,),
    "pegs fit-send": (FitSendOptions,),
}

MISSING = object()


def field_defaults(cls: type) -> dict[str, Any]:
    if isinstance(cls, type) and issubclass(cls, BaseModel):
        return {
            name: (MISSING if info.is_required() else info.get_default(call_default_factory=True))
            for name, info in cls.model_fields.items()
        }
    defaults = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            defaults[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            defaults[f.name] = f.default_factory()
        else:
            defaults[f.name] = MISSING
    return defaults


def commands() -> dict[str, Any]:
    found = {}

    def walk(command, path):
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                walk(sub, [*path, name])
        else:
            found[" ".join(path)] = command

    walk(typer.main.get_command(app), [])
    return found


def comparable(value: Any) -> Any:
    """A flag shows a default as typer parsed it; a field may hold a Path, an enum or a tuple of the same."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple | list):
        return [comparable(v) for v in value]
    return value


def test_every_pipeline_command_is_listed():
    # A new command that takes an options object must be added above; llm, pull and check take none.
    assert set(commands()) - set(OPTIONS) == {"llm chat", "llm ledger", "personas check", "data pull"}


@pytest.mark.parametrize("path", sorted(OPTIONS))
def test_help_defaults_are_the_options_defaults(path: str):
    command = commands()[path]
    defaults: dict[str, Any] = {}
    for cls in reversed(OPTIONS[path]):
        defaults |= field_defaults(cls)
    compared = []
    for param in command.params:
        default = defaults.get(param.name, MISSING)
        if default is MISSING or param.default is None and default is not None and param.required:
            continue
        shown = param.default
        if isinstance(shown, str) and not isinstance(default, str):
            # A flag that takes a comma-separated list shows its default joined.
            default = ",".join(map(str, default)) if isinstance(default, tuple | list) else str(default)
        assert comparable(shown) == comparable(default), f"{path} --{param.name}: help {shown!r}, options {default!r}"
        compared.append(param.name)
    assert compared, f"{path}: no flag shares a name with {', '.join(c.__name__ for c in OPTIONS[path])}"


def test_shared_llm_help_is_not_shown_where_the_default_differs():
    """`--llm` defaults to the embedded model everywhere but `stickers annotate`, whose knowledge summary
    defaults to the --vlm model (AnnotateLibraryOptions); its help must say so, not "local (default)"."""
    helps = {path: next((p.help for p in c.params if p.name == "llm"), None) for path, c in commands().items()}
    assert "default: the --vlm model" in helps["stickers annotate"]
    assert "local (default)" not in helps["stickers annotate"]
    assert all("local (default)" in text for path, text in helps.items() if text and path != "stickers annotate")
