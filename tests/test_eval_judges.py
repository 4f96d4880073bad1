"""LLM judges on scripted models: samples, shuffling, parse failures, agreement, stickers, aggregates.

The scripted judges read the prompt they are sent, so each test states a judge's behaviour
(score by scale, rank by content, rank by position) and checks what the report makes of it.
A slow test runs the Empathy judge on the embedded model for structure only.
"""

from __future__ import annotations

import asyncio
import json
import re
import time

import numpy as np
import pytest
from PIL import Image

from stickerconv.evaluate.judges import agreement
from stickerconv.evaluate.judges.llm_judges import (
    JudgeConfig,
    JudgeInputError,
    RankingJudge,
    candidate_ids,
    consistency_judge,
    empathy_judge,
)
from stickerconv.llm import ChatModel, ImagePart
from stickerconv.llm.policy import RetryPolicy

from helpers.data import HUG_STICKER as STICKER
from helpers.llm_fakes import ScriptedBackend
from helpers.paths import fixture_file


def record(i: int, sticker: dict | None = None, key: str = "pred_text_response", text: str | None = None) -> dict:
    return {
        "history": [["I had a rough week.", "I'm sorry to hear that.<IMG>"]],
        "query": f"My exam {i} went badly.",
        "input_image_metadata": None,
        "response_text": "That sounds hard.",
        key: text if text is not None else f"That must be hard, I'm here for you ({i}).",
        "pred_image": [sticker["image"]] if sticker else [],
        "pred_image_metadata": sticker,
    }


def chat(backend: ScriptedBackend) -> ChatModel:
    return ChatModel(backend, cache="off", retry=RetryPolicy(max_attempts=2, base_delay=0.0))


def prompt_of(request) -> str:
    return request.messages[-1].text


def answer(score: int, reason: str = "fine") -> str:
    return json.dumps({"reason": reason, "score": score})


def by_scale(request) -> str:
    """A judge that gives 4 on the with-sticker scale and 2 on the text-only one."""
    return answer(4 if "text and sticker together" in prompt_of(request) else 2)


def test_empathy_samples_means_and_split_by_sticker():
    backend = ScriptedBackend(default=by_scale)
    records = [record(0), record(1, STICKER), record(2), record(3, STICKER)]
    progress = []
    judge = empathy_judge(chat(backend), JudgeConfig(n=3, bootstrap=50))
    report = asyncio.run(judge.judge(records, on_progress=lambda done, total: progress.append((done, total))))

    assert report.n == 3 and report.calls == 12 and report.parse_failures == 0
    assert [item.scores for item in report.items] == [[2] * 3, [4] * 3, [2] * 3, [4] * 3]
    assert [item.scale for item in report.items] == ["text", "sticker", "text", "sticker"]
    assert report.items[0].mean == 2.0 and report.items[0].std == 0.0
    metrics = report.metrics
    assert metrics["empathy_mean"].score == 3.0 and metrics["empathy_mean"].n_items == 4
    assert metrics["empathy_txt_mean"].score == 2.0 and metrics["empathy_txt_mean"].n_items == 2
    assert metrics["empathy_stc_mean"].score == 4.0 and metrics["empathy_stc_mean"].n_items == 2
    assert metrics["empathy_agreement"].score == 1.0
    assert metrics["empathy_alpha"].score == 1.0  # all disagreement is between items
    assert metrics["empathy_sample_std"].score == 0.0
    assert metrics["empathy_std"].score == pytest.approx(1.1547005)
    sig = metrics["empathy_mean"].signature
    assert sig["judge"] == "scripted:scripted-1" and sig["n"] == "3" and sig["t"] == "0.7"
    assert sig["scale"] == "text|sticker" and sig["view"] == "text" and len(sig["prompt"]) == 12
    assert metrics["empathy_stc_mean"].signature["scale"] == "sticker"
    assert "version" in sig and metrics["empathy_mean"].ci is not None
    # one seed per sample, so cached or seeded backends give n different samples
    seeds = sorted({(prompt_of(r), r.settings.seed) for r in backend.requests})
    assert len(seeds) == 12 and {s for _, s in seeds} == {0, 1, 2}
    assert all(r.settings.temperature == 0.7 for r in backend.requests)
    assert progress[-1] == (12, 12) and len(progress) == 12


