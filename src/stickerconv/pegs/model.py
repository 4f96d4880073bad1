"""PegsModel: an LLM that perceives stickers, says when to send one, and emits its embedding.

Why this shape (method reference §5): input stickers enter the LLM as ``<Img>`` + K projected
vision vectors + ``</Img>``; output stickers are a block of new ``[IMG1..N]`` tokens whose
final-layer states feed a retrieval head (first retrieval token -> 256-d) and a GILL-style mapper
(generation tokens -> SD prompt embeddings). In the paper emitting ``[IMG1]`` is the decision to send;
here that is the ``greedy`` mode, and by default a fitted threshold on log p([IMG1]) - log p(EOS) at the end
of the reply decides (``config.send``, :mod:`stickerconv.pegs.send`), because a briefly fine-tuned model
never makes [IMG1] the greedy choice.

Decisions kept here (§9): new token rows are mean-initialised and the gradient mask covers
``<Img>``, ``</Img>`` and every ``[IMG]`` row (item 28); with LoRA the mask applies to peft's
``modules_to_save`` copies; inference always reads the whole ``[IMG]`` block after the reply in one
explicit forward pass over prompt + reply + block and gathers the block's states at absolute
positions (items 29-31).

A checkpoint is ``pegs_config.json`` + ``pegs_state.json`` + ``tokenizer/`` + ``weights.safetensors``
holding only what training changes: PEGS's own heads, the new token rows and LoRA weights. Every other
part is frozen and rebuilt from the config on load: a pretrained source by its name (a hub id, a folder,
an offline CNN's weights file, copied beside the config because it is small), a randomly initialised
backbone or encoder (``tiny``, ``paper-shapes``) from the config's seed. Copying a frozen random part
into every checkpoint would write the 13.5 GB fp16 LLM of ``paper-shapes`` at each save; instead
``pegs_state.json`` records a fingerprint of the random parts as built, and loading refuses a rebuild that
differs (another torch or transformers init).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from stickerconv.data.samples import IMG, STYLES
from stickerconv.pegs.config import BYTE_LEVEL, SMOLLM2_GGUF, BackboneConfig, PegsConfig, VisionConfig
from stickerconv.pegs.heads import GenMapper, RetrievalBank, RetrievalHeads
from stickerconv.pegs.sequence import IMG_END, IMG_START, Batch, Collator, Example, img_token
from stickerconv.pegs.vision import ImageTransform, VisionEncoder, build_vision
from stickerconv.profiles import DEFAULT_PROFILE, Profile
from stickerconv.text import readable

log = logging.getLogger(__name__)

CONFIG_FILE, STATE_FILE, WEIGHTS_FILE, TOKENIZER_DIR = (
    "pegs_config.json",
    "pegs_state.json",
    "weights.safetensors",
    "tokenizer",
)
CHECKPOINT_PARTS = (CONFIG_FILE, STATE_FILE, TOKENIZER_DIR, WEIGHTS_FILE)  # a checkpoint is whole with all four
PARTS = ("proj", "tokens", "ret", "gen", "lora")  # what a training stage may unfreeze
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
STATE_FORMAT = 2  # 1: random frozen parts were stored in full (still loaded); 2: rebuilt from the seed
_FINGERPRINT_SAMPLES = 64  # values read from each random tensor for the fingerprint: cheap even at 7 B


@dataclass
class PegsOutput:
    lm_loss: torch.Tensor  # scalar
    gen_loss: torch.Tensor | None  # scalar; None when no row has a caption and target
    ret_loss: torch.Tensor | None  # scalar; None with fewer than 2 retrieval pairs


@dataclass
class Generation:
    text: str  # the readable reply: stop markers cut, last complete sentence, no repeats (text.readable)
    raw_text: str  # the decoded reply with only the stop markers cut: what ``readable`` repaired
    stopped: bool  # whether the model ended the reply itself (EOS or [IMG1]) within the token budget
    token_ids: list[int]  # the text's ids, then the style's separator and the whole [IMG] block when sent
    send_sticker: bool  # the send decision (config.send: the fitted threshold, or greedy [IMG1])
    send_score: float  # log p(separator + [IMG1] | reply) - log p(EOS | reply) at the end of the text
    emitted: bool  # whether greedy decoding emitted [IMG1] itself (the decision in greedy mode)
    ret_embedding: torch.Tensor | None  # (retrieval_dim,) L2-normalised, when sent (or forced) and the model retrieves
    gen_embeds: torch.Tensor | None  # (77, out_dim) SD prompt embeddings, when sent (or forced) and it generates


@dataclass
class ReplyEnd:
    """The reading of a reply's end (:meth:`PegsModel.read_reply`)."""

    send_score: float  # log p(separator + [IMG1] | prompt, reply) - log p(EOS | prompt, reply)
    block: torch.Tensor  # (N, H) final-layer states of the [IMG1..N] block placed after the reply


