"""Retrieval distillation (pegs/distill.py) and the context read position: the heads are fitted to the
index's rankings, inference reads the state where the fit read it, and `pegs train` runs the stage."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from stickerconv.cli import app
from stickerconv.data.samples import Sample
from stickerconv.pegs.distill import (
    DISTILL_RECORD,
    LIBRARY_STICKERS,
    distill_retrieval,
    library_readings,
    read_states,
    teacher_text,
)
from stickerconv.pegs.model import PegsModel
from stickerconv.pegs.sequence import sample_example

from helpers.pegs import dialogue_samples, tiny_model


def _prompt(model, sample, root):
    return sample_example(sample, root, model.config.style, model.config.system_prompt, with_response=False)


def _varied_samples(library, n=24) -> list[Sample]:
    """Turns whose user text names different stickers, so the index ranks the library differently per turn."""
    base = dialogue_samples(library, 2)
    out = []
    for i, sticker in enumerate(library.stickers[:n]):
        sample = base[i % len(base)]
        text = sample.input_text.replace("USER: ", f"USER: {sticker.description} ", 1)
        out.append(sample.model_copy(update={"input_text": text}))
    return out


def test_context_read_ignores_the_reply_and_matches_the_distill_reading(small_pack):
    from stickerconv.stickers.library import StickerLibrary

    library = StickerLibrary.load(small_pack)
    model = tiny_model(retrieval_read="context").eval()
    sample = dialogue_samples(library, 1)[1]
    prompt = _prompt(model, sample, small_pack)
    short = model.generate(prompt, max_new_tokens=1, force_sticker=True)
    long = model.generate(prompt, max_new_tokens=12, force_sticker=True)
    assert short.ret_embedding is not None and long.ret_embedding is not None
    assert torch.allclose(short.ret_embedding, long.ret_embedding, atol=1e-5)  # same whatever the text
    with torch.no_grad():
        direct = model.ret_heads.embed_text(read_states(model, [sample], small_pack)[0])
    assert torch.allclose(direct, short.ret_embedding, atol=1e-5)
    reply = tiny_model().eval()  # the paper's position: after the generated text, so the text matters
    with torch.no_grad():
        embeds = reply.embed(reply.collator()([prompt]))
        at_prompt = reply.ret_heads.embed_text(reply.context_state(embeds))
    gen = reply.generate(prompt, max_new_tokens=12, force_sticker=True)
    assert gen.text and not torch.allclose(at_prompt, gen.ret_embedding, atol=1e-3)


def test_context_reads_in_a_batch_are_each_prompt_alone(small_pack):
    """Batched context reads (right-padded, [IMG1] after each prompt) give each sample's state read alone."""
    from stickerconv.stickers.library import StickerLibrary

    model = tiny_model(retrieval_read="context").eval()
    samples = dialogue_samples(StickerLibrary.load(small_pack), 2)  # different lengths, with and without stickers
    assert len({len(s.input_text) for s in samples}) > 1 and any(s.input_image for s in samples)
    together = read_states(model, samples, small_pack, batch_size=len(samples))
    alone = read_states(model, samples, small_pack, batch_size=1)
    assert together.shape == alone.shape and together.shape[0] == len(samples)
    assert torch.allclose(together, alone, atol=1e-4)
    with torch.no_grad():
        direct = model.context_state(model.embed(model.collator()([_prompt(model, samples[-1], small_pack)])))
    assert torch.allclose(together[-1], direct, atol=1e-4)


@pytest.fixture(scope="module")
def distilled(small_index, tmp_path_factory):
    library = small_index.library
    samples = _varied_samples(library)
    model = tiny_model(retrieval_read="context")
    progress = []
    result = distill_retrieval(
        model, samples, library.root, small_index, steps=300, on_progress=lambda d, t: progress.append((d, t))
    )
    return model, samples, result, progress, tmp_path_factory.mktemp("distill")


def _index_scores(index, samples) -> np.ndarray:
    queries = index.embedder.embed([teacher_text(s) for s in samples])
    return queries @ np.asarray(index.ann.vectors).T  # (n, N)


