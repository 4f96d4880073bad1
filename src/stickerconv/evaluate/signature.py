"""Metric results that carry how they were computed, in the manner of sacrebleu's signatures.

A number such as "BLEU-4 = 0.0103" means little without its convention (NLTK corpus BLEU or
sacrebleu, which tokenizer, which smoothing, which BERTScore model). Every result therefore holds a
signature: ordered ``key:value`` fields, rendered ``name|key:value|...|version:...``, and reports
print it beside the number. The version field names this package and the library that did the
counting, so a result computed with another library version is recognisably different.
"""

from __future__ import annotations

from importlib import metadata

from pydantic import BaseModel, ConfigDict, computed_field


class MetricResult(BaseModel):
    """One metric over one set of samples: the score, its bootstrap interval and its signature."""

    model_config = ConfigDict(frozen=True)

    name: str
    score: float
    n_items: int  # the samples scored
    ci: tuple[float, float] | None = None  # 95% interval: bootstrap over items, or the signature's "ci" method
    per_item: list[float | None] | None = None  # for means of per-sample scores; None: a skipped sample
    signature: dict[str, str]  # ordered fields; see signature_text

    @computed_field  # type: ignore[prop-decorator]
    @property
    def signature_text(self) -> str:
        """``name|key:value|...``, the form reports print."""
        return "|".join([self.name, *(f"{key}:{value}" for key, value in self.signature.items())])

    def __str__(self) -> str:
        interval = f" (95% CI {self.ci[0]:.4f}-{self.ci[1]:.4f})" if self.ci else ""
        return f"{self.name} = {self.score:.4f}{interval}  [{self.signature_text}]"


def version_field(*distributions: str) -> str:
    """``stickerconv-0.1.0+nltk-3.10.4``: this package and the libraries that did the computing."""
    return "+".join(f"{dist}-{_version(dist)}" for dist in ("stickerconv", *distributions))


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "unknown"


def bootstrap_fields(n_resamples: int, seed: int) -> dict[str, str]:
    """The signature fields of a bootstrap interval (sacrebleu's ``bs`` and ``seed``); none without one."""
    return {"bs": str(n_resamples), "seed": str(seed)} if n_resamples else {}
