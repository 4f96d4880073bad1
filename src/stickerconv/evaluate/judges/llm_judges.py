"""LLM judges of responses (method reference §6.5): Empathy, Consistency and Ranking, on any ChatModel.

An LLM judge is a noisy instrument, so each item is judged ``n`` times (sampling temperature 0.7,
a different seed per sample) and the report keeps every sample: the mean and spread per item and
overall, and how well the samples agree (pairwise exact agreement and Krippendorff's alpha for
scores, Kendall's W for rankings; see ``agreement``). Answers are structured, ``{reason, score}``
with the reason first so the score follows the argument, and ``{ranking: {candidate_id: rank}}``.
An answer that does not parse is retried by the ChatModel (resampled) and, once the retries are
spent, counted as a parse failure: never scored 0, never given a rank (§9 item 39).

Position bias: the Ranking judge sees the candidates in a seeded random order per sample and its
ranks are mapped back to the systems. Stickers: a judge whose model accepts images is shown the
sticker images (when the files are found under ``image_root``); otherwise, as in the paper, the
sticker's annotated emotion and description. The history is rendered as ``user:``/``system:``
lines per turn (the paper's Empathy and Consistency prompts printed Python lists, §9 item 38).
Every metric is a MetricResult whose signature names the judge model, n, temperature, seed,
prompt hash, scale variant and sticker view, so two numbers are comparable only when it matches.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import string
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from stickerconv.data.resolve import sample_image_path
from stickerconv.evaluate.bootstrap import Bootstrap, mean_statistic
from stickerconv.evaluate.judges import agreement
from stickerconv.evaluate.signature import MetricResult, bootstrap_fields, version_field
from stickerconv.evaluate.text.tokens import clean
from stickerconv.llm import ChatModel, ImagePart, Message, RetryBudgetExhausted, Settings, StructuredOutputError
from stickerconv.llm import system as system_message
from stickerconv.llm import user as user_message
from stickerconv.schema import PRED_TEXT_KEYS, PredictionRecord, prediction_fields

log = logging.getLogger(__name__)

Records = Sequence[PredictionRecord]
Progress = Callable[[int, int], None]  # (done, total) calls
StickerView = Literal["auto", "text", "image"]


class JudgeInputError(ValueError):
    """A record the judges cannot read, naming the record and the missing or bad field."""


def prediction_text(record: PredictionRecord, index: int = 0) -> str:
    """The predicted system text of a sample record, under either key spelling, without ``<IMG>``."""
    fields = prediction_fields(record)
    for key in PRED_TEXT_KEYS:
        if key in fields:
            if not isinstance(fields[key], str):
                raise JudgeInputError(f"record {index}: {key} is {type(fields[key]).__name__}, not a string")
            return clean(fields[key])
    raise JudgeInputError(f"record {index} has no prediction: expected key {' or '.join(PRED_TEXT_KEYS)}")


# ---------------------------------------------------------------------------------------------- prompts

JUDGE_SYSTEM = (
    "You are an impartial judge of empathetic dialogue between a user and a support system. "
    "Follow the instructions and answer only with the requested JSON object."
)
SCORE_ANSWER = (
    'Answer with a JSON object: "reason" (one or two sentences justifying your rating) first, '
    'then "score" (an integer from 1 to 5).'
)
EMPATHY_TEXT = """Evaluate how empathetic the system's response is in the conversation below.

Conversation:
{context}

Response:
{response}

Empathy scale:
1 - Very low: the response shows minimal or no understanding of the user's feelings, no compassion, or is inappropriate.
2 - Low: the response shows little understanding or compassion and is only partly appropriate.
3 - Moderate: the response shows some understanding and compassion and is generally appropriate.
4 - High: the response shows clear understanding and compassion and is appropriate.
5 - Very high: the response shows deep understanding of the user's feelings and genuine, fitting compassion.

Steps:
1. Read the conversation and the response.
2. Assess how well the response understands the user's feelings and situation.
3. Evaluate the compassion and appropriateness of the response.
4. Rate the empathy on the scale above.
5. Justify your rating.
"""
EMPATHY_STICKER = """Evaluate how empathetic the system's response, text and sticker, is in the conversation below.

