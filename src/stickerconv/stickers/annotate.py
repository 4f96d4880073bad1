"""Annotate a sticker library with a vision model: the paper's three stages (method reference §3).

1. **filter**: a 3-turn conversation per image (summarise it; is it suitable for casual chat and
   why; yes or no), sampled ``samples`` times; the image is kept if #yes >= #no.
2. **caption**: the five questions in one conversation, each answer appended before the next.
3. **knowledge**: a text model condenses the Q&A into ``description``, free-text ``emotion`` and
   ``recommendation``, and proposes one of the 7 emotion labels.

Every stage appends one line per sticker to its own JSONL in ``LIB_DIR/annotate/`` as soon as the
sticker is done (flushed and fsynced), so a crash or ``kill -9`` loses at most the stickers in
flight, and a rerun continues where the last one stopped; calls already answered come back from the
response cache. Stickers left out go to ``rejects.jsonl`` with their stage and reason. Last, the
annotations are written into ``stickers.jsonl`` (every existing field kept; a human label is never
replaced: the proposal goes to ``meta["proposed_label"]``), which makes an existing index stale.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from stickerconv.jsonl import drop_torn_tail, iter_jsonl, write_jsonl_atomic
from stickerconv.llm import (
    ChatModel,
    ImagePart,
    Message,
    RetryBudgetExhausted,
    Settings,
    StructuredOutputError,
    system,
    user,
)
from stickerconv.llm.types import assistant
from stickerconv.schema import EMOTION_LABELS, EmotionLabel, Sticker
from stickerconv.stickers.annotate_images import DEFAULT_MAX_SIDE, image_part, unusable_reason
from stickerconv.stickers.annotate_prompts import (
    CAPTION_QUESTIONS,
    FILTER_QUESTIONS,
    IMAGE_TOKEN,
    KNOWLEDGE_SYSTEM,
    Knowledge,
    classify_vote,
    is_refusal,
    knowledge_prompt,
)
from stickerconv.stickers.library import StickerLibrary

log = logging.getLogger(__name__)

ANNOTATE_DIR = "annotate"
FILTER_FILE, CAPTION_FILE, KNOWLEDGE_FILE = "filter.jsonl", "caption.jsonl", "knowledge.jsonl"
REJECTS_FILE, REPORT_FILE = "rejects.jsonl", "report.json"
# Method reference §2.2: LLaVA-1.5 at T 0.2, top-p 0.7, up to 1,024 new tokens; gpt-3.5 at T 0.5, 500 tokens.
VLM_SETTINGS = Settings(temperature=0.2, top_p=0.7, max_tokens=1024)
KNOWLEDGE_SETTINGS = Settings(temperature=0.5, max_tokens=500)
CAPTION_TRIES = 2  # a refused or empty caption answer is asked again once, with another seed

Stage = Literal["image", "filter", "caption", "knowledge"]
RejectKind = Literal["bad_image", "unsuitable", "failed"]


class AnnotateAbort(RuntimeError):
    """The model cannot be used (unreachable, unknown model, bad request): stop, keep what is done."""


# ---------------------------------------------------------------------------- records


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    image: str  # as in stickers.jsonl, relative to the library


class FilterRecord(_Record):
    """Stage 1 per sticker: the votes (the authors' ``{image, suit, suitable, unsuitable, unknown}``)."""

    suit: bool
    suitable: int
    unsuitable: int
    unknown: int
    answers: list[str]  # the final yes/no answer of each sample
    model: str


class QA(BaseModel):
    model_config = ConfigDict(extra="forbid")
    idx: int
    query: str
    output: str


class CaptionRecord(_Record):
    """Stage 2 per sticker, in the published ``caption_sticker`` form plus id and model."""

    qa: list[QA]
    model: str


class KnowledgeRecord(_Record):
    """Stage 3 per sticker, in the published ``knowledge_sticker`` form plus the proposed label."""

    qa: list[QA]
    description: str
    emotion: str
    recommendation: str
    proposed_label: EmotionLabel
    model: str


class RejectRecord(_Record):
    stage: Stage
    kind: RejectKind  # bad_image and failed are tried again by a rerun (failed only with retry_failed)
    reason: str


# ---------------------------------------------------------------------------- files


class _Appender:
    """One JSONL a stage appends to: every record flushed and fsynced before the next sticker starts."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self) -> _Appender:
        self.path.parent.mkdir(exist_ok=True)
        self._fh = self.path.open("a", encoding="utf-8", newline="\n")
        return self

    def write(self, record: BaseModel) -> None:
        self._fh.write(record.model_dump_json() + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def __exit__(self, *exc: object) -> None:
        self._fh.close()


def _load(path: Path, model: type[BaseModel]) -> dict[str, Any]:
    """Records by sticker id; a torn last line (a crash mid-write) is cut, a repeated id keeps the first."""
    drop_torn_tail(path)
    found: dict[str, Any] = {}
    if not path.is_file():
        return found
    for line, record in iter_jsonl(path, model):
        if record.id in found:
            log.warning("%s:%d: sticker %r appears again; keeping the first record", path, line, record.id)
            continue
        found[record.id] = record
    return found


@dataclass
class AnnotateOptions:
    samples: int = 5  # filter samples per sticker
    concurrency: int = 4  # stickers in flight at once
    limit: int | None = None  # only the first N stickers that need annotation
    max_side: int = DEFAULT_MAX_SIDE  # longest side of the image sent
    skip_filter: bool = False  # caption every sticker (a curated set needs no suitability filter)
    overwrite: bool = False  # annotate stickers that already have text too (the old text goes to meta)
    adopt_labels: bool = False  # stickers without a label take the proposed one (meta["label_source"] = "proposed")
    retry_failed: bool = False  # ask again for stickers whose answers were refused or malformed
    vlm_settings: Settings = field(default_factory=lambda: VLM_SETTINGS.model_copy())
    knowledge_settings: Settings = field(default_factory=lambda: KNOWLEDGE_SETTINGS.model_copy())

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise ValueError(f"samples must be at least 1, got {self.samples}")
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {self.concurrency}")
        if self.max_side < 64:
            raise ValueError(f"max_side must be at least 64 px, got {self.max_side}")


def needs_text(sticker: Sticker) -> bool:
    return not (sticker.description.strip() and sticker.emotion.strip() and sticker.recommendation.strip())


def is_emoji_pack(sticker: Sticker) -> bool:
    """A sticker of the embedded default pack, whose text comes from emoji metadata."""
    return bool(sticker.meta) and "hexcode" in sticker.meta and "emoji" in sticker.meta


def proposal_is_human(sticker: Sticker) -> bool:
    return sticker.label is not None and (sticker.meta or {}).get("label_source") != "proposed"


# ---------------------------------------------------------------------------- the run


class Annotation:
    """The state of one library's annotation, read from its stage files; each ``run_*`` does one stage."""

    def __init__(self, library: StickerLibrary, options: AnnotateOptions | None = None):
        self.library, self.options = library, options or AnnotateOptions()
        self.folder = library.root / ANNOTATE_DIR  # made on the first write, so a no-op run leaves no trace
        self.paths = {n: self.folder / n for n in (FILTER_FILE, CAPTION_FILE, KNOWLEDGE_FILE, REJECTS_FILE)}
        self.filtered: dict[str, FilterRecord] = _load(self.paths[FILTER_FILE], FilterRecord)
        self.captioned: dict[str, CaptionRecord] = _load(self.paths[CAPTION_FILE], CaptionRecord)
        self.known: dict[str, KnowledgeRecord] = _load(self.paths[KNOWLEDGE_FILE], KnowledgeRecord)
        self.rejected: dict[str, RejectRecord] = _load(self.paths[REJECTS_FILE], RejectRecord)
        self._prune_rejects()
        self.targets = self._targets()

    def _prune_rejects(self) -> None:
        """Failed answers are asked again with ``retry_failed``, and an unsuitable vote whose reject line
        a crash cut off gets it back. (Bad images are checked again by ``check_images``.)"""
        kept = {i: r for i, r in self.rejected.items() if not (self.options.retry_failed and r.kind == "failed")}
        for record in self.filtered.values():
            if not record.suit and record.id not in kept:
                kept[record.id] = _unsuitable(record)
        self._save_rejects(kept)

    def _save_rejects(self, rejects: dict[str, RejectRecord]) -> None:
        if rejects != self.rejected:
            write_jsonl_atomic(self.paths[REJECTS_FILE], rejects.values())
            self.rejected = rejects

    def _targets(self) -> list[Sticker]:
        chosen = [
            s
            for s in self.library
            if s.id in self.known or s.id in self.rejected or self.options.overwrite or needs_text(s)
        ]
        # Stickers with work done always continue; the limit counts only the ones not started yet.
        started = {s.id for s in chosen if s.id in self.filtered or s.id in self.captioned or s.id in self.known}
        started |= self.rejected.keys()
        if self.options.limit is not None:
            fresh = [s for s in chosen if s.id not in started][: self.options.limit]
            keep = started | {s.id for s in fresh}
            chosen = [s for s in chosen if s.id in keep]
        return chosen

    # -------------------------------------------------------------- what is left
    def _open(self) -> list[Sticker]:
        return [s for s in self.targets if s.id not in self.rejected]

    def pending_images(self) -> list[Sticker]:
        return [s for s in self._open() if s.id not in self.captioned and s.id not in self.known]

    def pending_filter(self) -> list[Sticker]:
        if self.options.skip_filter:
            return []
        return [s for s in self.pending_images() if s.id not in self.filtered]

    def pending_caption(self) -> list[Sticker]:
        return [
            s
            for s in self.pending_images()
            if self.options.skip_filter or (s.id in self.filtered and self.filtered[s.id].suit)
        ]

    def pending_knowledge(self) -> list[Sticker]:
        return [s for s in self._open() if s.id in self.captioned and s.id not in self.known]

    def needs_vision(self) -> bool:
        """Whether any image still has to be shown to a vision model (after ``check_images``)."""
        return bool(self.pending_filter() or self.pending_caption())

    # -------------------------------------------------------------- stage 0: the files
    def check_images(self, on_progress: Callable[[int, int], None] | None = None) -> list[RejectRecord]:
        """Reject every image a vision model cannot be shown; return all bad images, to be reported.

        Files rejected before are checked again, so a repaired file gets annotated."""
        earlier = {i for i, r in self.rejected.items() if r.kind == "bad_image"}
        todo = [s for s in self.targets if s.id in earlier] + self.pending_images()
        rejects, bad = dict(self.rejected), []
        for done, sticker in enumerate(todo, start=1):
            path = self.library.image_path(sticker)
            if reason := unusable_reason(path):
                record = RejectRecord(
                    id=sticker.id, image=sticker.image, stage="image", kind="bad_image", reason=reason
                )
                rejects[sticker.id] = record
                bad.append(record)
                log.info("skipping %s: %s", path, reason)  # the caller reports it
            elif sticker.id in earlier:
                del rejects[sticker.id]
            if on_progress:
                on_progress(done, len(todo))
        added = [i for i in rejects if i not in self.rejected]  # in the order of the checks
        if all(rejects.get(i) == r for i, r in self.rejected.items()):  # nothing repaired or changed: append
            if added:
                with _Appender(self.paths[REJECTS_FILE]) as sink:
                    for i in added:
                        sink.write(rejects[i])
            self.rejected = rejects
        else:  # a repaired file, or a file bad in another way now
            self._save_rejects(rejects)
        return bad

    # -------------------------------------------------------------- stage 1: filter
    async def run_filter(self, vlm: ChatModel, on_progress: Callable[[int, int], None] | None = None) -> int:
        """Vote on every pending sticker; return how many were voted on."""
        todo = self.pending_filter()
        if not todo:
            return 0
        with _Appender(self.paths[FILTER_FILE]) as sink, _Appender(self.paths[REJECTS_FILE]) as rejects:

            async def one(sticker: Sticker) -> None:
                image = await self._image(sticker)
                votes = await _all(self._vote(vlm, sticker, image, i) for i in range(self.options.samples))
                counts = Counter(classify_vote(v) for v in votes)
                record = FilterRecord(
                    id=sticker.id,
                    image=sticker.image,
                    suit=counts["yes"] >= counts["no"],
                    suitable=counts["yes"],
                    unsuitable=counts["no"],
                    unknown=counts["unknown"],
                    answers=list(votes),
                    model=vlm.model,
                )
                sink.write(record)
                self.filtered[sticker.id] = record
                if not record.suit:
                    rejects.write(reject := _unsuitable(record))
                    self.rejected[sticker.id] = reject

            await _each(todo, one, self.options.concurrency, on_progress)
        return len(todo)

    async def _image(self, sticker: Sticker) -> ImagePart:
        """The sticker's image part, encoded off the event loop (it decodes and resizes the file)."""
        return await asyncio.to_thread(image_part, self.library.image_path(sticker), self.options.max_side)

    async def _vote(self, vlm: ChatModel, sticker: Sticker, image: ImagePart, sample: int) -> str:
        settings = _seeded(self.options.vlm_settings, sample)
        answers, _ = await self._conversation(vlm, sticker, image, FILTER_QUESTIONS, settings)
        return answers[-1]

    async def _conversation(
        self,
        vlm: ChatModel,
        sticker: Sticker,
        image: ImagePart,
        questions: tuple[str, ...],
        settings: Settings,
        check: Callable[[int, str], str] | None = None,
    ) -> tuple[list[str], str]:
        """Ask ``questions`` in one conversation, the image attached to the first. Returns the answers
        and, when ``check`` finds a problem with one (a refusal), the problem; the rest is then not asked."""
        messages: list[Message] = []
        answers: list[str] = []
        for number, question in enumerate(questions, start=1):
            messages.append(user(question, [image]) if number == 1 else user(question))
            text = (await _ask(vlm, sticker, messages, settings=settings)).strip()
            answers.append(text)
            if check is not None and (problem := check(number, text)):
                return answers, problem
            messages.append(assistant(text or "(no answer)"))
        return answers, ""

    # -------------------------------------------------------------- stage 2: caption
    async def run_caption(self, vlm: ChatModel, on_progress: Callable[[int, int], None] | None = None) -> int:
        todo = self.pending_caption()
        if not todo:
            return 0
        with _Appender(self.paths[CAPTION_FILE]) as sink, _Appender(self.paths[REJECTS_FILE]) as rejects:

            async def one(sticker: Sticker) -> None:
                problem, image = "", await self._image(sticker)
                for attempt in range(CAPTION_TRIES):
                    settings = _seeded(self.options.vlm_settings, 1000 * attempt)
                    answers, problem = await self._conversation(
                        vlm, sticker, image, CAPTION_QUESTIONS, settings, _caption_problem
                    )
                    if not problem:
                        break
                    log.info("%s: %s (try %d of %d)", sticker.id, problem, attempt + 1, CAPTION_TRIES)
                if problem:
                    reason = f"{problem} ({CAPTION_TRIES} tries)"
                    reject = RejectRecord(
                        id=sticker.id, image=sticker.image, stage="caption", kind="failed", reason=reason
                    )
                    rejects.write(reject)
                    self.rejected[sticker.id] = reject
                    return
                qa = [
                    QA(idx=i, query=(IMAGE_TOKEN if i == 1 else "") + q, output=a)
                    for i, (q, a) in enumerate(zip(CAPTION_QUESTIONS, answers, strict=True), start=1)
                ]
                record = CaptionRecord(id=sticker.id, image=sticker.image, qa=qa, model=vlm.model)
                sink.write(record)
                self.captioned[sticker.id] = record

            await _each(todo, one, self.options.concurrency, on_progress)
        return len(todo)

    # -------------------------------------------------------------- stage 3: knowledge
    async def run_knowledge(self, llm: ChatModel, on_progress: Callable[[int, int], None] | None = None) -> int:
        todo = self.pending_knowledge()
        if not todo:
            return 0
        with _Appender(self.paths[KNOWLEDGE_FILE]) as sink, _Appender(self.paths[REJECTS_FILE]) as rejects:

            async def one(sticker: Sticker) -> None:
                caption = self.captioned[sticker.id]
                messages = [system(KNOWLEDGE_SYSTEM), user(knowledge_prompt(caption.qa))]
                try:
                    result = await _ask(llm, sticker, messages, Knowledge, settings=self.options.knowledge_settings)
                except _Malformed as exc:
                    reason = f"no valid knowledge summary after {exc.attempts} attempt(s): {exc.last}"
                    reject = RejectRecord(
                        id=sticker.id, image=sticker.image, stage="knowledge", kind="failed", reason=reason
                    )
                    rejects.write(reject)
                    self.rejected[sticker.id] = reject
                    return
                knowledge: Knowledge = result.parsed
                record = KnowledgeRecord(
                    id=sticker.id,
                    image=sticker.image,
                    qa=caption.qa,
                    description=knowledge.description,
                    emotion=knowledge.emotion,
                    recommendation=knowledge.recommendation,
                    proposed_label=knowledge.label,
                    model=llm.model,
                )
                sink.write(record)
                self.known[sticker.id] = record

            await _each(todo, one, self.options.concurrency, on_progress)
        return len(todo)

    # -------------------------------------------------------------- all stages
    async def run(
        self,
        vlm: ChatModel | None,
        llm: ChatModel | None,
        on_progress: Callable[[str, int, int], None] | None = None,
    ) -> dict[str, Any]:
        """Check the images, run the three stages, update ``stickers.jsonl``; return the report.

        ``vlm`` may be None when no image needs a vision model (``needs_vision()``), ``llm`` when no
        sticker needs a summary (it is usually the same model as ``vlm``)."""

        def stage(name: str) -> Callable[[int, int], None] | None:
            return None if on_progress is None else lambda done, total: on_progress(name, done, total)

        bad = self.check_images(stage("checking images"))
        try:
            if self.needs_vision():
                if vlm is None:
                    raise ValueError("a vision model is needed: stickers wait for the filter or captioning")
                await self.run_filter(vlm, stage("filter"))
                await self.run_caption(vlm, stage("caption"))
            if self.pending_knowledge():
                if llm is None:
                    raise ValueError("a text model is needed: captioned stickers wait for their knowledge summary")
                await self.run_knowledge(llm, stage("knowledge"))
        finally:  # an aborted run still gives what is done to the library
            changed = self.apply()
            report = self.write_report({"bad_image_files": [r.model_dump() for r in bad], "changed": changed})
        return report

    # -------------------------------------------------------------- the library
    def apply(self) -> int:
        """Write the annotations into ``stickers.jsonl`` (only if something changed); return how many
        stickers changed. Existing fields are kept; replaced text is kept in ``meta["previous_text"]``."""
        changed = 0
        updated = []
        for sticker in self.library:
            new = self._annotated(sticker)
            if new.model_dump() != sticker.model_dump():
                changed += 1
            updated.append(new)
        if changed:
            self.library.stickers = updated
            self.library.save()
        return changed

    def _annotated(self, sticker: Sticker) -> Sticker:
        meta = dict(sticker.meta or {})
        if sticker.id in self.known:
            k = self.known[sticker.id]
            text = {"description": k.description, "emotion": k.emotion, "recommendation": k.recommendation}
            old = {name: getattr(sticker, name) for name in text}
            if any(old.values()) and old != text and "previous_text" not in meta:
                meta["previous_text"] = old
            vote = self.filtered.get(sticker.id)
            meta["proposed_label"] = k.proposed_label.value
            meta["annotation"] = {
                "vlm": self.captioned[sticker.id].model if sticker.id in self.captioned else None,
                "llm": k.model,
                "filter": vote.model_dump(include={"suitable", "unsuitable", "unknown"}) if vote else None,
            }
            update: dict[str, Any] = dict(text)
            if self.options.adopt_labels and sticker.label is None:
                update["label"] = k.proposed_label
                meta["label_source"] = "proposed"
            return sticker.model_copy(update=update | {"meta": meta})
        if sticker.id in self.rejected:
            r = self.rejected[sticker.id]
            meta["annotation"] = {"rejected": {"stage": r.stage, "kind": r.kind, "reason": r.reason}}
            return sticker.model_copy(update={"meta": meta})
        return sticker

    # -------------------------------------------------------------- the report
    def report(self) -> dict[str, Any]:
        """Counts per stage, label distributions and agreement of proposed with human labels."""
        stickers = self.library.by_id()
        targets = {s.id for s in self.targets}
        reject_counts = Counter(f"{r.stage}:{r.kind}" for r in self.rejected.values() if r.id in targets)
        voted = [r for r in self.filtered.values() if r.id in targets]
        known = [k for k in self.known.values() if k.id in stickers]
        pairs = [
            (stickers[k.id].label.value, k.proposed_label.value) for k in known if proposal_is_human(stickers[k.id])
        ]
        return {
            "library": str(self.library.root),
            "stickers": len(self.library),
            "targets": len(targets),
            "emoji_pack_stickers": sum(is_emoji_pack(s) for s in self.library),
            "already_annotated": sum(1 for s in self.library if s.id not in targets and not needs_text(s)),
            "bad_images": reject_counts["image:bad_image"],
            "filter": {
                "voted": len(voted),
                "passed": sum(r.suit for r in voted),
                "rejected": sum(not r.suit for r in voted),
                "skipped": self.options.skip_filter,
            },
            "caption": {
                "done": sum(1 for i in self.captioned if i in targets),
                "failed": reject_counts["caption:failed"],
            },
            "knowledge": {"done": len(known), "failed": reject_counts["knowledge:failed"]},
            "pending": {
                "filter": len(self.pending_filter()),
                "caption": len(self.pending_caption()),
                "knowledge": len(self.pending_knowledge()),
            },
            "labels": {
                "human": _distribution(s.label.value for s in self.library if proposal_is_human(s)),
                "proposed": _distribution(k.proposed_label.value for k in known),
            },
            "agreement": agreement(pairs),
            "index": index_state(self.library),
            "files": {name: str(path) for name, path in self.paths.items()},
        }

    def write_report(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        report = self.report() | (extra or {})
        path = self.folder / REPORT_FILE
        self.folder.mkdir(exist_ok=True)
        path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return report


def index_state(library: StickerLibrary) -> str:
    """``none``, ``current``, or ``stale`` when stickers.jsonl changed after the index was built (the
    index notices it by the library digest it recorded and refuses to load until rebuilt)."""
    from stickerconv.stickers.index import StickerIndex, StickerIndexError

    try:
        meta = StickerIndex.read_meta(library.root)
    except StickerIndexError:
        return "none"
    return "current" if meta.get("library_digest") == library.digest() else "stale"


def _unsuitable(record: FilterRecord) -> RejectRecord:
    reason = (
        f"not suitable for casual chat: {record.suitable} yes, {record.unsuitable} no, {record.unknown} unclear "
        f"of {len(record.answers)} samples"
    )
    return RejectRecord(id=record.id, image=record.image, stage="filter", kind="unsuitable", reason=reason)


def _caption_problem(number: int, answer: str) -> str:
    if not answer:
        return f"empty answer to question {number} ({CAPTION_QUESTIONS[number - 1]!r})"
    if is_refusal(answer):
        return f"the model refused question {number}: {answer[:120]!r}"
    return ""


def _seeded(settings: Settings, offset: int) -> Settings:
    """Another sample: a different seed also makes a different cache key."""
    return settings.model_copy(update={"seed": (settings.seed or 0) + offset})


def _distribution(labels: Iterable[str]) -> dict[str, int]:
    counts = Counter(labels)
    return {label: counts[label] for label in EMOTION_LABELS if counts[label]}


def agreement(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """How often the proposed label equals the human one, Cohen's kappa, and the confusion counts."""
    n = len(pairs)
    if not n:
        return {"n": 0, "agree": 0, "rate": None, "kappa": None, "confusion": {}}
    agree = sum(h == p for h, p in pairs)
    human, proposed = Counter(h for h, _ in pairs), Counter(p for _, p in pairs)
    expected = sum(human[label] * proposed[label] for label in EMOTION_LABELS) / (n * n)
    observed = agree / n
    kappa = None if expected == 1 else round((observed - expected) / (1 - expected), 4)
    confusion: dict[str, dict[str, int]] = {}
    for h, p in pairs:
        confusion.setdefault(h, {}).setdefault(p, 0)
        confusion[h][p] += 1
    return {"n": n, "agree": agree, "rate": round(observed, 4), "kappa": kappa, "confusion": confusion}


class _Malformed(Exception):
    def __init__(self, last: BaseException, attempts: int):
        super().__init__(str(last))
        self.last, self.attempts = last, attempts


async def _ask(model: ChatModel, sticker: Sticker, messages: list[Message], schema=None, *, settings: Settings):
    """One call; a malformed structured answer is the sticker's problem (``_Malformed``), every other
    failure is the model's (``AnnotateAbort``, naming the sticker and what to do)."""
    from stickerconv.llm import LLMError

    try:
        result = await model.complete(messages, schema, settings=settings)
    except RetryBudgetExhausted as exc:
        if isinstance(exc.last, StructuredOutputError):
            raise _Malformed(exc.last, exc.attempts) from exc
        raise AnnotateAbort(_abort_message(model, sticker, exc)) from exc
    except StructuredOutputError as exc:  # a cached answer that no longer validates, in replay mode
        raise _Malformed(exc, 1) from exc
    except LLMError as exc:
        raise AnnotateAbort(_abort_message(model, sticker, exc)) from exc
    if schema is None:
        return result.text
    return result


def _abort_message(model: ChatModel, sticker: Sticker, exc: BaseException) -> str:
    return (
        f"{model.backend.name}:{model.model} failed on sticker {sticker.id!r} ({sticker.image}): {exc}. "
        "Finished stickers are saved; fix the model or server and run the same command again to continue"
    )


async def _all(coroutines: Iterable[Awaitable[str]]) -> list[str]:
    """``gather``, except that the first failure cancels the others instead of leaving them running."""
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def _each(
    items: list[Sticker],
    work: Callable[[Sticker], Awaitable[None]],
    concurrency: int,
    on_progress: Callable[[int, int], None] | None,
) -> None:
    """Run ``work`` over ``items``, ``concurrency`` at a time; the first error cancels the rest."""
    if on_progress:
        on_progress(0, len(items))
    if not items:
        return
    queue: asyncio.Queue[Sticker] = asyncio.Queue()
    for item in items:
        queue.put_nowait(item)
    done = 0

    async def worker() -> None:
        nonlocal done
        while not queue.empty():
            item = queue.get_nowait()
            await work(item)
            done += 1
            if on_progress:
                on_progress(done, len(items))

    tasks = [asyncio.create_task(worker()) for _ in range(min(concurrency, len(items)))]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