def _top10_overlap(a: np.ndarray, b: np.ndarray) -> float:
    tops = [(set(np.argsort(-x)[:10]), set(np.argsort(-y)[:10])) for x, y in zip(a, b, strict=True)]
    return float(np.mean([len(x & y) / 10 for x, y in tops]))


def test_distill_learns_the_index_ranking(distilled, small_index):
    model, samples, result, progress, _ = distilled
    tenth = len(result.losses) // 10
    assert np.mean(result.losses[-tenth:]) < 0.85 * np.mean(result.losses[:tenth])  # mostly KL: falls, not halves
    # every turn after the first of its dialogue is also read as a new chat's opening, its gold sticker kept
    assert result.openings == sum(bool(s.history) for s in samples) > 0
    assert result.turns == len(samples)
    assert result.gold == sum(bool(s.response_image) * (1 + bool(s.history)) for s in samples)
    assert result.overlap_after > result.overlap_before + 0.2
    # and the library's own sentences, two lone messages for each of LIBRARY_STICKERS stickers (the pack has more)
    assert len(small_index.stickers) > LIBRARY_STICKERS and result.library == 2 * LIBRARY_STICKERS
    assert progress[-1][0] == progress[-1][1] == len(samples) + result.openings + result.library + 300
    # The saved heads rank through the inference path (generate -> retrieval embedding) as reported:
    # the read position and the folded standardisation are what inference uses.
    paths = [small_index.library.image_path(s) for s in small_index.stickers]
    with torch.no_grad():
        stickers = model.image_embeddings(torch.stack([model.collator().target_transform(p) for p in paths]))
    root = small_index.library.root
    embeddings = [model.generate(_prompt(model, s, root), 4, force_sticker=True).ret_embedding for s in samples]
    student = np.stack([(stickers @ e).numpy() for e in embeddings])  # (n, N)
    assert _top10_overlap(student, _index_scores(small_index, samples)) == pytest.approx(result.overlap_after, abs=1e-6)


def test_library_readings_are_lone_messages_of_the_stickers_own_sentences(small_index):
    readings = library_readings(small_index, 5, "v1.5", seed=3)
    assert readings == library_readings(small_index, 5, "v1.5", seed=3)  # seeded: a rerun reads the same
    assert readings != library_readings(small_index, 5, "v1.5", seed=4)
    sentences = {t for s in small_index.stickers for t in (s.emotion, s.recommendation)}
    assert len(readings) == 10 and {r.query for r in readings} <= sentences
    assert all(not r.history and not r.input_image and not r.response_image for r in readings)  # teacher only
    assert all(r.input_text.startswith("USER: ") and r.input_text.endswith("ASSISTANT:") for r in readings)
    assert len(library_readings(small_index, 10_000, "v1.5")) == 2 * len(small_index.stickers)  # all, no more


def test_library_readings_teach_the_heads_sentences_no_turn_has(small_index):
    """Fitted on a few turns alone, the heads rank the library for held-out annotation sentences worse than
    when the library readings join them: the point of reading them (on the demo's checkpoint, bench/README.md)."""
    library = small_index.library
    turns = _varied_samples(library, 6)
    read = {r.query for r in library_readings(small_index, 100, "v1.5")}
    held_out = [r for r in library_readings(small_index, len(small_index.stickers), "v1.5") if r.query not in read]
    assert len(held_out) >= 40  # sentences of stickers the fit with library readings did not read
    teacher = _index_scores(small_index, held_out)
    overlaps = {}
    for n in (0, 100):
        model = tiny_model(retrieval_read="context")
        distill_retrieval(model, turns, library.root, small_index, steps=300, library=n)
        paths = [library.image_path(s) for s in small_index.stickers]
        with torch.no_grad():
            stickers = model.image_embeddings(torch.stack([model.collator().target_transform(p) for p in paths]))
            student = model.ret_heads.embed_text(read_states(model, held_out, library.root)) @ stickers.T
        overlaps[n] = _top10_overlap(student.numpy(), teacher)
    assert overlaps[100] > overlaps[0] + 0.05, overlaps


