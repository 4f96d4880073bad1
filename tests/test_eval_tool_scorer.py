"""The LLM + sticker tool baseline as a retrieval scorer: one forced query per ranked sample, the
index's cosine to that query as the ranking, and the query prompt requiring a sticker."""

from __future__ import annotations

import json

import pytest

from stickerconv.evaluate.retrieval.protocols import RetrievalError, candidate_ranking, full_pool_ranking
from stickerconv.evaluate.retrieval.tool_scorer import ToolScorer
from stickerconv.llm import ChatModel
from stickerconv.responders import StickerToolResponder

from helpers.llm_fakes import ScriptedBackend


def sample(text: str, sticker_image: str | None) -> dict:
    return {
        "input_text": f"USER: {text}\nASSISTANT:",
        "input_image": [],
        "query": text,
        "history": [],
        "response_text": "I am here for you." + ("<IMG>" if sticker_image else ""),
        "response_image": [sticker_image] if sticker_image else [],
    }


def test_tool_scorer_ranks_by_the_forced_query(small_index) -> None:
    """The scripted LLM writes each gold sticker's own description as the query: the index then
    ranks the gold sticker first among 10 for (almost) every sample, far above chance."""
    stickers = small_index.stickers[::10]
    records = [sample(f"message {i}", s.image) for i, s in enumerate(stickers)] + [sample("no sticker here", None)]
    by_user_text = {f"message {i}": s.description for i, s in enumerate(stickers)}

    def reply(request) -> str:
        user = request.messages[-1].text
        return json.dumps({"text": "I hear you.", "tool": "send_sticker", "query": by_user_text[user]})

    backend = ScriptedBackend(default=reply)
    responder = StickerToolResponder(ChatModel(backend), small_index)
    progress = []
    scorer = ToolScorer.build(responder, records, on_progress=lambda d, t: progress.append((d, t)))
    assert len(backend.requests) == len(stickers)  # the sample without a gold sticker is not asked
    assert progress[-1] == (len(stickers), len(stickers))
    system_prompt = backend.requests[0].messages[0].text
    assert (
        "add one sticker with the send_sticker tool" in system_prompt and "most replies need none" not in system_prompt
    )
    out = candidate_ranking(records, scorer, scorer.pool, bootstrap=0)
    assert out["r10@1"].n_items == len(stickers) and out["r10@1"].score > 0.6
    assert out["r10@1"].signature["scorer"].startswith("tool-query:scripted:scripted-1|index-cosine:")
    pool = full_pool_ranking(records, scorer, scorer.pool, bootstrap=0)
    assert pool["pool_r@10"].score > 0.6
    with pytest.raises(RetrievalError, match="no tool query was written"):
        scorer("x", scorer.pool[:3], sample=sample("never asked", stickers[0].image))


def test_forced_answer_without_a_query_is_an_error(small_index) -> None:
    """The forced schema requires a query: a model that declines is retried, then the call fails."""
    from stickerconv.llm.types import LLMError

    answer = json.dumps({"text": "I hear you.", "tool": "none", "query": ""})
    responder = StickerToolResponder(ChatModel(ScriptedBackend(default=answer)), small_index)
    with pytest.raises(LLMError):
        ToolScorer.build(responder, [sample("hello", small_index.stickers[0].image)])