def test_history_rendered_as_user_and_system_lines():
    backend = ScriptedBackend(default=answer(3))
    asyncio.run(empathy_judge(chat(backend), JudgeConfig(n=1, bootstrap=0)).judge([record(5)]))
    prompt = prompt_of(backend.requests[0])
    assert "user: I had a rough week.\nsystem: I'm sorry to hear that.\nuser: My exam 5 went badly." in prompt
    assert "<IMG>" not in prompt and "system: That must be hard, I'm here for you (5)." in prompt


def test_parse_failures_are_counted_never_scored():
    def judge_answer(request) -> str:
        if "exam 1 " in prompt_of(request):
            return "I would say it is quite empathetic."  # never JSON
        if "exam 2 " in prompt_of(request) and request.settings.seed >= 1:
            return answer(9)  # out of range: fails validation (the retry is sampled with seed 2)
        return answer(5)

    backend = ScriptedBackend(default=judge_answer)
    records = [record(0), record(1), record(2)]
    report = asyncio.run(empathy_judge(chat(backend), JudgeConfig(n=2, bootstrap=0)).judge(records))

    assert [item.scores for item in report.items] == [[5, 5], [None, None], [5, None]]
    assert report.items[1].mean is None and report.items[1].failures == 2
    assert report.parse_failures == 3 and report.metrics["empathy_parse_failures"].score == 3
    assert report.metrics["empathy_mean"].score == 5.0 and report.metrics["empathy_mean"].n_items == 2
    assert report.metrics["empathy_mean"].per_item == [5.0, None, 5.0]
    assert len(backend.requests) == 2 + 2 * 2 + 1 + 2  # each failure was retried once before being counted


def test_a_retried_answer_that_parses_is_not_a_failure():
    backend = ScriptedBackend(replies=["not json"], default=answer(4))
    report = asyncio.run(empathy_judge(chat(backend), JudgeConfig(n=1, concurrency=1, bootstrap=0)).judge([record(0)]))
    assert report.items[0].scores == [4] and report.parse_failures == 0 and len(backend.requests) == 2


def test_both_prediction_key_spellings_and_a_clear_error_without_one():
    backend = ScriptedBackend(default=answer(3))
    judge = empathy_judge(chat(backend), JudgeConfig(n=1, bootstrap=0))
    asyncio.run(judge.judge([record(0, key="pred_text_reponse", text="Old spelling <IMG>")]))
    assert "system: Old spelling\n" in prompt_of(backend.requests[0])
    bad = record(0)
    del bad["pred_text_response"]
    with pytest.raises(JudgeInputError, match="record 0 has no prediction: expected key pred_text_response"):
        asyncio.run(judge.judge([bad]))


class VisionBackend(ScriptedBackend):
    accepts_images = True


@pytest.fixture
def image_root(tmp_path):
    (tmp_path / "pack").mkdir()
    Image.new("RGB", (8, 8), "red").save(tmp_path / "pack" / "hug.png")
    return tmp_path


def test_a_vision_judge_sees_the_sticker_image(image_root):
    backend = VisionBackend(default=answer(4))
    config = JudgeConfig(n=1, bootstrap=0, image_root=image_root)
    report = asyncio.run(empathy_judge(chat(backend), config).judge([record(0, STICKER)]))
    message = backend.requests[0].messages[-1]
    assert message.has_images and sum(isinstance(p, ImagePart) for p in message.content) == 1
    assert "system action: send a sticker (image 1 attached)" in message.text
    assert "a bear hugging a heart" not in message.text
    assert report.items[0].view == "image" and report.metrics["empathy_mean"].signature["view"] == "image"


def test_a_text_judge_reads_the_stickers_emotion_and_description(image_root):
    backend = ScriptedBackend(default=answer(4))
    user_sticker = STICKER | {"description": "a crying cat", "emotion": "sad", "image": "pack/none.png"}
    item = record(0, STICKER) | {"input_image_metadata": user_sticker}
    config = JudgeConfig(n=1, bootstrap=0, image_root=image_root)
    report = asyncio.run(empathy_judge(chat(backend), config).judge([item]))
    message = backend.requests[0].messages[-1]
    assert not message.has_images
    assert "user action: send a sticker (emotion: sad; description: a crying cat)" in message.text
    assert "system action: send a sticker (emotion: warm and comforting; description: a bear hugging a heart)" in (
        message.text
    )
    assert report.items[0].view == "text"