@dataclass
class Draft:
    """A greedy reply before the send decision (:meth:`PegsModel.draft`)."""

    embeds: torch.Tensor  # (1, T, H) the prompt's embeddings
    text: str  # readable text
    raw_text: str  # decoded text, stop markers cut
    stopped: bool  # ended by EOS or [IMG1] within the budget
    emitted: bool  # [IMG1] was the greedy choice
    text_ids: list[int]  # ids of ``text`` as training tokenises a reply
    end: ReplyEnd


def byte_level_tokenizer(size: int | None = None) -> Any:
    """A byte-level tokenizer without merges (256 byte symbols + BOS/EOS): built in milliseconds with no
    files, and its tiny vocabulary keeps the ``tiny`` model's logits small enough for CI.

    ``size`` pads the vocabulary with ``<unusedN>`` symbols that no text encodes to (there are no merges), so
    a random model gets another model's vocabulary size and with it its embedding, LM-head and logits shapes
    (``paper-shapes``: Llama's 32,000)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<s>": 0, "</s>": 1}
    for symbol in sorted(pre_tokenizers.ByteLevel.alphabet()):  # a set: its order changes with the hash seed
        vocab.setdefault(symbol, len(vocab))
    if size is not None and size < len(vocab):
        raise ValueError(f"a byte-level vocabulary has at least {len(vocab)} symbols, not {size}")
    for i in range(len(vocab), size or 0):
        vocab[f"<unused{i}>"] = i
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="</s>")


def smollm2_folder() -> Path:
    """The embedded SmolLM2 GGUF converted once to a transformers folder (tokenizer + fp32 weights), cached.

    Why: transformers rebuilds the tokenizer from the GGUF's vocabulary and dequantises every tensor on each
    load, about 20 s on 2 cores, and a demo loads the model six times (each training stage, evaluation,
    serving); from the folder a load takes about 2 s. The folder is ``$STICKERCONV_CACHE`` (else
    ``$XDG_CACHE_HOME/stickerconv``, else ``~/.cache/stickerconv``) ``/hf-from-gguf/<file>-<size>-<mtime>``,
    so another GGUF gets its own; it is written under a temporary name and renamed, so a crash or a second
    process converting at the same time never leaves a half-written folder in use."""
    import os
    import shutil
    import tempfile

    import safetensors.torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from stickerconv.assets import embedded_gguf

    gguf = embedded_gguf()
    stat = gguf.stat()
    root = os.environ.get("STICKERCONV_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    base = Path(root) if os.environ.get("STICKERCONV_CACHE") else Path(root) / "stickerconv"
    folder = base / "hf-from-gguf" / f"{gguf.stem}-{stat.st_size}-{stat.st_mtime_ns}"
    if (folder / "config.json").is_file():
        return folder
    log.info("converting %s to a transformers folder in %s (once)", gguf.name, folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".converting-", dir=folder.parent))
    try:
        AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(work)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # save_pretrained refuses a model loaded from a GGUF; its dequantised weights are plain fp32 tensors
        # (safetensors' save_model writes tied ones once, and the config ties them again on load)
        safetensors.torch.save_model(model, str(work / "model.safetensors"), metadata={"format": "pt"})
        model.generation_config.save_pretrained(work)
        model.config.save_pretrained(work)  # last: config.json marks a finished folder
        work.rename(folder)
    except OSError:
        if not (folder / "config.json").is_file():  # not another process's finished rename: a real failure
            raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return folder


def load_tokenizer(spec: str) -> Any:
    """A tokenizer by hub id or folder, ``smollm2-gguf``, ``byte-level`` or ``byte-level-N`` (padded to N
    symbols); pad = eos when it has none (§5.1)."""
    from transformers import AutoTokenizer

    byte_level = re.fullmatch(re.escape(BYTE_LEVEL) + r"(?:-(\d+))?", spec)
    if byte_level:
        return byte_level_tokenizer(int(byte_level.group(1)) if byte_level.group(1) else None)
    if spec == SMOLLM2_GGUF:
        tok = AutoTokenizer.from_pretrained(smollm2_folder())
    else:
        tok = AutoTokenizer.from_pretrained(spec)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_backbone(cfg: BackboneConfig, tokenizer: Any, seed: int, vocab_size: int | None = None) -> nn.Module:
    """The causal LM: pretrained (hub id, folder, GGUF dequantised) or randomly initialised.

    ``vocab_size`` (default ``len(tokenizer)``) sizes a random backbone's vocabulary: a checkpoint's tokenizer
    already holds PEGS's added tokens, and the rebuild must start from the size the original build had."""
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    dtype = _DTYPES[cfg.dtype]
    if cfg.random is not None:
        torch.manual_seed(seed)
        llama = LlamaConfig(
            vocab_size=vocab_size or len(tokenizer),
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            **cfg.random,
        )
        return LlamaForCausalLM(llama).to(dtype)
    if cfg.name_or_path == SMOLLM2_GGUF:
        return AutoModelForCausalLM.from_pretrained(smollm2_folder(), dtype=dtype)
    return AutoModelForCausalLM.from_pretrained(cfg.name_or_path, gguf_file=cfg.gguf_file, dtype=dtype)