Conversation:
{context}

Response:
{response}

Empathy scale (text and sticker together):
1 - Very low: the text shows minimal or no understanding or compassion; the sticker may be irrelevant or contradict it.
2 - Low: the text shows little understanding or compassion; the sticker adds little to the response.
3 - Moderate: the text shows some understanding and compassion; the sticker somewhat enhances the response.
4 - High: the text shows clear understanding and compassion; the sticker significantly enhances the response.
5 - Very high: text and sticker complement each other excellently; the sticker is crucial to the empathy expressed.

Steps:
1. Read the conversation and the response, including the sticker's emotion and content.
2. Assess how well the response understands the user's feelings and situation.
3. Evaluate the compassion and appropriateness of the text and how the sticker supports it.
4. Rate the empathy on the scale above.
5. Justify your rating.
"""
CONSISTENCY_TEXT = """Evaluate how consistent the system's response is with the conversation below: does it stay on \
the conversation's main topic and address its key points?

Conversation:
{context}

Response:
{response}

Consistency scale:
1 - The response significantly deviates from or contradicts the conversation.
2 - The response is somewhat related but misses key points or adds unrelated elements.
3 - The response is generally aligned with the conversation, with minor discrepancies.
4 - The response is well aligned with the conversation, with only minor deviations.
5 - The response is perfectly aligned with the conversation's topic and key points.
"""
CONSISTENCY_STICKER = """Evaluate how consistent the system's response, its text and its sticker, is with the \
conversation below: do they stay on the conversation's main topic and address its key points?

Conversation:
{context}

Response:
{response}

Consistency scale (text and sticker together):
1 - The text or the sticker significantly deviates from or contradicts the conversation.
2 - The response is somewhat related but misses key points, or the sticker adds unrelated elements.
3 - Text and sticker are generally aligned with the conversation, with minor discrepancies.
4 - Text and sticker are well aligned with the conversation, with only minor deviations.
5 - Text and sticker are perfectly aligned with the conversation's topic and key points.
"""
RANKING = """Below are a conversation and {k} candidate responses to its last user message. Rank the candidates \
jointly on empathy, consistency with the conversation, fluency, informativeness, and the emotional enhancement \
their stickers bring (if they send one).

Conversation:
{context}

Candidates:
{candidates}

Give every candidate a different rank from 1 (best) to {k} (worst). Answer with a JSON object \
{{"ranking": {{{example}}}}} with one entry per candidate id.
"""
CANDIDATE_SEPARATOR = "=" * 20


def prompt_hash(*templates: str) -> str:
    """A short content hash of prompt templates: the signature's ``prompt`` field."""
    digest = hashlib.sha256(json.dumps([JUDGE_SYSTEM, *templates]).encode("utf-8")).hexdigest()
    return digest[:12]


# ---------------------------------------------------------------------------------------------- answers


class ScoreAnswer(BaseModel):
    """A 1..5 judgement; the reason comes first so the score follows the argument."""

    reason: str
    score: int = Field(ge=1, le=5)


def candidate_ids(k: int) -> list[str]:
    """``A``, ``B``, ... for ``k`` candidates (letters: ranks are numbers, ids must not look like them)."""
    if not 2 <= k <= len(string.ascii_uppercase):
        raise ValueError(f"the Ranking judge ranks 2 to {len(string.ascii_uppercase)} systems, got {k}")
    return list(string.ascii_uppercase[:k])


def ranking_schema(ids: Sequence[str]) -> type[BaseModel]:
    """``{ranking: {id: rank}}`` with exactly these ids and ranks forming a permutation of 1..k."""
    k = len(ids)

    def permutation(ranks: BaseModel) -> BaseModel:
        if sorted(ranks.model_dump().values()) != list(range(1, k + 1)):
            raise ValueError(f"ranks must be 1..{k}, each used once")
        return ranks

    fields: dict[str, Any] = {cid: (int, Field(ge=1, le=k)) for cid in ids}
    validators = {"permutation": model_validator(mode="after")(permutation)}
    ranks = create_model("Ranks", __config__=ConfigDict(extra="forbid"), __validators__=validators, **fields)
    return create_model("RankingAnswer", ranking=(ranks, ...))


