"""PEGS on the retrieval protocols: scorers that want the sample get it, PegsScorer ranks with the forced
[IMG] embedding (one generation per sample), and `eval retrieval --checkpoint` writes signed results."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from stickerconv.cli import app
from stickerconv.evaluate.retrieval.pegs_scorer import EMBEDDING, PegsScorer
from stickerconv.evaluate.retrieval.protocols import (
    RetrievalError,
    candidate_ranking,
    full_pool_ranking,
    score_retrieval,
)
from stickerconv.pegs.model import PegsModel
from stickerconv.stickers.library import StickerLibrary

from helpers.pegs import dialogue_samples, tiny_model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """An untrained tiny checkpoint: ranking needs an embedding, not a good one."""
    return tiny_model().save_pretrained(tmp_path_factory.mktemp("pegs_scorer") / "ckpt")


@pytest.fixture(scope="module")
def library(small_pack):
    full = StickerLibrary.load(small_pack)
    return StickerLibrary(full.root, full.stickers[:40])


@pytest.fixture(scope="module")
def records(library):
    """Sample records of synthetic dialogues over the library (a system sticker on every turn 2)."""
    return [s.model_dump(mode="json") for s in dialogue_samples(library, 4)]


@pytest.fixture(scope="module")
def scorer(checkpoint, library):
    return PegsScorer.from_checkpoint(checkpoint, library, library.root, max_new_tokens=8)


class SampleReader:
    """A scorer that wants the sample: scores the candidates by whether they are the sample's gold."""

    needs_sample = True
    signature_fields = {"reads": "response_image"}

    def __init__(self) -> None:
        self.seen: list[dict] = []

    def __call__(self, context, candidates, sample=None):
        self.seen.append(sample)
        gold = sample["response_image"][0].removeprefix("images/").removesuffix(".png")
        return np.array([1.0 if c == gold else 0.0 for c in candidates])


def test_protocols_pass_the_sample_to_scorers_that_ask(records, library):
    pool = [s.id for s in library]
    reader = SampleReader()
    out = candidate_ranking(records, reader, pool, bootstrap=0)
    assert out["r10@1"].score == 1.0 and all(s in records for s in reader.seen)
    assert out["r10@1"].signature["reads"] == "response_image"
    assert full_pool_ranking(records, reader, pool, bootstrap=0)["pool_r@1"].score == 1.0


def test_pegs_scorer_scores_finite_once_per_sample(scorer, records, monkeypatch):
    ranked = [r for r in records if r["response_image"]]
    calls, sent = [], []
    generate = scorer.model.generate

    def recorded(*args, **kwargs):
        calls.append(kwargs)
        gen = generate(*args, **kwargs)
        sent.append(gen.send_sticker)
        return gen

    monkeypatch.setattr(scorer.model, "generate", recorded)
    candidates = scorer.pool[:10]
    first = scorer(ranked[0]["input_text"], candidates, sample=ranked[0])
    again = scorer(ranked[0]["input_text"], candidates, sample=ranked[0])
    backwards = scorer(ranked[0]["input_text"], candidates[::-1], sample=ranked[0])
    assert first.shape == (10,) and np.isfinite(first).all() and np.abs(first).max() <= 1 + 1e-5  # cosines
    assert np.array_equal(again, first) and np.allclose(backwards, first[::-1], atol=1e-6)
    assert len(calls) == 1 and calls[0]["force_sticker"] is True  # cached: one generation per sample
    out = score_retrieval(records, scorer, scorer.pool, bootstrap=0)
    assert len(calls) == len({(r["input_text"], tuple(r["input_image"])) for r in ranked})  # protocols read the cache
    assert out["r10@1"].n_items == len(ranked)
    sig = out["pool_r@10"].signature
    assert sig["scorer"] == f"pegs:{scorer.name.removeprefix('pegs:')}"
    assert sig["embedding"] == EMBEDDING["reply"]  # the tiny preset reads after the reply
    assert scorer.sent_share == sum(sent) / len(sent)  # the model's own decisions, over every generation


def test_pegs_scorer_rejects_bad_input(scorer, records, tmp_path, library):
    sample = next(r for r in records if r["response_image"])
    with pytest.raises(RetrievalError, match="'noto/no-such-sticker' is not in the library"):
        scorer("hi", ["noto/no-such-sticker", scorer.pool[0]], sample=sample)
    with pytest.raises(RetrievalError, match="needs the sample record"):
        scorer("hi", scorer.pool[:2])
    with pytest.raises(RetrievalError, match="input_image lists 0"):
        scorer("hi", scorer.pool[:2], sample=sample | {"input_image": []})
    elsewhere = PegsScorer(PegsModel.from_pretrained(scorer.name.removeprefix("pegs:")), library, tmp_path)
    with pytest.raises(RetrievalError, match="--image-root"):
        elsewhere("hi", scorer.pool[:2], sample=sample)


def test_eval_retrieval_with_a_pegs_checkpoint(checkpoint, records, small_pack, tmp_path):
    data = tmp_path / "samples.json"
    data.write_text(json.dumps(records))
    out = tmp_path / "retrieval.json"
    args = ["eval", "retrieval", "--data", str(data), "--stickers", str(small_pack), "--checkpoint", str(checkpoint)]
    result = CliRunner().invoke(app, [*args, "--out", str(out), "--bootstrap", "0"])
    assert result.exit_code == 0, result.output
    results = json.loads(out.read_text())["all"]
    assert {"r10@1", "pool_r@10"} <= set(results)
    for name in ("r10@1", "pool_r@10"):
        assert results[name]["signature"]["scorer"] == f"pegs:{checkpoint}"
        assert results[name]["signature"]["embedding"] == EMBEDDING["reply"]
    direct_scorer = PegsScorer.from_checkpoint(checkpoint, StickerLibrary.load(small_pack), small_pack)
    direct = score_retrieval(records, direct_scorer, direct_scorer.pool, bootstrap=0)
    for name in ("r10@1", "pool_r@10"):  # the command reports what the library computes on the same samples
        assert results[name]["score"] == pytest.approx(direct[name].score)
    assert results["pool_r@10"]["signature"]["pool"] == str(len(StickerLibrary.load(small_pack)))
    assert f"scorer:pegs:{checkpoint}" in "".join(result.output.split())  # the printed signature