def test_distilled_heads_survive_a_checkpoint_round_trip(distilled, small_index):
    model, samples, _, _, tmp = distilled
    again = PegsModel.from_pretrained(model.save_pretrained(tmp / "ckpt"))
    assert again.config.retrieval_read == "context"
    prompt = _prompt(model, samples[0], small_index.library.root)
    a = model.generate(prompt, 4, force_sticker=True).ret_embedding
    b = again.generate(prompt, 4, force_sticker=True).ret_embedding
    assert torch.allclose(a, b, atol=1e-6)


def test_distill_reports_gold_stickers_outside_the_index(small_index, tmp_path):
    samples = _varied_samples(small_index.library, 6)
    stray = next(i for i, s in enumerate(samples) if s.response_image)
    samples[stray] = samples[stray].model_copy(update={"response_image": ["images/elsewhere/none.png"]})
    result = distill_retrieval(tiny_model(), samples, small_index.library.root, small_index, steps=2)
    assert result.library == 0  # a reply read sits after a reply, which annotation sentences do not have
    assert result.left_out == {"gold sticker not in the index": 1 + bool(samples[stray].history)}
    assert (
        result.gold
        == sum(bool(s.response_image) * (1 + bool(s.history)) for s in samples)
        - result.left_out["gold sticker not in the index"]
    )
    with pytest.raises(ValueError, match="at least 2 training turns"):
        distill_retrieval(tiny_model(), samples[:1], small_index.library.root, small_index, steps=2)
    with pytest.raises(ValueError, match="no retrieval tokens"):
        distill_retrieval(tiny_model(n_ret_tokens=0), samples, small_index.library.root, small_index, steps=2)


def test_pegs_train_runs_and_reuses_the_distill_stage(small_index, tmp_path):
    library = small_index.library
    samples = tmp_path / "samples.json"
    samples.write_text(json.dumps([s.model_dump(mode="json") for s in _varied_samples(library, 12)]))
    args = ["pegs", "train", "--preset", "tiny", "--stickers", str(library.root), "--out", str(tmp_path / "run")]
    args += ["--data", str(samples), "--stages", "retrieval,distill", "--steps", "2", "--batch-size", "4"]
    args += ["--distill-steps", "40"]
    runner = CliRunner()
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "distill: 12 turns" in text and "top-10 overlap with the index" in text
    record = json.loads((tmp_path / "run" / "02-distill" / DISTILL_RECORD).read_text())
    assert record["turns"] == 12 and len(record["losses"]) == 40
    final = PegsModel.from_pretrained(tmp_path / "run" / "final")
    staged = PegsModel.from_pretrained(tmp_path / "run" / "02-distill")
    assert torch.equal(final.ret_heads.text.weight, staged.ret_heads.text.weight)  # final/ holds the fitted heads
    rerun = runner.invoke(app, args)
    assert rerun.exit_code == 0 and "distill: reusing the finished stage" in " ".join(rerun.output.split())


def test_pegs_train_distill_needs_data_and_an_index(small_pack, tmp_path):
    from stickerconv.stickers.library import StickerLibrary

    runner = CliRunner()
    base = ["pegs", "train", "--preset", "tiny", "--out", str(tmp_path / "run"), "--stages", "distill"]
    result = runner.invoke(app, [*base, "--stickers", str(small_pack)])
    assert "the distill stage trains on dialogues: give --data" in " ".join(str(result.exception).split())
    full = StickerLibrary.load(small_pack)
    samples = tmp_path / "samples.json"
    samples.write_text(json.dumps([s.model_dump(mode="json") for s in dialogue_samples(full, 1)]))
    unindexed = tmp_path / "unindexed"
    unindexed.mkdir()
    (unindexed / "stickers.jsonl").write_text((small_pack / "stickers.jsonl").read_text())
    result = runner.invoke(app, [*base, "--stickers", str(unindexed), "--data", str(samples)])
    assert result.exit_code != 0
    message = " ".join(str(result.exception).split())
    assert "the distill stage ranks stickers with the library's text index" in message and "stickers index" in message
    assert not (tmp_path / "run").exists()  # refused before any stage ran