def _sourceless(vision: VisionConfig | None) -> bool:
    """A vision encoder without a ``name_or_path``: a random init (a CNN without weights, a random CLIP or
    BLIP-2 config) that is rebuilt from the seed. A CNN with a weights file is rebuilt from that file."""
    return vision is not None and vision.name_or_path is None


def fingerprint(tensors: dict[str, torch.Tensor]) -> str:
    """A digest of tensors' names, shapes, dtypes and 64 evenly spaced values each: enough to tell two random
    inits apart (another generator draws other values everywhere) at a cost that stays small at 7 B."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        flat = tensors[name].detach().reshape(-1)  # (n,)
        idx = torch.linspace(0, flat.numel() - 1, min(flat.numel(), _FINGERPRINT_SAMPLES), dtype=torch.float64)
        idx = idx.long()  # (k,) float64, so positions stay exact in tensors of 100 M values
        digest.update(f"{name}:{tuple(tensors[name].shape)}:{tensors[name].dtype};".encode())
        digest.update(flat[idx.to(flat.device)].double().cpu().numpy().tobytes())
    return "sha256:" + digest.hexdigest()


class PegsModel(nn.Module):
    def __init__(self, config: PegsConfig, tokenizer: Any | None = None):
        super().__init__()
        self.config = config
        # the profile the weights were trained under (stickerconv.profiles): set by `pegs train`, kept in
        # pegs_state.json, so a checkpoint says whether it was trained with the paper's settings or ours
        self.profile: Profile = DEFAULT_PROFILE
        tok = tokenizer if tokenizer is not None else load_tokenizer(config.llm.tokenizer or config.llm.name_or_path)
        added = [IMG_START, IMG_END] + [img_token(i + 1) for i in range(config.n_img_tokens)]
        known = tok.get_vocab()  # a checkpoint's tokenizer has them already; the build must not count them
        self.llm = load_backbone(config.llm, tok, config.seed, len(tok) - sum(t in known for t in added))
        torch.manual_seed(config.seed)
        tok.add_tokens(added[:2], special_tokens=True)
        tok.add_tokens(added[2:])
        self.tokenizer = tok
        # mean-initialised new rows (§9 item 28), drawn after the seed is reset, so a rebuild from a checkpoint's
        # tokenizer draws the same rows. Chosen on purpose, so transformers' notice is kept off the console.
        from transformers.utils import logging as hf_logging

        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        try:
            self.llm.resize_token_embeddings(len(tok), mean_resizing=True)
        finally:
            hf_logging.set_verbosity(verbosity)
        self.new_token_ids = tok.convert_tokens_to_ids(added)
        self.img_ids = self.new_token_ids[2:]  # [IMG1..N]: retrieval block first, then generation block
        # what the style puts between a reply's text and its [IMG] block ("\n" in v0, nothing in v1.5)
        separator = STYLES[config.style].system_sticker.split(IMG)[0]
        self.separator_ids: list[int] = tok(separator, add_special_tokens=False).input_ids if separator else []
        hidden = self.llm.config.hidden_size
        self.vision: VisionEncoder = build_vision(config.vision, config.seed)
        self.retrieval_vision: VisionEncoder | None = (
            build_vision(config.retrieval_vision, config.seed) if config.retrieval_vision is not None else None
        )
        torch.manual_seed(config.seed)
        self.proj = nn.Linear(self.vision.token_dim, hidden)  # perception: (K, D) -> (K, H)
        ret_enc = self.retrieval_vision or self.vision
        self.ret_heads = (
            RetrievalHeads(hidden, ret_enc.pooled_dim, config.retrieval_dim) if config.n_ret_tokens > 0 else None
        )
        self.gen_mapper = GenMapper(hidden, config.mapper) if config.mapper is not None else None
        self.lora_attached = False
        self._hooked: set[int] = set()
        # taken as built, before training or LoRA touch anything: the state a reload must rebuild
        rebuilt = {k: v for k, v in self.state_dict().items() if self._rebuilt(k)}
        self.rebuilt_fingerprint: str | None = fingerprint(rebuilt) if rebuilt else None
        self.freeze_except(())

    def train(self, mode: bool = True) -> PegsModel:
        """The frozen encoders stay in eval mode whatever the model's mode."""
        super().train(mode)
        self.vision.eval()
        if self.retrieval_vision is not None:
            self.retrieval_vision.eval()
        return self

    # ----- trainable parts and the gradient mask -----

    def attach_lora(self) -> None:
        """Wrap the LLM with peft LoRA (§5.4); embeddings and LM head become ``modules_to_save`` copies."""
        from peft import LoraConfig, get_peft_model

        lc = self.config.lora
        tied = bool(getattr(self.llm.config, "tie_word_embeddings", False))
        peft_cfg = LoraConfig(
            r=lc.r,
            lora_alpha=lc.alpha,
            lora_dropout=lc.dropout,
            target_modules=list(lc.target_modules),
            bias="none",
            modules_to_save=["embed_tokens", "lm_head"],
            ensure_weight_tying=tied,
            task_type="CAUSAL_LM",
        )
        with warnings.catch_warnings():  # peft reads a property transformers deprecated; nothing for us to change
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            self.llm = get_peft_model(self.llm, peft_cfg)
        self.lora_attached = True
        self.freeze_except(())

    def token_matrices(self) -> list[nn.Parameter]:
        """The input-embedding and LM-head weights that hold the new rows (one if tied)."""
        out: list[nn.Parameter] = []
        for module in (self.llm.get_input_embeddings(), self.llm.get_output_embeddings()):
            if hasattr(module, "modules_to_save"):  # peft ModulesToSaveWrapper: the trainable copy
                module = module.modules_to_save["default"]
            if all(module.weight is not p for p in out):
                out.append(module.weight)
        return out

    def _row_mask(self, weight: torch.Tensor) -> torch.Tensor:
        mask = torch.zeros(weight.shape[0], 1, dtype=weight.dtype, device=weight.device)  # (V, 1)
        mask[self.new_token_ids] = 1
        return mask

    def freeze_except(self, parts: tuple[str, ...] | list[str] | set[str]) -> list[nn.Parameter]:
        """Freeze everything except ``parts`` (subset of ``PARTS``); returns the trainable parameters.

        ``tokens`` unfreezes the embedding/LM-head matrices with a gradient hook that zeroes every
        row but ``<Img>``, ``</Img>`` and ``[IMG1..N]``.
        """
        unknown = set(parts) - set(PARTS)
        if unknown:
            raise ValueError(f"unknown trainable parts {sorted(unknown)}; choose from {', '.join(PARTS)}")
        if "lora" in parts and not self.lora_attached:
            raise ValueError("'lora' is trainable only after attach_lora()")
        self.requires_grad_(False)
        if "proj" in parts:
            self.proj.requires_grad_(True)
        if "ret" in parts and self.ret_heads is not None:
            self.ret_heads.requires_grad_(True)
        if "gen" in parts and self.gen_mapper is not None:
            self.gen_mapper.requires_grad_(True)
        if "lora" in parts:
            for name, p in self.llm.named_parameters():
                if "lora_" in name:
                    p.requires_grad_(True)
        if "tokens" in parts:
            for w in self.token_matrices():
                w.requires_grad_(True)
                if id(w) not in self._hooked:
                    mask = self._row_mask(w)
                    w.register_hook(lambda g, m=mask: g * m.to(g.device))  # (V, H) * (V, 1): only new rows learn
                    self._hooked.add(id(w))
        return [p for p in self.parameters() if p.requires_grad]

    # ----- batches and forward -----

    def collator(self, train: bool = False, seed: int = 0, max_length: int | None = None) -> Collator:
        """Batches of examples for this model; ``max_length`` (a training stage's) caps the sequences below the
        model's own."""
        ret_cfg = self.config.retrieval_vision or self.config.vision
        return Collator(
            self.tokenizer,
            self.vision.n_tokens,
            self.config.n_img_tokens,
            min(max_length or self.config.max_length, self.config.max_length),
            ImageTransform(self.config.vision, train=train, seed=seed),
            ImageTransform(ret_cfg, train=False),
        )

    def embed(self, batch: Batch) -> torch.Tensor:
        """Token embeddings with the projected perception vectors scattered into their slots."""
        embeds = self.llm.get_input_embeddings()(batch.input_ids)  # (B, T, H)
        if batch.pixels.shape[0] == 0:
            return embeds
        with torch.no_grad():
            tokens = self.vision(batch.pixels.to(embeds.device)).tokens  # (M, K, D) frozen encoder
        feats = self.proj(tokens.float()).to(embeds.dtype)  # (M, K, H)
        return embeds.masked_scatter(batch.perception_mask.unsqueeze(-1), feats)  # (B, T, H)

    def _block_states(self, hidden: torch.Tensor, rows: torch.Tensor, start: torch.Tensor, n: int) -> torch.Tensor:
        """hidden (B, T, H) -> (len(rows), n, H): the states at start[row] + 0..n-1 (absolute positions)."""
        pos = start[rows].unsqueeze(1) + torch.arange(n, device=hidden.device)  # (R, n)
        return hidden[rows.unsqueeze(1), pos]  # (R, n, H)

    def image_embeddings(self, pixels: torch.Tensor) -> torch.Tensor:
        """Sticker side of retrieval: (B, 3, S, S) -> (B, retrieval_dim), L2-normalised."""
        if self.ret_heads is None:
            raise ValueError("this PEGS model has no retrieval tokens (n_ret_tokens = 0)")
        with torch.no_grad():
            pooled = (self.retrieval_vision or self.vision)(pixels).pooled  # (B, P)
        return self.ret_heads.embed_image(pooled.float())

    @torch.no_grad()
    def pooled_features(self, paths: list[Path], batch_size: int = 64) -> torch.Tensor:
        """(N, P) frozen pooled features of the retrieval encoder for the sticker images at ``paths``, on the
        model's device: the input of the sticker-side head, computed once per library."""
        transform = self.collator().target_transform
        encoder = self.retrieval_vision or self.vision
        device = next(self.parameters()).device
        out = []
        for start in range(0, len(paths), batch_size):
            pixels = torch.stack([transform(p) for p in paths[start : start + batch_size]])  # (b, 3, S, S)
            out.append(encoder(pixels.to(device)).pooled.float())  # (b, P)
        return torch.cat(out)

    def forward(
        self, batch: Batch, gen_targets: torch.Tensor | None = None, ret_bank: RetrievalBank | None = None
    ) -> PegsOutput:
        """All losses the batch supports; the training stage decides which to add (§5.3).

        gen_targets: (Bg, 77, out_dim) frozen SD text-encoder outputs for ``batch.captions``.
        ret_bank: the gradient-accumulation window's retrieval pairs (:class:`RetrievalBank`): the batch's pairs
        join it, and L_ret is computed over the whole window at its closing micro-batch only (None before).
        Without a bank L_ret contrasts the batch's own pairs.
        """
        cfg = self.config
        embeds = self.embed(batch)  # (B, T, H)
        out = self.llm(
            inputs_embeds=embeds, attention_mask=batch.attention_mask, labels=batch.labels, output_hidden_states=True
        )
        hidden = out.hidden_states[-1]  # (B, T, H)
        gen_loss = None
        if self.gen_mapper is not None and gen_targets is not None and batch.caption_rows.numel() > 0:
            h = self._block_states(hidden, batch.caption_rows, batch.block_start + cfg.n_ret_tokens, cfg.n_gen_tokens)
            pred = self.gen_mapper(h.float())  # (Bg, 77, out_dim)
            gen_loss = F.mse_loss(pred, gen_targets.to(pred.dtype))
        ret_loss = self._retrieval_loss(hidden, batch, ret_bank) if self.ret_heads is not None else None
        return PegsOutput(lm_loss=out.loss, gen_loss=gen_loss, ret_loss=ret_loss)

    def _retrieval_loss(self, hidden: torch.Tensor, batch: Batch, bank: RetrievalBank | None) -> torch.Tensor | None:
        """L_ret of the batch's pairs, or of the window's with a bank (None until the bank closes)."""
        assert self.ret_heads is not None
        rows = batch.target_rows
        pairs = None
        if rows.numel() > 0:
            h = hidden[rows, batch.block_start[rows]].detach()  # (Bt, H): LLM detached, only the heads learn
            with torch.no_grad():
                pooled = (self.retrieval_vision or self.vision)(batch.target_pixels.to(hidden.device)).pooled
            pairs = (h.float(), pooled.float())  # (Bt, H), (Bt, P)
        if bank is not None:
            if pairs is not None:
                bank.add(*pairs)
            if not bank.closing:
                return None
            pairs = bank.drain()
        return self.ret_heads.loss(*pairs, self.config.tau) if pairs is not None else None

    # ----- inference -----

    @property
    def send_threshold(self) -> float | None:
        """The fitted threshold the send decision uses; None when it is greedy (by choice, or for want of a fit)."""
        send = self.config.send
        return send.fit.threshold if send.decision == "threshold" and send.fit is not None else None

    @torch.no_grad()
    def draft(self, prompts: Sequence[Example], max_new_tokens: int | None = None) -> list[Draft]:
        """Greedy replies to prompt examples, decoded as one batch, and the reading of each reply's end (§5.6).

        Decoding: greedy with the config's ``decoding`` settings (token budget, repetition penalty, no repeated
        n-gram of the reply; ``max_new_tokens`` overrides the budget); [IMG2..N] are -inf so that only [IMG1]
        can open a block, and a reply stops at EOS or [IMG1]. Prompts are left-padded for the batch (positions
        enter attention only relatively, through RoPE, and padding is masked), so a reply is the one the prompt
        gets alone up to float rounding. Each text is cut at the template's stop markers and made readable
        (:func:`stickerconv.text.readable`: last complete sentence, no repeated sentence or clause), then
        read once more as training lays a reply out (:meth:`read_reply`), which gives the send score at its end."""
        from transformers import LogitsProcessor, LogitsProcessorList

        tail = torch.tensor(self.img_ids[1:], dtype=torch.long)
        img1, eos = self.img_ids[0], self.tokenizer.eos_token_id

        class BlockTail(LogitsProcessor):
            def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
                scores[:, tail.to(scores.device)] = float("-inf")  # (B, V)
                return scores

        cfg = self.config
        device = next(self.llm.parameters()).device
        batch = self.collator(train=False)(list(prompts)).to(device)
        embeds = self.embed(batch)  # (B, T, H), right-padded
        lengths = batch.attention_mask.sum(dim=1)  # (B,)
        b, t, h = embeds.shape
        pad = (t - lengths).unsqueeze(1)  # (B, 1)
        positions = torch.arange(t, device=device).unsqueeze(0)  # (1, T)
        source = (positions - pad) % t  # (B, T): left-padded position j holds right-padded position j - pad
        left = embeds.gather(1, source.unsqueeze(-1).expand(b, t, h))  # (B, T, H)
        with warnings.catch_warnings():  # the reply's own repeats are what we want: the prompt may repeat itself
            for setting in ("no_repeat_ngram_size", "repetition_penalty"):
                warnings.filterwarnings("ignore", message=f".*{setting}.*inputs_embeds.*", category=UserWarning)
            generated = self.llm.generate(
                inputs_embeds=left,
                attention_mask=(positions >= pad).long(),  # (B, T)
                max_new_tokens=max_new_tokens or cfg.decoding.max_new_tokens,
                do_sample=False,
                num_beams=1,
                repetition_penalty=cfg.decoding.repetition_penalty,
                no_repeat_ngram_size=cfg.decoding.no_repeat_ngram_size,
                logits_processor=LogitsProcessorList([BlockTail()]),
                eos_token_id=[eos, img1],
                pad_token_id=self.tokenizer.pad_token_id,
            ).tolist()  # (B, G); a finished row is padded
        drafts = []
        for row, ids in enumerate(generated):
            end = next((i for i, token in enumerate(ids) if token in (eos, img1)), None)  # the reply's own stop
            raw = ids if end is None else ids[:end]
            raw_text = _cut(self.tokenizer.decode(raw, skip_special_tokens=True), cfg.style)
            text = readable(raw_text)
            text_ids = self.tokenizer(text, add_special_tokens=False).input_ids if text else []
            prompt = embeds[row : row + 1, : int(lengths[row])]  # (1, T_row, H)
            emitted = end is not None and ids[end] == img1
            drafts.append(
                Draft(
                    prompt,
                    text,
                    raw_text.strip(),
                    end is not None,
                    emitted,
                    text_ids,
                    self.read_reply(prompt, text_ids),
                )
            )
        return drafts

    @torch.no_grad()
    def generate(self, prompt: Example, max_new_tokens: int | None = None, force_sticker: bool = False) -> Generation:
        """The reply (:meth:`draft`) and the send decision at its end, with the sticker embeddings when sent.

        The decision (``send_sticker``) is ``send_score > threshold`` with a fitted threshold
        (``config.send``), else whether greedy decoding emitted [IMG1] (``emitted``). ``force_sticker`` reads
        the embeddings even when the decision is not to send (ranking protocols need one for every sample);
        ``send_sticker`` and ``token_ids`` still show the decision. The retrieval embedding comes from the
        block after the reply (``retrieval_read="reply"``) or from a block right after the prompt
        (``"context"``, :meth:`context_state`): the same for any reply the model writes."""
        cfg = self.config
        (r,) = self.draft([prompt], max_new_tokens)
        threshold = self.send_threshold
        send = r.end.send_score > threshold if threshold is not None else r.emitted
        ret = gen = None
        if send or force_sticker:
            if self.ret_heads is not None:
                h = self.context_state(r.embeds) if cfg.retrieval_read == "context" else r.end.block[0]  # (H,)
                ret = self.ret_heads.embed_text(h.float())  # (dim,)
            if self.gen_mapper is not None:
                g = r.end.block[cfg.n_ret_tokens : cfg.n_ret_tokens + cfg.n_gen_tokens]  # (n_gen, H)
                gen = self.gen_mapper(g.unsqueeze(0).float())[0]  # (77, out_dim)
        ids = [*r.text_ids, *self.separator_ids, *self.img_ids] if send else r.text_ids
        return Generation(r.text, r.raw_text, r.stopped, ids, send, r.end.send_score, r.emitted, ret, gen)

    @torch.no_grad()
    def read_reply(self, embeds: torch.Tensor, text_ids: Sequence[int]) -> ReplyEnd:
        """Read a reply's end as training lays it out: prompt, reply text, separator, [IMG1..N] (one pass).

        (1, T, H) prompt embeddings and the reply's ids -> the send score, the log-probability of the separator
        and [IMG1] after the text minus that of EOS there (the two ways training ends a reply), and the block's
        final-layer states."""
        ids = [*text_ids, *self.separator_ids, *self.img_ids]
        out = self._extend(embeds, ids, logits_to_keep=len(ids) + 1)
        n_text, n_send = len(text_ids), len(self.separator_ids) + 1  # separator and [IMG1]: the send tokens
        rows = out.logits[0, n_text : n_text + n_send]  # (S, V): row j predicts ids[n_text + j]
        logp = F.log_softmax(rows.float(), dim=-1)  # (S, V)
        send_ids = torch.tensor(ids[n_text : n_text + n_send], device=rows.device)  # (S,)
        score = float(logp.gather(1, send_ids.unsqueeze(1)).sum() - logp[0, self.tokenizer.eos_token_id])
        return ReplyEnd(score, out.hidden_states[-1][0, embeds.shape[1] + n_text + n_send - 1 :])  # block: (N, H)

    @torch.no_grad()
    def context_state(self, embeds: torch.Tensor) -> torch.Tensor:
        """(1, T, H) prompt embeddings -> (H,): the final-layer [IMG1] state of a block right after the prompt,
        the read position of ``retrieval_read="context"`` (the rest of the block cannot change it: causal)."""
        return self.context_states(embeds, torch.tensor([embeds.shape[1]], device=embeds.device))[0]

    @torch.no_grad()
    def context_states(self, embeds: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, T, H) right-padded prompt embeddings and their (B,) lengths -> (B, H): :meth:`context_state` of
        every row in one pass. Each row's [IMG1] goes right after its own prompt and its padding after that, where
        causal attention never looks back from the [IMG1], so a row reads what it reads alone."""
        b = embeds.shape[0]
        rows = torch.arange(b, device=embeds.device)
        img1 = self.llm.get_input_embeddings()(torch.tensor(self.img_ids[:1], device=embeds.device))  # (1, H)
        full = torch.cat([embeds, embeds.new_zeros(b, 1, embeds.shape[2])], dim=1)  # (B, T + 1, H)
        full[rows, lengths] = img1.to(embeds.dtype)
        mask = (torch.arange(full.shape[1], device=embeds.device).unsqueeze(0) <= lengths.unsqueeze(1)).long()
        out = self.llm(inputs_embeds=full, attention_mask=mask, output_hidden_states=True, logits_to_keep=1)
        return out.hidden_states[-1][rows, lengths]  # (B, H)

    def _extend(self, embeds: torch.Tensor, ids: Sequence[int], logits_to_keep: int = 1) -> Any:
        """One forward pass over (1, T, H) prompt embeddings followed by ``ids``; final-layer states kept, and
        the logits of the last ``logits_to_keep`` positions."""
        tail = self.llm.get_input_embeddings()(torch.tensor([list(ids)], device=embeds.device)).to(embeds.dtype)
        full = torch.cat([embeds, tail], dim=1)  # (1, T + L, H)
        mask = torch.ones(full.shape[:2], dtype=torch.long, device=embeds.device)
        return self.llm(
            inputs_embeds=full, attention_mask=mask, output_hidden_states=True, logits_to_keep=logits_to_keep
        )

    # ----- checkpoints -----

    def _kept(self, key: str) -> bool:
        """Whether a state-dict key belongs in a checkpoint: the parts training changes (the token rows are
        stored apart, as ``token_rows.i``). Everything else is frozen and rebuilt from the config."""
        if key.startswith(("proj.", "ret_heads.", "gen_mapper.")):
            return True
        return key.startswith("llm.") and "lora_" in key

    def _rebuilt(self, key: str) -> bool:
        """Whether a state-dict key belongs to a frozen random part, rebuilt from the config's seed on load
        (a random backbone but its LoRA weights; a vision encoder without ``name_or_path``)."""
        if key.startswith("vision."):
            return _sourceless(self.config.vision)
        if key.startswith("retrieval_vision."):
            return _sourceless(self.config.retrieval_vision)
        return key.startswith("llm.") and self.config.llm.random is not None and "lora_" not in key

    def save_pretrained(self, out: Path | str) -> Path:
        """Write the checkpoint: config, state (LoRA, the random parts' fingerprint), tokenizer, and the
        weights training changes (heads, projection, mapper, LoRA, the new token rows), nothing frozen."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        self.save_config(out)
        meta = {
            "format": STATE_FORMAT,
            "lora": self.lora_attached,
            "rebuilt_fingerprint": self.rebuilt_fingerprint,
            "profile": self.profile,
        }
        (out / STATE_FILE).write_text(json.dumps(meta) + "\n", encoding="utf-8")
        self.tokenizer.save_pretrained(out / TOKENIZER_DIR)
        state = {k: v.detach().cpu().clone().contiguous() for k, v in self.state_dict().items() if self._kept(k)}
        for i, w in enumerate(self.token_matrices()):
            state[f"token_rows.{i}"] = w.detach()[self.new_token_ids].cpu().clone()  # (n_new, H)
        save_file(state, str(out / WEIGHTS_FILE))
        return out

    def save_config(self, out: Path) -> Path:
        """Write ``pegs_config.json`` into the checkpoint folder ``out``, each pretrained CNN's weights file
        copied beside it and named relative to it: a checkpoint moved or copied on its own still loads (the
        files are a few hundred KB; the frozen CNN stays out of the weights file)."""
        updates = {}
        for name, vision, source in self.config.cnn_weights():
            kept = out / f"{name}-cnn.pt"
            if source.resolve() != kept.resolve():
                shutil.copyfile(source, kept)
            updates[name] = vision.model_copy(update={"name_or_path": kept.name})
        self.config.model_copy(update=updates).save(out / CONFIG_FILE)
        return out / CONFIG_FILE

    @classmethod
    def from_pretrained(cls, path: Path | str, device: str | torch.device = "cpu") -> PegsModel:
        """Rebuild the model from its config (frozen parts from their sources or the seed, on the CPU), attach
        LoRA if it was, and load the trained weights (:meth:`load_weights`)."""
        path = Path(path)
        config = PegsConfig.load(path / CONFIG_FILE)
        meta = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
        from transformers import AutoTokenizer

        model = cls(config, tokenizer=AutoTokenizer.from_pretrained(path / TOKENIZER_DIR))
        if meta["lora"]:
            model.attach_lora()
        model.profile = meta.get("profile", DEFAULT_PROFILE)  # checkpoints written before profiles: ours
        model.load_weights(path)
        return model.to(device).eval()

    def load_weights(self, path: Path | str) -> None:
        """Load a checkpoint's weights into this model (same config, LoRA attached alike); strict on keys.

        The model's frozen random parts must be the ones the checkpoint was trained with: their fingerprint in
        ``pegs_state.json`` is compared with this build's. A format-1 checkpoint stored them in full; they load."""
        path = Path(path)
        state_file = path / STATE_FILE
        saved = json.loads(state_file.read_text(encoding="utf-8")) if state_file.is_file() else {}
        expected_print, legacy = saved.get("rebuilt_fingerprint"), saved.get("format", 1) < 2
        if not legacy and expected_print != self.rebuilt_fingerprint:
            raise ValueError(
                f"checkpoint {path}: its frozen random parts (random backbone or vision encoders, rebuilt from seed "
                f"{self.config.seed} on load) come out differently in this build ({self.rebuilt_fingerprint} against "
                f"{expected_print}); load it with the torch and transformers versions it was trained with"
            )
        state = load_file(str(path / WEIGHTS_FILE))
        rows = {k: state.pop(k) for k in [k for k in state if k.startswith("token_rows.")]}
        own = self.state_dict()
        expected = {k for k in own if self._kept(k)}
        stored_frozen = {k for k in state if legacy and k in own and self._rebuilt(k)}  # format 1: in full
        if set(state) - stored_frozen != expected:
            missing, extra = sorted(expected - set(state)), sorted(set(state) - stored_frozen - expected)
            raise ValueError(
                f"checkpoint {path} does not match its config: missing {missing[:5]}, unexpected {extra[:5]}"
            )
        self.load_state_dict(state, strict=False)
        with torch.no_grad():
            for i, w in enumerate(self.token_matrices()):
                if f"token_rows.{i}" in rows:
                    w[self.new_token_ids] = rows[f"token_rows.{i}"].to(w.device, w.dtype)


def _cut(text: str, style: str) -> str:
    """Post-processing (§5.6): the reply ends at a stop marker of the prompt template. Speaker markers match in
    any case: a small model often goes on with the next turn as "User: ..." rather than "USER: ..."."""
    fmt = STYLES[style]
    markers = ("###", "</s>", fmt.user_prefix.strip(), fmt.assistant_marker)
    return re.split("|".join(re.escape(m) for m in markers), text, maxsplit=1, flags=re.IGNORECASE)[0]