def test_vision_judge_falls_back_to_text_when_the_image_is_missing(tmp_path):
    backend = VisionBackend(default=answer(4))
    config = JudgeConfig(n=1, bootstrap=0, image_root=tmp_path)
    asyncio.run(empathy_judge(chat(backend), config).judge([record(0, STICKER)]))
    assert not backend.requests[0].messages[-1].has_images
    assert "description: a bear hugging a heart" in prompt_of(backend.requests[0])
    with pytest.raises(ValueError, match="does not accept images"):
        empathy_judge(chat(ScriptedBackend()), JudgeConfig(sticker_view="image"))


def test_consistency_text_version_ignores_the_sticker_and_the_multimodal_one_judges_it():
    backend = ScriptedBackend(default=answer(5))
    records = [record(0), record(1, STICKER)]
    text = asyncio.run(consistency_judge(chat(backend), JudgeConfig(n=1, bootstrap=0)).judge(records))
    assert all("send a sticker" not in prompt_of(r) for r in backend.requests)
    assert set(text.metrics) >= {"consistency_mean", "consistency_parse_failures"} and text.n == 1
    assert "consistency_agreement" not in text.metrics  # one sample per item: no pairs to agree
    assert "consistency_stc_mean" not in text.metrics and text.metrics["consistency_mean"].signature["scale"] == "text"
    backend.requests.clear()
    mm = asyncio.run(consistency_judge(chat(backend), JudgeConfig(n=1, bootstrap=0), multimodal=True).judge(records))
    assert "Consistency scale (text and sticker together)" in prompt_of(backend.requests[1])
    assert mm.metrics["consistency_mm_stc_mean"].n_items == 1 and mm.items[1].scale == "sticker"


def test_default_sample_counts_follow_the_paper():
    model = chat(ScriptedBackend())
    assert empathy_judge(model).n == 5 and consistency_judge(model).n == 5 and RankingJudge(model).n == 3


# ---------------------------------------------------------------------------------------------- ranking

SYSTEMS = ["pegs_gen", "pegs_ret", "vicuna_text", "chatglm3_text"]
QUALITY = {"pegs_gen": 9, "pegs_ret": 7, "vicuna_text": 5, "chatglm3_text": 3}


def ranked_systems(n_items: int) -> dict[str, list[dict]]:
    def one(name: str, i: int) -> dict:
        return record(i, STICKER if name == "pegs_gen" else None, text=f"quality {QUALITY[name]}")

    return {name: [one(name, i) for i in range(n_items)] for name in SYSTEMS}


def shown_candidates(request) -> dict[str, int]:
    """Candidate id -> the quality number in its text, in the order the prompt shows them."""
    return {cid: int(q) for cid, q in re.findall(r"Candidate (\w)\nSYSTEM: quality (\d+)", prompt_of(request))}


def rank_by_content(request) -> str:
    shown = shown_candidates(request)
    best_first = sorted(shown, key=shown.get, reverse=True)
    return json.dumps({"ranking": {cid: best_first.index(cid) + 1 for cid in shown}})


def rank_by_position(request) -> str:
    return json.dumps({"ranking": {cid: i + 1 for i, cid in enumerate(shown_candidates(request))}})


