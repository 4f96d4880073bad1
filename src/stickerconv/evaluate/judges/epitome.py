"""EPITOME-style empathy mechanisms of responses (method reference §6.4): ER, IP and EX levels.

EPITOME (Sharma et al., EMNLP 2020) rates how strongly a response to a seeker's post shows each of
three empathy mechanisms, **Emotional Reactions**, **Interpretations** and **Explorations**, on
three levels: 0 none, 1 weak, 2 strong. The paper scores every prediction and every gold response
and reports, per mechanism, the mean predicted level, the mean gold level and the mean squared
difference ``diff_m = (1/N) sum (level_pred - level_gold)^2``.

The original classifiers (RoBERTa-base bi-encoders, ``finetuned_{ER,IP,EX}.pth``) were never
published, so **no weights are bundled** and scoring without a trained model fails with the steps
to train one. Training here is deliberately simple: one RoBERTa-style cross-encoder per mechanism
(``AutoModelForSequenceClassification`` over the (seeker post, response) pair, 3 labels), a plain
torch loop, trained from the public EPITOME annotation files (columns ``sp_id, rp_id, seeker_post,
response_post, level, rationale_labels``; CSV or JSON Lines). EPITOME's rationale extraction is not
used. A model directory is ``save_pretrained`` output plus ``epitome.json`` (mechanism, base model,
input convention, training data hash), so scores carry where their classifier came from.

Inputs follow §6.4 and §9 item 36: seeker = the current user message (``query``), response = the
predicted or gold system text without ``<IMG>``, both lower-cased.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from stickerconv.evaluate.bootstrap import Bootstrap, Statistic, mean_statistic
from stickerconv.evaluate.judges.llm_judges import prediction_text
from stickerconv.evaluate.signature import MetricResult, bootstrap_fields, version_field
from stickerconv.evaluate.text.tokens import clean
from stickerconv.schema import PredictionRecord, prediction_fields

log = logging.getLogger(__name__)

MECHANISMS: dict[str, str] = {"ER": "emotional reactions", "IP": "interpretations", "EX": "explorations"}
LEVEL_NAMES: dict[int, str] = {0: "none", 1: "weak", 2: "strong"}
META_FILE = "epitome.json"
DATA_URL = "https://github.com/behavioral-data/Empathy-Mental-Health (dataset/*.csv)"


class EpitomeError(ValueError):
    """Annotation files, model directories or records EPITOME cannot use, with what would work."""


class EpitomeModelMissing(EpitomeError, FileNotFoundError):
    """No trained classifiers where scoring needs them."""


def missing_model_message(where: str) -> str:
    return (
        f"EPITOME scoring needs trained ER/IP/EX classifiers ({where}). None are bundled with StickerConv: the "
        "original EPITOME weights were never published. Train one classifier per mechanism from the public "
        f"EPITOME annotations ({DATA_URL}):\n"
        "  stickerconv eval epitome-train --out models/epitome --data ER=emotional-reactions-reddit.csv \\\n"
        "      --data IP=interpretations-reddit.csv --data EX=explorations-reddit.csv\n"
        "then score with --epitome models/epitome (in Python: train_classifier and EpitomeScorer('models/epitome'))."
    )


def _mechanism(name: str) -> str:
    key = name.upper()
    if key not in MECHANISMS:
        raise EpitomeError(f"unknown EPITOME mechanism {name!r}; choose from {', '.join(MECHANISMS)}")
    return key


# ---------------------------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Annotation:
    """One annotated (seeker post, response post) pair and its level for one mechanism."""

    seeker_post: str
    response_post: str
    level: int


def load_annotations(path: Path | str) -> list[Annotation]:
    """Annotations from an EPITOME CSV (``.csv``) or JSON Lines file (``.jsonl``/``.json``, one object
    a line); needs ``seeker_post``, ``response_post`` and ``level`` (0, 1 or 2), ignores other columns."""
    path = Path(path)
    if not path.is_file():
        raise EpitomeError(f"annotation file {path} does not exist")
    if path.suffix.lower() == ".csv":
        with path.open(encoding="utf-8", newline="") as fh:
            rows = [(i + 2, row) for i, row in enumerate(csv.DictReader(fh))]  # line 1 is the header
    elif path.suffix.lower() in (".jsonl", ".json"):
        rows = []
        with path.open(encoding="utf-8") as fh:
            for number, line in enumerate(fh, start=1):
                if line.strip():
                    try:
                        rows.append((number, json.loads(line)))
                    except json.JSONDecodeError as exc:
                        raise EpitomeError(f"{path}:{number}: not a JSON object: {exc}") from None
    else:
        raise EpitomeError(f"{path}: unknown annotation format {path.suffix!r}; use .csv or .jsonl")
    annotations = [_annotation(row, f"{path}:{number}") for number, row in rows]
    if not annotations:
        raise EpitomeError(f"{path} holds no annotations")
    return annotations


def _annotation(row: Any, where: str) -> Annotation:
    if not isinstance(row, Mapping):
        raise EpitomeError(f"{where}: expected an object with seeker_post, response_post and level")
    missing = [key for key in ("seeker_post", "response_post", "level") if row.get(key) is None]
    if missing:
        raise EpitomeError(f"{where}: missing {', '.join(missing)}")
    try:
        level = int(str(row["level"]).strip())
    except ValueError:
        level = -1
    if level not in LEVEL_NAMES:
        raise EpitomeError(f"{where}: level {row['level']!r} is not 0, 1 or 2")
    return Annotation(str(row["seeker_post"]), str(row["response_post"]), level)


def _file_hash(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------------------------- model


def resolve_device(device: str | None) -> str:
    """The configured device, or CUDA when available, else CPU; logged, never silent (§9 item 43)."""
    import torch

    chosen = device or ("cuda" if torch.cuda.is_available() else "cpu")
    log.info("EPITOME classifiers run on %s", chosen)
    return chosen


class EpitomeClassifier:
    """One mechanism's classifier: (seeker post, response) pairs in, levels 0/1/2 out."""

    def __init__(self, model: Any, tokenizer: Any, meta: dict[str, Any], device: str):
        self.model, self.tokenizer, self.meta, self.device = model, tokenizer, meta, device
        self.max_length = int(meta.get("max_length", 64))

    @classmethod
    def load(cls, model_dir: Path | str, mechanism: str | None = None, device: str | None = None) -> EpitomeClassifier:
        """A classifier saved by :func:`train_classifier`; ``mechanism`` checks it is the expected one."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        model_dir = Path(model_dir)
        meta_file = model_dir / META_FILE
        if not meta_file.is_file():
            raise EpitomeModelMissing(missing_model_message(f"no {META_FILE} in {model_dir}"))
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        if mechanism is not None and meta.get("mechanism") != _mechanism(mechanism):
            raise EpitomeError(f"{model_dir} holds a {meta.get('mechanism')} classifier, not {mechanism}")
        device = resolve_device(device)
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        model = AutoModelForSequenceClassification.from_pretrained(str(model_dir)).to(device).eval()
        return cls(model, tokenizer, meta, device)

    def encode(self, seekers: Sequence[str], responses: Sequence[str]) -> dict[str, Any]:
        """Lower-cased pairs as padded tensors on the device (the pair is truncated to ``max_length``)."""
        batch = self.tokenizer(
            [s.lower() for s in seekers],
            [r.lower() for r in responses],
            truncation=True,
            max_length=self.max_length,
            padding=True,
            return_tensors="pt",
        )
        names = self.tokenizer.model_input_names
        return {key: value.to(self.device) for key, value in batch.items() if key in names}

    def predict(self, seekers: Sequence[str], responses: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """The level (0, 1, 2) of each response to its seeker post."""
        import torch

        if len(seekers) != len(responses):
            raise EpitomeError(f"{len(seekers)} seeker posts but {len(responses)} responses")
        levels = []
        with torch.inference_mode():
            for start in range(0, len(seekers), batch_size):
                inputs = self.encode(seekers[start : start + batch_size], responses[start : start + batch_size])
                logits = self.model(**inputs).logits  # (batch, 3)
                levels.append(logits.argmax(dim=-1).cpu().numpy())
        return np.concatenate(levels) if levels else np.zeros(0, dtype=np.int64)


# ---------------------------------------------------------------------------------------------- training


class TrainConfig(BaseModel):
    """Training settings; the defaults follow EPITOME's (lr 2e-5, batch 32, 4 epochs, 64 tokens)."""

    model_config = ConfigDict(extra="forbid")
    base_model: str = "roberta-base"  # a hub id or a local folder with a model and its tokenizer
    epochs: int = Field(4, ge=1)
    batch_size: int = Field(32, ge=1)
    learning_rate: float = Field(2e-5, gt=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    max_length: int = Field(64, ge=8)  # tokens of the (seeker, response) pair
    dev_fraction: float = Field(0.1, ge=0, lt=1)  # held out for accuracy and macro-F1 after each epoch
    seed: int = 0
    device: str | None = None  # None: CUDA when available, else CPU


class TrainReport(BaseModel):
    mechanism: str
    out_dir: str
    n_train: int
    n_dev: int
    steps: int
    final_loss: float
    dev_accuracy: float | None
    dev_macro_f1: float | None


def train_classifier(
    mechanism: str, data: Path | str, out_dir: Path | str, config: TrainConfig | None = None
) -> TrainReport:
    """Fine-tune ``config.base_model`` on one mechanism's annotations and save it to ``out_dir``."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, get_linear_schedule_with_warmup

    mechanism, config, data, out_dir = _mechanism(mechanism), config or TrainConfig(), Path(data), Path(out_dir)
    rows = load_annotations(data)
    rng = random.Random(config.seed)
    rng.shuffle(rows)
    n_dev = int(len(rows) * config.dev_fraction)
    dev, train = rows[:n_dev], rows[n_dev:]
    torch.manual_seed(config.seed)
    device = resolve_device(config.device)
    tokenizer = AutoTokenizer.from_pretrained(config.base_model)
    model = AutoModelForSequenceClassification.from_pretrained(
        config.base_model, num_labels=3, id2label=LEVEL_NAMES, label2id={v: k for k, v in LEVEL_NAMES.items()}
    ).to(device)
    meta = {"mechanism": mechanism, "max_length": config.max_length}
    classifier = EpitomeClassifier(model, tokenizer, meta, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate)
    steps = config.epochs * math.ceil(len(train) / config.batch_size)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * steps), steps)
    loss = float("nan")
    dev_scores: tuple[float | None, float | None] = (None, None)
    for epoch in range(config.epochs):
        model.train()
        rng.shuffle(train)
        for start in range(0, len(train), config.batch_size):
            batch = train[start : start + config.batch_size]
            inputs = classifier.encode([a.seeker_post for a in batch], [a.response_post for a in batch])
            labels = torch.tensor([a.level for a in batch], device=device)
            output = model(**inputs, labels=labels)
            output.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            loss = output.loss.detach().item()
        model.eval()
        dev_scores = _dev_scores(classifier, dev)
        log.info("EPITOME %s epoch %d: loss %.4f, dev accuracy %s", mechanism, epoch + 1, loss, dev_scores[0])
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    report = TrainReport(
        mechanism=mechanism,
        out_dir=str(out_dir),
        n_train=len(train),
        n_dev=len(dev),
        steps=steps,
        final_loss=loss,
        dev_accuracy=dev_scores[0],
        dev_macro_f1=dev_scores[1],
    )
    meta |= {
        "base_model": config.base_model,
        "lowercase": True,
        "input": "(seeker_post, response_post) pair",
        "data": {"file": data.name, "hash": _file_hash(data), "annotations": len(rows)},
        "train": config.model_dump(exclude={"device"}),
        "dev": {"accuracy": report.dev_accuracy, "macro_f1": report.dev_macro_f1, "n": len(dev)},
    }
    (out_dir / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return report


def _dev_scores(classifier: EpitomeClassifier, dev: Sequence[Annotation]) -> tuple[float | None, float | None]:
    """Accuracy and macro-F1 (over the levels present in gold or prediction) on the held-out part."""
    if not dev:
        return None, None
    gold = np.array([a.level for a in dev])
    pred = classifier.predict([a.seeker_post for a in dev], [a.response_post for a in dev])
    f1s = []
    for level in sorted(set(gold.tolist()) | set(pred.tolist())):
        tp = float(np.sum((pred == level) & (gold == level)))
        denominator = float(np.sum(pred == level) + np.sum(gold == level))
        f1s.append(2 * tp / denominator if denominator else 0.0)
    return float(np.mean(pred == gold)), float(np.mean(f1s))


# ---------------------------------------------------------------------------------------------- scoring


def level_stats(predicted: Sequence[int], gold: Sequence[int]) -> tuple[float, float, float]:
    """§6.4 for one mechanism: mean predicted level, mean gold level, mean squared difference."""
    pred, ref = np.asarray(predicted, dtype=np.float64), np.asarray(gold, dtype=np.float64)
    if pred.shape != ref.shape or pred.size == 0:
        raise EpitomeError(f"need as many predicted as gold levels, at least one; got {pred.size} and {ref.size}")
    return float(pred.mean()), float(ref.mean()), float(((pred - ref) ** 2).mean())


class EpitomeScorer:
    """Scores predictions with the three classifiers in ``model_dir`` (sub-folders ER, IP and EX)."""

    def __init__(self, model_dir: Path | str | None, device: str | None = None, batch_size: int = 32):
        if model_dir is None:
            raise EpitomeModelMissing(missing_model_message("no model directory was given"))
        model_dir = Path(model_dir)
        missing = [m for m in MECHANISMS if not (model_dir / m / META_FILE).is_file()]
        if missing:
            raise EpitomeModelMissing(missing_model_message(f"{model_dir} lacks {', '.join(missing)}"))
        self.model_dir, self.batch_size = model_dir, batch_size
        self.classifiers = {m: EpitomeClassifier.load(model_dir / m, m, device) for m in MECHANISMS}

    def levels(self, records: Sequence[PredictionRecord]) -> dict[str, dict[str, np.ndarray]]:
        """Per mechanism, the predicted responses' and the gold responses' levels."""
        if not records:
            raise EpitomeError("no records to score")
        seekers, predicted, gold = [], [], []
        for i, record in enumerate(records):
            fields = prediction_fields(record)
            if "query" not in fields or "response_text" not in fields:
                raise EpitomeError(f"record {i} needs 'query' (the seeker post) and 'response_text' (the gold reply)")
            seekers.append(clean(fields["query"]))
            predicted.append(prediction_text(record, i))
            gold.append(clean(fields["response_text"]))
        return {
            m: {
                "pred": classifier.predict(seekers, predicted, self.batch_size),
                "gt": classifier.predict(seekers, gold, self.batch_size),
            }
            for m, classifier in self.classifiers.items()
        }

    def score(
        self, records: Sequence[PredictionRecord], bootstrap: int = 1000, seed: int = 0
    ) -> dict[str, MetricResult]:
        """``epitome_{er,ip,ex}_{pred,gt,diff}`` with 95% bootstrap intervals (the same resamples for all)."""
        levels = self.levels(records)
        per_item: dict[str, np.ndarray] = {}
        scores: dict[str, float] = {}
        fields: dict[str, dict[str, str]] = {}
        for m, found in levels.items():
            key = f"epitome_{m.lower()}"
            pred, gt = found["pred"].astype(np.float64), found["gt"].astype(np.float64)
            per_item |= {f"{key}_pred": pred, f"{key}_gt": gt, f"{key}_diff": (pred - gt) ** 2}
            scores |= dict(zip((f"{key}_pred", f"{key}_gt", f"{key}_diff"), level_stats(pred, gt), strict=True))
            meta = self.classifiers[m].meta
            base = {
                "clf": f"{meta.get('base_model', 'unknown')}(cross-encoder)",
                "data": str(meta.get("data", {}).get("hash", "unknown"))[:19],
                "lc": "yes",
                "maxlen": str(meta.get("max_length")),
                "img": "stripped",
            }
            for stat in ("pred", "gt", "diff"):
                fields[f"{key}_{stat}"] = base | {
                    "stat": "mean-squared-diff" if stat == "diff" else f"mean-level-{stat}"
                }
        n = len(records)
        resampler = Bootstrap(bootstrap, seed)
        statistics: list[Statistic] = [mean_statistic(values) for values in per_item.values()]
        intervals = resampler.intervals(n, statistics)
        version = {"version": version_field("transformers", "torch")}
        return {
            name: MetricResult(
                name=name,
                score=scores[name],
                n_items=n,
                ci=interval,
                per_item=values.tolist(),
                signature=fields[name] | bootstrap_fields(resampler.resamples, resampler.seed) | version,
            )
            for (name, values), interval in zip(per_item.items(), intervals, strict=True)
        }