# ---------------------------------------------------------------------------------------------- items


@dataclass(frozen=True)
class StickerRef:
    """A sticker as a judge sees it: its annotation and, when found, its image file."""

    emotion: str
    description: str
    image: Path | None


@dataclass(frozen=True)
class JudgeItem:
    """What a judge needs from one per-turn sample record (§4.4)."""

    history: tuple[tuple[str, str], ...]
    query: str
    user_sticker: StickerRef | None
    response: str
    sticker: StickerRef | None  # the predicted sticker

    @classmethod
    def from_record(cls, record: PredictionRecord, index: int, image_root: Path | None) -> JudgeItem:
        fields = prediction_fields(record)
        if "query" not in fields:
            raise JudgeInputError(f"record {index} has no 'query' (the current user message)")
        try:
            history = tuple((clean(u), clean(s)) for u, s in fields.get("history") or ())
        except (TypeError, ValueError):
            raise JudgeInputError(f"record {index}: 'history' must be a list of [user, system] pairs") from None
        user_meta = fields.get("input_image_metadata")
        pred_meta = fields.get("pred_image_metadata")
        pred_images = fields.get("pred_image") or []
        pred_path = pred_images[0] if pred_images else (pred_meta or {}).get("image")
        return cls(
            history=history,
            query=clean(fields["query"]),
            user_sticker=_sticker_ref(user_meta, user_meta.get("image"), image_root) if user_meta else None,
            response=prediction_text(record, index),
            sticker=_sticker_ref(pred_meta, pred_path, image_root) if pred_meta or pred_images else None,
        )


def _sticker_ref(meta: Mapping[str, Any] | None, path: str | None, root: Path | None) -> StickerRef:
    meta = meta or {}
    return StickerRef(str(meta.get("emotion") or ""), str(meta.get("description") or ""), _image_file(path, root))


def _image_file(path: str | None, root: Path | None) -> Path | None:
    """The sticker's image on disk: the path itself, or under ``root`` as given or SER30K-relative."""
    if not path:
        return None
    candidates = [Path(path)]
    if root is not None:
        candidates += [root / path, root / sample_image_path(path)]
    return next((c for c in candidates if c.is_file()), None)


class Renderer:
    """Turns items into prompt text plus image parts, with images only where the judge may see them."""

    def __init__(self, use_images: bool):
        self.use_images = use_images
        self._parts: dict[Path, ImagePart] = {}
        self.shown_images = False  # whether any prompt so far carried an image

    def sticker_line(self, who: str, sticker: StickerRef, images: list[ImagePart]) -> str:
        if self.use_images and sticker.image is not None:
            if sticker.image not in self._parts:
                self._parts[sticker.image] = ImagePart.from_file(sticker.image)
            images.append(self._parts[sticker.image])
            self.shown_images = True
            return f"{who} action: send a sticker (image {len(images)} attached)"
        if not (sticker.emotion or sticker.description):
            return f"{who} action: send a sticker (no description available)"
        return f"{who} action: send a sticker (emotion: {sticker.emotion}; description: {sticker.description})"

    def context(self, item: JudgeItem, images: list[ImagePart]) -> str:
        lines = [line for u, s in item.history for line in (f"user: {u}", f"system: {s}")]
        lines.append(f"user: {item.query}")
        if item.user_sticker is not None:
            lines.append(self.sticker_line("user", item.user_sticker, images))
        return "\n".join(lines)

    def response(self, item: JudgeItem, images: list[ImagePart], with_sticker: bool) -> str:
        text = f"system: {item.response}"
        if with_sticker and item.sticker is not None:
            text += "\n" + self.sticker_line("system", item.sticker, images)
        return text


# ---------------------------------------------------------------------------------------------- config and reports