def test_ranking_shuffles_per_sample_and_maps_ranks_back():
    backend = ScriptedBackend(default=rank_by_content)
    report = asyncio.run(RankingJudge(chat(backend), JudgeConfig(bootstrap=0)).rank(ranked_systems(6)))

    assert report.n == 3 and report.calls == 18 and report.parse_failures == 0
    expected = {"pegs_gen": 1, "pegs_ret": 2, "vicuna_text": 3, "chatglm3_text": 4}
    assert all(ranks == expected for item in report.items for ranks in item.ranks)
    assert {name: report.metrics[f"rank_{name}"].score for name in SYSTEMS} == expected
    assert report.metrics["ranking_kendall_w"].score == 1.0
    # the judge saw different orders across samples (position-bias control) ...
    seen = [tuple(shown_candidates(r).values()) for r in backend.requests]
    assert len(set(seen)) > 3
    assert all(len({tuple(order) for order in item.orders}) > 1 for item in report.items)
    # ... and the recorded orders are the ones it saw
    first = report.items[0].orders[0]
    assert list(shown_candidates(backend.requests[0]).values()) == [QUALITY[name] for name in first]
    assert "SYSTEM action: send a sticker (emotion: warm and comforting" in prompt_of(backend.requests[0])
    assert "=" * 20 in prompt_of(backend.requests[0])
    sig = report.metrics["rank_pegs_gen"].signature
    assert sig["order"] == "shuffled" and sig["better"] == "lower" and sig["n"] == "3"


def test_a_position_biased_judge_does_not_favour_one_system():
    backend = ScriptedBackend(default=rank_by_position)
    report = asyncio.run(RankingJudge(chat(backend), JudgeConfig(bootstrap=0)).rank(ranked_systems(40)))
    means = [report.metrics[f"rank_{name}"].score for name in SYSTEMS]
    assert all(1.8 < m < 3.2 for m in means)  # each system ~2.5: position, not system, decided the rank
    assert report.metrics["ranking_kendall_w"].score < 0.6


def test_invalid_rankings_are_counted_and_given_no_rank():
    def judge_answer(request) -> str:
        if "exam 0 " in prompt_of(request):
            return json.dumps({"ranking": {"A": 1, "B": 1, "C": 2, "D": 3}})  # a tie: not a permutation
        return rank_by_content(request)

    backend = ScriptedBackend(default=judge_answer)
    report = asyncio.run(RankingJudge(chat(backend), JudgeConfig(n=2, bootstrap=0)).rank(ranked_systems(2)))
    assert report.items[0].ranks == [None, None] and report.items[0].mean == {} and report.items[0].failures == 2
    assert report.parse_failures == 2 and report.metrics["ranking_parse_failures"].score == 2
    assert report.metrics["rank_pegs_gen"].per_item == [None, 1.0] and report.metrics["rank_pegs_gen"].n_items == 1


def test_ranking_input_must_align_by_context():
    judge = RankingJudge(chat(ScriptedBackend()))
    systems = ranked_systems(2)
    with pytest.raises(JudgeInputError, match="one record per context"):
        asyncio.run(judge.rank(systems | {"pegs_ret": systems["pegs_ret"][:1]}))
    shifted = systems | {"pegs_ret": list(reversed(systems["pegs_ret"]))}
    with pytest.raises(JudgeInputError, match="different queries"):
        asyncio.run(judge.rank(shifted))
    with pytest.raises(ValueError, match="2 to 26 systems"):
        candidate_ids(1)


# ---------------------------------------------------------------------------------------------- agreement


def test_pairwise_agreement_on_a_hand_made_case():
    # item 1: pairs (1,1) (1,2) (1,2) -> 1 equal of 3; item 2: (3,3) -> 1 of 1; item 3: no pair
    assert agreement.pairwise_agreement([[1, 1, 2], [3, 3, None], [4, None, None]]) == pytest.approx(2 / 4)
    assert agreement.pairwise_agreement([[1], [None, None]]) is None


def test_krippendorff_alpha_matches_krippendorffs_worked_example():
    """Krippendorff (2011), 'Computing Krippendorff's Alpha-Reliability', 4 coders x 12 units with gaps."""
    n = None
    coders = [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, n, n, n],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, n, 3],
        [n, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, n],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, n],
    ]
    units = [list(unit) for unit in zip(*coders, strict=True)]
    assert agreement.krippendorff_alpha(units, "nominal") == pytest.approx(0.743, abs=5e-4)
    assert agreement.krippendorff_alpha(units, "ordinal") == pytest.approx(0.815, abs=5e-4)
    assert agreement.krippendorff_alpha(units, "interval") == pytest.approx(0.849, abs=5e-4)


