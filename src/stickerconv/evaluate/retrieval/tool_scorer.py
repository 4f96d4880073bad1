"""The LLM + sticker tool baseline as a scorer for the retrieval protocols.

Why a scorer of its own: the baseline picks a sticker by writing a query that the sticker index
resolves, so its ranking of any candidate set is the index's cosine to *that query*. The ranking
protocols need a ranking for every held-out turn, including turns where the baseline would have
sent nothing, so the query is asked for with the tool call required (``sticker_query``), the same
way the PEGS scorer forces its ``[IMG]`` block. Queries are written once per sample, concurrently,
before any protocol runs; the protocols then only look them up.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from stickerconv.evaluate.multimodal.scores import gold_sticker
from stickerconv.evaluate.predict import context_from_sample
from stickerconv.evaluate.retrieval.protocols import IndexScorer, RetrievalError
from stickerconv.responders.tool import StickerToolResponder
from stickerconv.schema import Sample


def sample_key(sample: Mapping[str, Any]) -> str:
    return json.dumps([sample.get("input_text"), sample.get("input_image")], ensure_ascii=False)


# What a dialogue context reads from a sample besides its query, for records that leave it out.
CONTEXT_DEFAULTS: dict[str, Any] = {
    "history": [],
    "input_image_metadata": None,
    "user_persona": None,
    "user_status": None,
}


def _as_sample(record: Mapping[str, Any]) -> Sample:
    """The sample fields of a sample or prediction record, unvalidated: the records were validated when read,
    and a ranking needs only the context's fields (a prediction's own keys are left out)."""
    fields = {name: record[name] for name in Sample.model_fields if name in record}
    return Sample.model_construct(**(CONTEXT_DEFAULTS | fields))


class ToolScorer:
    """Cosine between the baseline's forced sticker query, embedded by the index, and each candidate."""

    needs_sample = True

    def __init__(self, responder: StickerToolResponder, queries: Mapping[str, str]):
        self._index = IndexScorer(responder.index)
        self._queries = dict(queries)
        model = responder.model
        self.name = f"tool-query:{model.backend.name}:{model.model}|{self._index.name}"

    @classmethod
    def build(
        cls,
        responder: StickerToolResponder,
        records: Sequence[Mapping[str, Any]],
        concurrency: int = 4,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> ToolScorer:
        """Ask the baseline for a query on every sample that has a gold sticker (the ones ranked)."""
        todo = {sample_key(r): r for i, r in enumerate(records) if gold_sticker(r, i) is not None}
        queries: dict[str, str] = {}

        async def run() -> None:
            gate = asyncio.Semaphore(concurrency)

            async def one(key: str, record: Mapping[str, Any]) -> None:
                async with gate:
                    queries[key] = await responder.sticker_query(context_from_sample(_as_sample(record)))
                if on_progress is not None:
                    on_progress(len(queries), len(todo))

            await asyncio.gather(*(one(k, r) for k, r in todo.items()))

        asyncio.run(run())
        return cls(responder, queries)

    @property
    def pool(self) -> list[str]:
        return self._index.pool

    def query(self, sample: Mapping[str, Any]) -> str:
        try:
            return self._queries[sample_key(sample)]
        except KeyError:
            raise RetrievalError("no tool query was written for this sample: build the scorer on it") from None

    def __call__(self, context: str, candidates: Sequence[str], sample: Mapping[str, Any]) -> np.ndarray:
        return self._index(self.query(sample), candidates)  # (len(candidates),)