class JudgeConfig(BaseModel):
    """How a judge samples; every field that changes the numbers shows in the signatures."""

    model_config = ConfigDict(extra="forbid")
    n: int | None = Field(None, ge=1)  # samples per item; None: the judge's default (§6.5: 5, 5, 3)
    temperature: float = Field(0.7, ge=0.0, le=2.0)  # the paper's client default
    max_tokens: int | None = Field(None, ge=1)  # None: the ChatModel's setting
    seed: int = 0  # sample s is asked with seed + s; the ranking order is shuffled from it too
    concurrency: int = Field(4, ge=1)  # judge calls in flight at once
    sticker_view: StickerView = "auto"  # auto: images when the model accepts them and the file is found
    image_root: Path | None = None  # where relative sticker image paths resolve
    bootstrap: int = Field(1000, ge=0)  # resamples of items behind each 95% interval (0: none)


class ItemScores(BaseModel):
    """One item's samples: ``None`` marks a parse failure, which is counted and never scored."""

    index: int
    scale: str  # the prompt variant used: text or sticker
    view: Literal["text", "image"]  # how its stickers were shown
    has_sticker: bool
    scores: list[int | None]
    reasons: list[str | None]
    mean: float | None  # over the valid samples; None when every sample failed
    std: float | None  # sample standard deviation (ddof 1) of the valid samples; None with fewer than 2
    failures: int


class ScoreReport(BaseModel):
    judge: str
    n: int
    calls: int
    parse_failures: int
    metrics: dict[str, MetricResult]
    items: list[ItemScores]


class ItemRanks(BaseModel):
    """One item's ranking samples, mapped back to systems; ``None`` marks a parse failure."""

    index: int
    orders: list[list[str]]  # per sample, the systems in the order the judge saw them
    ranks: list[dict[str, int] | None]  # per sample, system -> rank (1 = best)
    mean: dict[str, float]  # per system, over the valid samples
    std: dict[str, float | None]
    failures: int


class RankingReport(BaseModel):
    systems: list[str]
    n: int
    calls: int
    parse_failures: int
    metrics: dict[str, MetricResult]
    items: list[ItemRanks]


# ---------------------------------------------------------------------------------------------- running


@dataclass(frozen=True)
class ScoreSpec:
    """A 1..5 judge: its name, its prompt for items without a predicted sticker and (if the sticker is
    judged) for items with one, and its default number of samples."""

    name: str
    text_template: str
    sticker_template: str | None
    default_n: int

    @property
    def scale(self) -> str:
        return "text|sticker" if self.sticker_template else "text"


EMPATHY = ScoreSpec("empathy", EMPATHY_TEXT, EMPATHY_STICKER, 5)
CONSISTENCY = ScoreSpec("consistency", CONSISTENCY_TEXT, None, 5)
CONSISTENCY_MM = ScoreSpec("consistency_mm", CONSISTENCY_TEXT, CONSISTENCY_STICKER, 5)
RANKING_N = 3


