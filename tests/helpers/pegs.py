"""Shared builders for the PEGS tests (no tests here): tiny models, synthetic dialogues from the small
emoji pack, and one trained tiny checkpoint, built once per session and cached on disk."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from stickerconv.data.samples import Sample, render_samples
from stickerconv.schema import Conversation, Sticker, Turn
from stickerconv.stickers.library import StickerLibrary

TINY_TRAIN_STEPS = {"perception": 10, "retrieval": 12, "generation": 12, "joint": 30}


def tiny_model(**overrides):
    from stickerconv.pegs.config import PegsConfig
    from stickerconv.pegs.model import PegsModel

    return PegsModel(PegsConfig.preset("tiny", **overrides))


def dialogue_samples(library: StickerLibrary, n_conversations: int = 6) -> list[Sample]:
    """Synthetic 3-turn dialogues over library stickers: user stickers on odd turns, system ones on turn 2."""
    stickers = library.stickers
    convs = []
    for c in range(n_conversations):
        s = [stickers[(c * 5 + k) % len(stickers)] for k in range(4)]
        turns = [
            Turn(turn=1, user_message=f"I feel {s[0].label} today.", system_message="I hear you.", user_sticker=s[0]),
            Turn(turn=2, user_message="It was a long day.", system_message="Sending you a hug!", system_sticker=s[1]),
            Turn(turn=3, user_message="Thanks a lot.", system_message="Anytime, friend.", user_sticker=s[2]),
        ]
        convs.append(Conversation(conversation=turns, user_persona="a student", user_status="tired"))
    return [x for conv in convs for x in render_samples(conv, "v1.5", lambda st: st.image)]


def trained_tiny(base: Path, pack: Path) -> Path:
    """All four stages on the tiny config (cached): returns the joint checkpoint folder; the per-stage
    losses and timings are in ``losses.json`` beside it."""
    out = base / "pegs_trained"
    if (out / "losses.json").is_file():
        return out / "joint"
    from stickerconv.pegs.train import StageConfig, dialogue_examples, sticker_examples, train_stage

    library = StickerLibrary.load(pack)
    model = tiny_model()
    record = {}
    for stage, steps in TINY_TRAIN_STEPS.items():
        if stage == "joint":
            examples = dialogue_examples(dialogue_samples(library, 3), pack, model)
        else:
            examples = sticker_examples(StickerLibrary(library.root, library.stickers[:64]), stage)
        cfg = StageConfig(stage=stage, lr=1e-2, warmup_steps=2, max_steps=steps, batch_size=8, log_every=5)
        start = time.perf_counter()
        result = train_stage(model, examples, cfg, out / stage)
        record[stage] = {"losses": result.losses, "seconds": round(time.perf_counter() - start, 1)}
        logging.getLogger(__name__).info("%s losses %s", stage, result.losses)
    (out / "losses.json").write_text(json.dumps(record, indent=1))
    return out / "joint"


def boost_token(model, prompt, token_id: int, strength: float) -> None:
    """Make ``token_id`` the greedy choice after ``prompt``: its output row becomes ``strength`` times the
    direction of the prompt's last hidden state (tied rows change the input embedding too, harmlessly)."""
    import torch

    batch = model.collator()([prompt])
    with torch.no_grad():
        embeds = model.embed(batch)  # (1, T, H)
        out = model.llm(inputs_embeds=embeds, attention_mask=batch.attention_mask, output_hidden_states=True)
        h = out.hidden_states[-1][0, -1]  # (H,) final-normed state: logits = W h
        model.llm.get_output_embeddings().weight[token_id] = strength * h / h.norm() ** 2


def two_turn_sample(style: str = "v1.5") -> Sample:
    """The second turn's sample of a two-turn dialogue: its response "hug" ends with system sticker s0."""
    s = [Sticker(image=f"s{i}.png", description=f"sticker {i}") for i in range(3)]
    conv = Conversation(
        conversation=[
            Turn(turn=1, user_message="hi", system_message="hello", user_sticker=s[0], system_sticker=s[1]),
            Turn(turn=2, user_message="sad", system_message="hug", user_sticker=s[2], system_sticker=s[0]),
        ],
        user_persona="p",
        user_status="s",
    )
    return render_samples(conv, style, lambda st: st.image)[1]


def two_turn_images(root: Path) -> Path:
    """``s0.png`` to ``s2.png`` in ``root``: the images of ``two_turn_sample``'s stickers (one half transparent)."""
    from PIL import Image

    for i, colour in enumerate([(255, 0, 0, 255), (0, 255, 0, 255), (0, 0, 255, 128)]):
        Image.new("RGBA", (40, 40), colour).save(root / f"s{i}.png")
    return root