def test_krippendorff_alpha_edge_cases():
    assert agreement.krippendorff_alpha([[3, 3], [3, 3, 3]]) is None  # no variation: undefined
    assert agreement.krippendorff_alpha([[1], [2, None]]) is None  # nothing pairable
    assert agreement.krippendorff_alpha([[1, 1], [5, 5]]) == 1.0
    assert agreement.krippendorff_alpha([[1, 5], [5, 1]]) < 0  # systematic disagreement
    with pytest.raises(ValueError, match="level of measurement"):
        agreement.krippendorff_alpha([[1, 2], [2, 1]], "ratio")  # type: ignore[arg-type]


def test_kendalls_w_on_hand_made_rankings():
    assert agreement.kendalls_w([[1, 2, 3], [1, 2, 3], [1, 2, 3]]) == 1.0
    assert agreement.kendalls_w([[1, 2, 3], [3, 2, 1]]) == 0.0
    # rank sums 4, 6, 8 around a mean of 6: S = 8, W = 12 * 8 / (3^2 * (27 - 3)) = 4/9
    assert agreement.kendalls_w([[1, 2, 3], [1, 3, 2], [2, 1, 3]]) == pytest.approx(4 / 9)
    assert agreement.kendalls_w([[1, 2]]) is None
    assert agreement.mean_kendalls_w([[[1, 2], [1, 2]], [[1, 2], [2, 1]], [[1, 2]]]) == pytest.approx(0.5)


# ---------------------------------------------------------------------------------------------- embedded model


def profile_records(n: int) -> list[dict]:
    """Judge items from real published texts: a persona's situation as the user's message, a sticker's
    annotation as the predicted sticker on every other item."""
    profiles = [
        json.loads(line) for line in fixture_file("stickerconv", "profiles", "train_profile_excerpt.jsonl").open()
    ][:n]
    stickers = [
        json.loads(line) for line in fixture_file("stickerconv", "stickers", "knowledge_sticker_example.jsonl").open()
    ]
    replies = [
        "I'm so sorry you're going through this. It's okay to feel this way, and I'm here to listen.",
        "That sounds wonderful! I'm really happy for you, tell me more about it.",
        "Have you tried going for a walk?",
        "Losing someone is so hard. Take all the time you need.",
    ]
    records = []
    for i, profile in enumerate(profiles):
        situation = profile["situation"].split(". ")[0].replace("You ", "I ", 1).replace("your", "my")
        sticker = stickers[i % len(stickers)]
        meta = {k: sticker[k] for k in ("image", "description", "emotion", "recommendation")} if i % 2 else None
        records.append(
            {
                "history": [],
                "query": situation,
                "input_image_metadata": None,
                "pred_text_response": replies[i % len(replies)],
                "pred_image": [],
                "pred_image_metadata": meta,
            }
        )
    return records


@pytest.mark.slow
def test_empathy_judge_on_the_embedded_model():
    from stickerconv.llm import LLMConfig, LLMFactory

    factory = LLMFactory(LLMConfig(llm="local", cache="off"))
    model = factory.chat_model("judge")
    records = profile_records(20)
    started = time.perf_counter()
    config = JudgeConfig(n=2, max_tokens=160, concurrency=2, bootstrap=100)
    report = asyncio.run(empathy_judge(model, config).judge(records))
    asyncio.run(factory.aclose())
    elapsed = time.perf_counter() - started

    assert report.n == 2 and report.calls == 40 and len(report.items) == 20
    assert all(len(item.scores) == 2 for item in report.items)
    scores = [s for item in report.items for s in item.scores if s is not None]
    # The grammar-constrained answers parse: most of the 40 calls give a score the mean can use.
    assert report.parse_failures <= report.calls // 4 and len(scores) >= 30
    item_means = [np.mean([s for s in item.scores if s is not None]) for item in report.items if item.failures < 2]
    assert report.metrics["empathy_mean"].score == pytest.approx(np.mean(item_means))  # the mean of item means
    assert report.metrics["empathy_mean"].signature["judge"].startswith("local:")
    distribution = {v: scores.count(v) for v in range(1, 6)}
    print(f"\nembedded empathy judge: {elapsed:.1f}s, {report.parse_failures} parse failures, scores {distribution}")
