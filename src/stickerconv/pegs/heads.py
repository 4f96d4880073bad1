"""PEGS output heads and the retrieval loss (method reference §5.1 and §5.3).

Why separate from the model: the heads are small, self-contained modules with their own shape
contracts (the mapper must emit exactly the SD text encoder's 77 x width), and the contrastive
loss is shared with the offline CNN's pretraining in :mod:`stickerconv.pegs.vision`.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from stickerconv.pegs.config import MapperConfig


def info_nce(a: torch.Tensor, b: torch.Tensor, tau: float) -> torch.Tensor:
    """Symmetric InfoNCE over matched rows: ``½ [CE(S, diag) + CE(Sᵀ, diag)]``, ``S = (1/tau) â b̂ᵀ``.

    a: (B, D), b: (B, D); row i of a matches row i of b. Both are L2-normalised here.
    """
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    logits = a @ b.t() / tau  # (B, B)
    target = torch.arange(a.shape[0], device=a.device)  # (B,)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


class RetrievalBank:
    """The retrieval pairs of one gradient-accumulation window, pooled so that L_ret contrasts every pair of
    the optimiser step (method reference §5.3: the paper pooled pairs over 6 micro-steps in pretraining and 36
    in joint RAG). Without it a joint-RAG micro-batch of 3 holds 0 to 3 pairs and L_ret is often dropped.

    Why the bank holds the heads' *inputs*: L_ret's inputs are detached already (the LLM state at the read
    position, so that only the heads learn from L_ret; the frozen encoder's pooled image features). Banking
    them as micro-batches pass and running the heads live over the whole bank at the window's last
    micro-batch (``closing``) gives exactly the loss of one large batch, hence exactly its gradient, once per
    optimiser step. The heads do not change inside a window (the optimiser steps at its end), so no banked row
    is stale. Banking detached *embeddings* instead would be cheaper by nothing (the heads are linear maps) and
    biased: earlier rows would get no gradient, and no row would meet the window's later rows.
    """

    def __init__(self) -> None:
        self.text: list[torch.Tensor] = []  # (b, H) detached LLM states, one entry per micro-batch with pairs
        self.image: list[torch.Tensor] = []  # (b, P) frozen pooled image features
        self.closing = False  # set by the training loop: this micro-batch ends the window

    def __len__(self) -> int:
        return sum(t.shape[0] for t in self.text)

    def add(self, text_states: torch.Tensor, image_features: torch.Tensor) -> None:
        self.text.append(text_states.detach())
        self.image.append(image_features.detach())

    def drain(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Every banked pair, (R, H) and (R, P), and an empty bank for the next window; None when it is empty."""
        text, image = self.text, self.image
        self.text, self.image = [], []
        if not text:
            return None
        return torch.cat(text), torch.cat(image)


class GenMapper(nn.Module):
    """GILL-style mapper: N [IMG] states -> 77 SD prompt embeddings (no input residual, unlike GILL).

    Linear(H -> d) -> Transformer (encoder reads the N states, decoder reads 77 learned queries,
    pre-norm, dropout 0) -> Linear(d -> out_dim).
    """

    def __init__(self, in_dim: int, cfg: MapperConfig):
        super().__init__()
        self.inp = nn.Linear(in_dim, cfg.d_model)
        with warnings.catch_warnings():  # pre-norm layers cannot use nested tensors; torch says so at every build
            warnings.filterwarnings("ignore", message=".*enable_nested_tensor.*", category=UserWarning)
            self.transformer = nn.Transformer(
                d_model=cfg.d_model,
                nhead=cfg.heads,
                num_encoder_layers=cfg.encoder_layers,
                num_decoder_layers=cfg.decoder_layers,
                dim_feedforward=cfg.ffn,
                dropout=cfg.dropout,
                batch_first=True,
                norm_first=True,
            )
        self.queries = nn.Parameter(torch.randn(1, cfg.n_queries, cfg.d_model) * 0.02)  # (1, 77, d)
        self.out = nn.Linear(cfg.d_model, cfg.out_dim)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        # h: (B, N, H) final-layer LLM states of the generation [IMG] block
        x = self.inp(h)  # (B, N, d)
        q = self.queries.expand(h.shape[0], -1, -1)  # (B, 77, d)
        y = self.transformer(x, q)  # (B, 77, d)
        return self.out(y)  # (B, 77, out_dim)


class RetrievalHeads(nn.Module):
    """Both sides of retrieval into one ``dim``-d space: LLM state of the first retrieval token, and
    the frozen image encoder's pooled output. Outputs are L2-normalised."""

    def __init__(self, llm_dim: int, image_dim: int, dim: int):
        super().__init__()
        self.text = nn.Linear(llm_dim, dim)
        self.image = nn.Linear(image_dim, dim)

    def embed_text(self, h: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text(h), dim=-1)  # (B, H) -> (B, dim)

    def embed_image(self, pooled: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image(pooled), dim=-1)  # (B, P) -> (B, dim)

    def loss(self, text_states: torch.Tensor, image_features: torch.Tensor, tau: float) -> torch.Tensor | None:
        """L_ret over matched rows of LLM states (R, H) and pooled image features (R, P); None with fewer than
        2 pairs (nothing to contrast)."""
        if text_states.shape[0] < 2:
            return None
        return info_nce(self.embed_text(text_states.float()), self.embed_image(image_features.float()), tau)
