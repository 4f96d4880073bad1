"""The run's shared embedder: concurrent sessions' texts are embedded together off the event loop, a text
repeated by both agents is embedded once, vectors are the wrapped model's, and a failure reaches every waiter."""

from __future__ import annotations

import asyncio
import threading

import numpy as np

from stickerconv.stickers.batched import BatchedEmbedder, aembed

from helpers.embedding import HashEmbedder


class Recording(HashEmbedder):
    """The hash embedder, noting each call's texts and the thread it ran on; slow enough that callers pile up."""

    def __init__(self, fail: bool = False):
        super().__init__()
        self.calls: list[list[str]] = []
        self.threads: set[str] = set()
        self.fail = fail

    def embed(self, texts, batch_size=64, on_progress=None):
        self.calls.append(list(texts))
        self.threads.add(threading.current_thread().name)
        threading.Event().wait(0.02)
        if self.fail:
            raise RuntimeError("the embedding model crashed")
        return super().embed(texts, batch_size, on_progress)


def test_concurrent_callers_share_batches_and_get_their_own_vectors():
    inner = Recording()
    shared = BatchedEmbedder(inner)
    asks = [[f"session {i} said something", "A said: how are you?"] for i in range(12)]

    async def main():
        return await asyncio.gather(*(shared.aembed(texts) for texts in asks))

    results = asyncio.run(main())
    shared.close()
    for texts, vectors in zip(asks, results, strict=True):
        assert vectors.shape == (2, inner.dim)
        np.testing.assert_allclose(vectors, HashEmbedder().embed(texts), atol=1e-6)
    # The first caller's batch runs alone; everyone who asked meanwhile rides the next one.
    assert len(inner.calls) < len(asks) and len(inner.calls) == shared.batches
    embedded = [t for call in inner.calls for t in call]
    assert len(embedded) == len(set(embedded)) == 13 == shared.texts_embedded  # the repeated text once
    assert inner.threads and all(name.startswith("embed") for name in inner.threads)  # off the event loop


def test_the_memo_answers_repeats_and_the_sync_path_shares_it():
    inner = Recording()
    shared = BatchedEmbedder(inner, memo_texts=2)
    first = shared.embed(["B said: I failed", "A said: I am sorry"])
    assert len(inner.calls) == 1
    np.testing.assert_array_equal(asyncio.run(shared.aembed(["A said: I am sorry"]))[0], first[1])
    assert len(inner.calls) == 1  # from the memo
    shared.embed(["a third text"])  # the memo keeps 2: the least recently used ("B said ...") goes
    shared.embed(["B said: I failed"])
    assert inner.calls[-1] == ["B said: I failed"] and shared.texts_embedded == 4
    assert asyncio.run(shared.aembed([])).shape == (0, inner.dim)
    shared.close()


def test_a_failing_model_reaches_every_waiter_and_the_next_batch_still_runs():
    inner = Recording(fail=True)
    shared = BatchedEmbedder(inner)

    async def main():
        outcomes = await asyncio.gather(*(shared.aembed([f"text {i}"]) for i in range(5)), return_exceptions=True)
        inner.fail = False
        return outcomes, await shared.aembed(["text 0"])

    outcomes, after = asyncio.run(main())
    shared.close()
    assert all(isinstance(o, RuntimeError) and "crashed" in str(o) for o in outcomes)
    np.testing.assert_allclose(after, HashEmbedder().embed(["text 0"]), atol=1e-6)


def test_plain_embedders_are_called_directly():
    inner = Recording()
    vectors = asyncio.run(aembed(inner, ["hello there"]))
    assert inner.threads == {threading.main_thread().name} and vectors.shape == (1, inner.dim)


def test_batched_vectors_match_the_default_models_one_at_a_time(embedder):
    texts = ["I failed my driving test again.", "We won!", "My cat died this morning and I cannot stop crying."]
    shared = BatchedEmbedder(embedder)

    async def main():
        return await asyncio.gather(*(shared.aembed([t]) for t in texts))

    together = np.concatenate(asyncio.run(main()))
    shared.close()
    alone = np.concatenate([embedder.embed([t]) for t in texts])
    assert together.shape == (3, embedder.dim)
    np.testing.assert_allclose(together, alone, atol=1e-4)
    assert float(together[0] @ together[2]) < 0.99  # different texts, different vectors