class _Judge:
    """What the score and ranking judges share: settings per sample, bounded concurrency, failures."""

    def __init__(self, chat: ChatModel, config: JudgeConfig | None, default_n: int):
        self.chat = chat
        self.config = config = config or JudgeConfig()
        self.n = config.n or default_n
        accepts = bool(getattr(chat.backend, "accepts_images", False))
        if config.sticker_view == "image" and not accepts:
            raise ValueError(
                f"sticker_view='image' but the judge model {chat.backend.name}:{chat.model} does not accept images; "
                "use sticker_view='auto' or 'text', or a vision model"
            )
        self.use_images = accepts and config.sticker_view != "text"

    def settings(self, sample: int) -> Settings:
        update: dict[str, Any] = {"temperature": self.config.temperature, "seed": self.config.seed + sample}
        if self.config.max_tokens is not None:
            update["max_tokens"] = self.config.max_tokens
        return self.chat.settings.model_copy(update=update)

    async def ask(self, messages: list[Message], schema: type[BaseModel], sample: int) -> Any | None:
        """The parsed answer, or None when it still did not parse after the ChatModel's retries."""
        try:
            return (await self.chat.complete(messages, schema, settings=self.settings(sample))).parsed
        except RetryBudgetExhausted as exc:
            if not isinstance(exc.last, StructuredOutputError):
                raise
            log.warning("judge answer did not parse after %d attempt(s): %s", exc.attempts, exc.last)
        except StructuredOutputError as exc:  # a replayed answer that no longer validates
            log.warning("judge answer did not parse: %s", exc)
        return None

    async def run_all(self, jobs: Sequence[Callable[[], Awaitable[Any]]], on_progress: Progress | None) -> list[Any]:
        gate, done, total = asyncio.Semaphore(self.config.concurrency), 0, len(jobs)

        async def one(job: Callable[[], Awaitable[Any]]) -> Any:
            nonlocal done
            async with gate:
                out = await job()
            done += 1
            if on_progress is not None:
                on_progress(done, total)
            return out

        return list(await asyncio.gather(*(one(job) for job in jobs)))

    def fields(self, **extra: str) -> dict[str, str]:
        cfg = self.config
        return {
            "judge": f"{self.chat.backend.name}:{self.chat.model}",
            "n": str(self.n),
            "t": f"{cfg.temperature:g}",
            "seed": str(cfg.seed),
            **extra,
        }

    def mean_result(self, name: str, per_item: list[float | None], fields: dict[str, str]) -> MetricResult | None:
        """The mean of per-item values with a bootstrap interval over the items that have one."""
        values = np.array([v for v in per_item if v is not None], dtype=np.float64)
        if values.size == 0:
            if per_item:
                log.warning("%s: none of %d items has a valid judgement; no score", name, len(per_item))
            return None
        resampler = Bootstrap(self.config.bootstrap, self.config.seed)
        (interval,) = resampler.intervals(values.size, [mean_statistic(values)])
        return MetricResult(
            name=name,
            score=float(values.mean()),
            n_items=int(values.size),
            ci=interval,
            per_item=per_item,
            signature=fields | bootstrap_fields(resampler.resamples, resampler.seed) | {"version": version_field()},
        )


