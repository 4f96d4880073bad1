"""The dataset tools on a run folder of our own simulator (scripted LLM, real sticker pack and index)."""

import asyncio
import json

from stickerconv.agent4sc.runner import run_generation
from stickerconv.data.convert import ImageLocator, convert
from stickerconv.data.io import load_conversations
from stickerconv.data.resolve import StickerResolver
from stickerconv.data.stats import compute_stats
from stickerconv.data.validate import validate
from stickerconv.schema import Persona
from stickerconv.stickers.library import StickerLibrary

from helpers.agent4sc import llm_factory, scripted_world
from helpers.data import profiles


def test_a_simulator_run_validates_resolves_describes_and_converts(tmp_path, small_pack, small_index):
    personas = [Persona.model_validate(p) for p in profiles()[:3]]
    run = tmp_path / "run"
    report = asyncio.run(run_generation(personas, small_index, llm_factory(tmp_path, scripted_world()), run))
    assert report.kept == 3

    resolver = StickerResolver(StickerLibrary.load(small_pack))
    checked = validate(run, resolver=resolver, require_images=True)
    assert checked.ok and checked.records == 3 and checked.stickers_checked > 0

    stats = compute_stats(run)
    conversations = load_conversations(run)
    assert stats["sessions"] == 3
    assert stats["stickers"]["total"] == sum(len(c.stickers) for c in conversations) == checked.stickers_checked
    assert sum(stats["persona_emotions"].values()) == 3 and "unknown" not in stats["persona_emotions"]

    samples = convert(run, "samples", tmp_path / "samples.json", locator=ImageLocator(resolver))
    first = json.loads((tmp_path / "samples.json").read_text())[0]
    paths = first["input_image"] + first["response_image"]
    assert paths and all((small_pack / p).is_file() for p in paths)  # library-relative
    assert samples.unknown_stickers == 0

    hf = convert(run, "hf", tmp_path / "hf", locator=ImageLocator(resolver))
    assert hf.written == stats["turns"]["total"] and hf.images == hf.stickers and hf.unresolved_images == 0