def _spread(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (ddof 1); None where undefined."""
    if not values:
        return None, None
    mean = float(np.mean(values))
    return mean, float(np.std(values, ddof=1)) if len(values) >= 2 else None


def _plain(name: str, score: float, n_items: int, fields: dict[str, str]) -> MetricResult:
    return MetricResult(name=name, score=score, n_items=n_items, signature=fields | {"version": version_field()})


class ScoreJudge(_Judge):
    """A 1..5 judge (Empathy, Consistency) sampled ``n`` times per item."""

    def __init__(self, chat: ChatModel, spec: ScoreSpec, config: JudgeConfig | None = None):
        super().__init__(chat, config, spec.default_n)
        self.spec = spec
        templates = [spec.text_template] + ([spec.sticker_template] if spec.sticker_template else [])
        self.prompt = prompt_hash(*templates, SCORE_ANSWER)

    def messages(self, item: JudgeItem, renderer: Renderer) -> tuple[list[Message], str, str]:
        """The request for one item, its scale variant and its sticker view."""
        with_sticker = self.spec.sticker_template is not None and item.sticker is not None
        template = self.spec.sticker_template if with_sticker else self.spec.text_template
        images: list[ImagePart] = []
        context = renderer.context(item, images)
        response = renderer.response(item, images, with_sticker)
        prompt = template.format(context=context, response=response) + "\n" + SCORE_ANSWER
        messages = [system_message(JUDGE_SYSTEM), user_message(prompt, images or None)]
        return messages, "sticker" if with_sticker else "text", "image" if images else "text"

    async def judge(self, records: Records, on_progress: Progress | None = None) -> ScoreReport:
        """Judge every record ``n`` times; ``on_progress(done, total)`` after each call."""
        items = [JudgeItem.from_record(r, i, self.config.image_root) for i, r in enumerate(records)]
        renderer = Renderer(self.use_images)
        requests = [self.messages(item, renderer) for item in items]
        jobs = [
            partial(self.ask, messages, ScoreAnswer, sample) for messages, _, _ in requests for sample in range(self.n)
        ]
        answers = await self.run_all(jobs, on_progress)
        scored = []
        for i, (item, (_, scale, view)) in enumerate(zip(items, requests, strict=True)):
            own: list[ScoreAnswer | None] = answers[i * self.n : (i + 1) * self.n]
            scores = [a.score if a is not None else None for a in own]
            mean, std = _spread([s for s in scores if s is not None])
            scored.append(
                ItemScores(
                    index=i,
                    scale=scale,
                    view=view,
                    has_sticker=item.sticker is not None,
                    scores=scores,
                    reasons=[a.reason if a is not None else None for a in own],
                    mean=mean,
                    std=std,
                    failures=scores.count(None),
                )
            )
        return self.report(scored)

    def report(self, items: list[ItemScores]) -> ScoreReport:
        name = self.spec.name
        views = sorted({item.view for item in items}) or ["text"]
        fields = self.fields(prompt=self.prompt, scale=self.spec.scale, view="+".join(views), stat="mean-of-item-means")
        means = [item.mean for item in items]
        candidates: list[MetricResult | None] = [self.mean_result(f"{name}_mean", means, fields)]
        if self.spec.sticker_template is not None:
            for suffix, with_sticker, scale in (("txt", False, "text"), ("stc", True, "sticker")):
                subset = [item.mean for item in items if item.has_sticker == with_sticker]
                candidates.append(self.mean_result(f"{name}_{suffix}_mean", subset, fields | {"scale": scale}))
        valid_means = [m for m in means if m is not None]
        spread_fields = fields | {"stat": "std-of-item-means(ddof1)"}
        if len(valid_means) >= 2:
            candidates.append(
                _plain(f"{name}_std", float(np.std(valid_means, ddof=1)), len(valid_means), spread_fields)
            )
        stds = [item.std for item in items if item.std is not None]
        if stds:
            noise_fields = fields | {"stat": "mean-of-item-sample-std(ddof1)"}
            candidates.append(_plain(f"{name}_sample_std", float(np.mean(stds)), len(stds), noise_fields))
        ratings = [item.scores for item in items]
        agree = agreement.pairwise_agreement(ratings)
        if agree is not None:
            candidates.append(_plain(f"{name}_agreement", agree, len(items), fields | {"stat": "pairwise-exact"}))
        alpha = agreement.krippendorff_alpha(ratings, "ordinal")
        if alpha is not None:
            candidates.append(
                _plain(f"{name}_alpha", alpha, len(items), fields | {"stat": "krippendorff-alpha-ordinal"})
            )
        calls = len(items) * self.n
        failures = sum(item.failures for item in items)
        candidates.append(_plain(f"{name}_parse_failures", float(failures), len(items), fields | {"stat": "count"}))
        metrics = {m.name: m for m in candidates if m is not None}
        return ScoreReport(judge=name, n=self.n, calls=calls, parse_failures=failures, metrics=metrics, items=items)


def empathy_judge(chat: ChatModel, config: JudgeConfig | None = None) -> ScoreJudge:
    """Empathy 1..5: the text-only scale without a predicted sticker, the with-sticker scale with one."""
    return ScoreJudge(chat, EMPATHY, config)


def consistency_judge(chat: ChatModel, config: JudgeConfig | None = None, multimodal: bool = False) -> ScoreJudge:
    """Consistency 1..5 on the text (the primary version) or, ``multimodal``, on text and sticker."""
    return ScoreJudge(chat, CONSISTENCY_MM if multimodal else CONSISTENCY, config)


class RankingJudge(_Judge):
    """Ranks several systems' responses to the same contexts jointly, ``n`` times per item (§6.5)."""

    def __init__(self, chat: ChatModel, config: JudgeConfig | None = None):
        super().__init__(chat, config, RANKING_N)
        self.prompt = prompt_hash(RANKING, CANDIDATE_SEPARATOR)

    def order(self, systems: Sequence[str], index: int, sample: int) -> list[str]:
        """The systems in the order sample ``sample`` of item ``index`` shows them (seeded shuffle)."""
        order = list(systems)
        random.Random(f"{self.config.seed}:{index}:{sample}").shuffle(order)
        return order

    def messages(self, items: Mapping[str, JudgeItem], order: Sequence[str], renderer: Renderer) -> list[Message]:
        ids = candidate_ids(len(order))
        images: list[ImagePart] = []
        context = renderer.context(items[order[0]], images)
        blocks = []
        for cid, name in zip(ids, order, strict=True):
            lines = [f"Candidate {cid}", f"SYSTEM: {items[name].response}"]
            if items[name].sticker is not None:
                lines.append(renderer.sticker_line("SYSTEM", items[name].sticker, images))
            blocks.append("\n".join(lines))
        prompt = RANKING.format(
            k=len(order),
            context=context,
            candidates=f"\n{CANDIDATE_SEPARATOR}\n".join(blocks),
            example=", ".join(f'"{cid}": rank' for cid in ids),
        )
        return [system_message(JUDGE_SYSTEM), user_message(prompt, images or None)]

    async def rank(self, systems: Mapping[str, Records], on_progress: Progress | None = None) -> RankingReport:
        """Rank ``systems`` (name -> records, aligned by position: the same context at each index)."""
        names = list(systems)
        ids = candidate_ids(len(names))
        lengths = {name: len(records) for name, records in systems.items()}
        if len(set(lengths.values())) != 1:
            raise JudgeInputError(f"every system needs one record per context; got {lengths}")
        rows = [
            {name: JudgeItem.from_record(systems[name][i], i, self.config.image_root) for name in names}
            for i in range(lengths[names[0]])
        ]
        for i, row in enumerate(rows):
            if len({item.query for item in row.values()}) != 1:
                raise JudgeInputError(f"records {i} of the systems answer different queries; align them by context")
        schema, renderer = ranking_schema(ids), Renderer(self.use_images)
        orders = [[self.order(names, i, s) for s in range(self.n)] for i in range(len(rows))]
        jobs = [
            partial(self.ask, self.messages(row, order, renderer), schema, s)
            for row, row_orders in zip(rows, orders, strict=True)
            for s, order in enumerate(row_orders)
        ]
        answers = await self.run_all(jobs, on_progress)
        items = []
        for i, row_orders in enumerate(orders):
            ranks: list[dict[str, int] | None] = []
            for order, answer in zip(row_orders, answers[i * self.n : (i + 1) * self.n], strict=True):
                shown = answer.ranking.model_dump() if answer is not None else None
                ranks.append({name: shown[cid] for cid, name in zip(ids, order, strict=True)} if shown else None)
            valid = [r for r in ranks if r is not None]
            spreads = {name: _spread([r[name] for r in valid]) for name in names}
            items.append(
                ItemRanks(
                    index=i,
                    orders=row_orders,
                    ranks=ranks,
                    mean={name: m for name, (m, _) in spreads.items() if m is not None},
                    std={name: s for name, (_, s) in spreads.items()} if valid else {},
                    failures=len(ranks) - len(valid),
                )
            )
        return self.report(names, items, "image" if renderer.shown_images else "text")

    def report(self, names: list[str], items: list[ItemRanks], view: str) -> RankingReport:
        fields = self.fields(prompt=self.prompt, order="shuffled", view=view, stat="mean-of-item-mean-ranks")
        metrics: dict[str, MetricResult] = {}
        for name in names:
            per_item = [item.mean.get(name) for item in items]
            result = self.mean_result(f"rank_{name}", per_item, fields | {"better": "lower"})
            if result is not None:
                metrics[result.name] = result
        w = agreement.mean_kendalls_w([[[r[n] for n in names] for r in item.ranks if r] for item in items])
        if w is not None:
            metrics["ranking_kendall_w"] = _plain("ranking_kendall_w", w, len(items), fields | {"stat": "kendall-w"})
        failures = sum(item.failures for item in items)
        metrics["ranking_parse_failures"] = _plain(
            "ranking_parse_failures", float(failures), len(items), fields | {"stat": "count"}
        )
        return RankingReport(
            systems=names,
            n=self.n,
            calls=len(items) * self.n,
            parse_failures=failures,
            metrics=metrics,
            items=items,
        )
