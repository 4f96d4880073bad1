"""The six decisions of the method reference §9 that had no test of their own (issue 20): items 11, 15, 25, 31, 33
and 35. Each test would fail if its decision were undone."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stickerconv.agent4sc import runner as runner_module
from stickerconv.agent4sc import simulate as simulate_module
from stickerconv.agent4sc.dialogue import DialogueMemory
from stickerconv.agent4sc.manager import ManagerConfig
from stickerconv.agent4sc.memory import MemoryStream
from stickerconv.agent4sc.runner import run_generation
from stickerconv.pegs import train as train_module
from stickerconv.pegs.config import TINY_RANDOM, DiffusionConfig, MapperConfig, paper_shapes
from stickerconv.pegs.diffusion import StickerPainter, encode_captions, load_sd, tiny_random_sd
from stickerconv.pegs.sequence import sample_example
from stickerconv.pegs.train import StageConfig, resolve_precision, sticker_examples, train_stage
from stickerconv.runfiles import CONVERSATIONS
from stickerconv.schema import Conversation
from stickerconv.stickers.index import StickerIndex
from stickerconv.stickers.library import StickerLibrary

from helpers.agent4sc import PERSONAS, llm_factory, scripted_world
from helpers.embedding import HashEmbedder
from helpers.pegs import boost_token, tiny_model, two_turn_images, two_turn_sample

# ----------------------------------------------------------------------------------------------- Agent4SC


@pytest.fixture(scope="module")
def hash_index(small_pack) -> StickerIndex:
    index, _ = StickerIndex.build(StickerLibrary.load(small_pack), HashEmbedder("hash-test", 48))
    return index


def test_memory_embeds_with_the_index_embedder(tmp_path, hash_index, monkeypatch):
    """§9 item 11: memory embeddings came from a private server; decided: the memory streams reuse the
    configurable index embedder, so every memory vector is the index embedder's vector of its text."""
    streams: list[MemoryStream] = []

    class Recorded(MemoryStream):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            streams.append(self)

    monkeypatch.setattr(runner_module, "MemoryStream", Recorded)
    report = asyncio.run(run_generation(PERSONAS[:1], hash_index, llm_factory(tmp_path, scripted_world()), tmp_path))
    assert report.kept == 1 and len(streams) == 2  # the user's and the assistant's
    for stream in streams:
        # the run's shared embedder wraps the index's own (one for every session; see stickers/batched.py)
        assert stream.embedder.inner is hash_index.embedder
        assert stream.records, stream.name
        texts = [r.text for r in stream.records]
        vectors = np.stack([r.vector for r in stream.records])  # (n, 48): the index embedder's width
        np.testing.assert_allclose(vectors, HashEmbedder("hash-test", 48).embed(texts), atol=1e-6)


@pytest.fixture
def added(monkeypatch) -> list[str]:
    """Every line the simulator adds to the shared history (the dialogue memory), in order."""
    lines: list[str] = []

    class Recorded(DialogueMemory):
        async def add(self, *new: str) -> None:
            lines.extend(new)
            await super().add(*new)

    monkeypatch.setattr(simulate_module, "DialogueMemory", Recorded)
    return lines


def test_stickers_stay_out_of_the_shared_history(tmp_path, hash_index, added):
    """§9 item 15: stickers are absent from the shared history (reproduced): the dialogue memory holds only the
    ``B: …`` / ``A: …`` lines, and the other side sees a sticker only through its observation line."""
    backend = scripted_world()
    asyncio.run(run_generation(PERSONAS[:1], hash_index, llm_factory(tmp_path, backend), tmp_path))
    conv = Conversation.model_validate_json((tmp_path / CONVERSATIONS).read_text())
    stickers = [s for t in conv.conversation for s in (t.user_sticker, t.system_sticker) if s is not None]
    assert stickers, "the scripted world sends stickers"
    assert added == [line for t in conv.conversation for line in (f"B: {t.user_message}", f"A: {t.system_message}")]
    assert not any("sticker" in line.lower() for line in added)
    prompts = [m.text for r in backend.requests for m in r.messages]
    assert any("action: Speak and use a sticker" in p for p in prompts)  # the observation line carries it


def test_sticker_markers_name_the_sticker_in_the_shared_history(tmp_path, hash_index, added):
    """§9 item 15, the option: ``sticker_markers`` writes ``[sticker: description]`` after a line that had one,
    and only there."""
    factory = llm_factory(tmp_path, scripted_world())
    config = ManagerConfig(sticker_markers=True)
    asyncio.run(run_generation(PERSONAS[:1], hash_index, factory, tmp_path, manager_config=config))
    conv = Conversation.model_validate_json((tmp_path / CONVERSATIONS).read_text())
    expected = []
    for t in conv.conversation:
        for speaker, text, sticker in (
            ("B", t.user_message, t.user_sticker),
            ("A", t.system_message, t.system_sticker),
        ):
            expected.append(f"{speaker}: {text}" + (f" [sticker: {sticker.description}]" if sticker else ""))
    assert any("[sticker: " in line for line in expected)
    assert added == expected


# ----------------------------------------------------------------------------------------------- PEGS


def test_sd_prompt_width_is_read_from_the_text_encoder():
    """§9 item 25: the SD prompt width defaulted to 1,024; decided: it is the text encoder's (768 for SD-1.5), and a
    mapper of another width is refused with a clear error rather than failing inside the UNet."""
    assert MapperConfig().out_dim == 768
    sd = paper_shapes(shrink=True).sd  # SD-1.5's classes, a 32-wide text encoder
    parts = load_sd(sd, 32)
    assert parts.width == 32 == parts.unet.config.cross_attention_dim
    assert encode_captions(parts, ["a happy cat"]).shape == (1, 77, 32)
    with pytest.raises(ValueError, match=r"is 32 wide but the mapper emits 768; set mapper.out_dim to 32"):
        load_sd(sd, 768)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return two_turn_images(tmp_path_factory.mktemp("img"))


def test_generation_mapper_reads_the_generation_block_in_training_and_inference(images):
    """§9 item 31: the RAG mapper was trained on 64 [IMG] states and fed 32 at inference; decided: the mapper reads
    the generation block (the n_gen tokens after the n_ret retrieval tokens) in both, so the same reply gives it the
    same states."""
    model = tiny_model().eval()
    cfg = model.config
    n_ret, n_gen = cfg.n_ret_tokens, cfg.n_gen_tokens
    assert n_ret > 0 and n_gen > 0
    fed: list[torch.Tensor] = []
    model.gen_mapper.register_forward_pre_hook(lambda module, args: fed.append(args[0].detach().clone()))

    ex = sample_example(two_turn_sample(), images, "v1.5", cfg.system_prompt)
    batch = model.collator()([ex])
    with torch.no_grad():
        model(batch, gen_targets=torch.zeros(1, 77, cfg.mapper.out_dim))
    (trained,) = fed
    start = int(batch.block_start[0]) + n_ret
    assert trained.shape == (1, n_gen, model.llm.config.hidden_size)
    assert batch.input_ids[0, start : start + n_gen].tolist() == model.img_ids[n_ret:]

    prompt = sample_example(two_turn_sample(), images, "v1.5", cfg.system_prompt, with_response=False)
    (draft,) = model.draft([prompt], max_new_tokens=5)
    same_reply = model.read_reply(draft.embeds, model.tokenizer("hug", add_special_tokens=False).input_ids)
    torch.testing.assert_close(same_reply.block[n_ret:], trained[0], atol=1e-4, rtol=1e-4)

    fed.clear()
    boost_token(model, prompt, model.img_ids[0], 100.0)  # the model sends a sticker
    gen = model.generate(prompt, max_new_tokens=5)
    assert gen.send_sticker and gen.gen_embeds.shape == (77, cfg.mapper.out_dim)
    (inferred,) = fed
    (draft,) = model.draft([prompt], max_new_tokens=5)
    assert inferred.shape == (1, n_gen, model.llm.config.hidden_size)
    torch.testing.assert_close(inferred[0], model.read_reply(draft.embeds, draft.text_ids).block[n_ret:])


REAL_OPTIMIZER = train_module._optimizer  # taken before any test wraps it


@pytest.fixture(scope="module")
def generation_examples(small_pack):
    library = StickerLibrary.load(small_pack)
    return sticker_examples(StickerLibrary(library.root, library.stickers[:4]), "generation")


def _step_gradients(monkeypatch, examples, out: Path, **settings) -> tuple[list[dict[str, torch.Tensor]], set]:
    """The trainable parameters' gradients at every real optimiser step of one generation stage on a fresh tiny
    model (L_gen alone: an MSE over equal-sized targets, so micro-batch means average to the batch mean), and the
    dtypes the LM head computed in."""
    steps: list[dict[str, torch.Tensor]] = []

    def spied(model, params, cfg):
        optimizer = REAL_OPTIMIZER(model, params, cfg)
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]

        def record(opt, args, kwargs):
            steps.append({n: p.grad.detach().float().clone() for n, p in named if p.grad is not None})

        optimizer.register_step_pre_hook(record)
        return optimizer

    monkeypatch.setattr(train_module, "_optimizer", spied)
    model = tiny_model()
    dtypes: set = set()
    model.llm.get_output_embeddings().register_forward_hook(lambda module, args, output: dtypes.add(output.dtype))
    quiet = {"warmup_steps": 0, "log_every": 100, "checkpoint_every": 100, "lr": 1e-3, "max_steps": 1}
    train_stage(model, examples, StageConfig(stage="generation", **quiet, **settings), out)
    assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)  # fp32 master weights
    return steps, dtypes


def _norm(grads: dict[str, torch.Tensor]) -> float:
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads.values()])))


def test_runner_accumulates_clips_and_runs_in_mixed_precision(tmp_path, monkeypatch, generation_examples):
    """§9 item 33: the original runner ignored clipping, accumulation and AMP; decided: implemented. Two
    micro-batches of 2 accumulated make one optimiser step whose gradient is the batch of 4's; clip_grad bounds the
    stepped gradient's norm; bf16 runs the forward under autocast with fp32 weights."""
    plain = {"mixed_precision": "no", "clip_grad": None}
    big, _ = _step_gradients(monkeypatch, generation_examples, tmp_path / "big", batch_size=4, **plain)
    accumulated, _ = _step_gradients(
        monkeypatch, generation_examples, tmp_path / "acc", batch_size=2, grad_accum=2, **plain
    )
    assert len(big) == len(accumulated) == 1  # one real step, not one per micro-batch
    assert big[0].keys() == accumulated[0].keys() and big[0]
    for name, grad in big[0].items():
        torch.testing.assert_close(accumulated[0][name], grad, atol=1e-6, rtol=1e-4, msg=name)

    limit = _norm(big[0]) / 10
    clipped, _ = _step_gradients(
        monkeypatch, generation_examples, tmp_path / "clip", batch_size=4, mixed_precision="no", clip_grad=limit
    )
    assert _norm(clipped[0]) == pytest.approx(limit, rel=1e-3)
    for name, grad in big[0].items():  # scaled, not cut per element
        torch.testing.assert_close(clipped[0][name], grad / 10, atol=1e-7, rtol=1e-3, msg=name)

    steps, dtypes = _step_gradients(
        monkeypatch, generation_examples, tmp_path / "bf16", batch_size=4, mixed_precision="bf16"
    )
    assert dtypes == {torch.bfloat16} and len(steps) == 1
    assert all(torch.isfinite(g).all() for g in steps[0].values())


def test_precision_follows_the_setting_then_the_launcher_then_the_device(monkeypatch):
    """§9 item 33 (AMP): ``auto`` takes the launcher's fp16/bf16, else none on a CPU; an explicit setting wins."""
    cpu = torch.device("cpu")
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    assert resolve_precision("auto", cpu) == "no"
    assert resolve_precision("bf16", cpu) == "bf16"
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")
    assert resolve_precision("auto", cpu) == "fp16"
    assert resolve_precision("no", cpu) == "no"


def test_negative_prompt_is_applied_and_a_missing_safety_checker_is_tolerated():
    """§9 item 35: the negative prompt was never applied (a misspelled keyword) and a missing safety checker
    crashed; decided: none by default, and when set it reaches both pipelines as their negative embeddings (so the
    image changes), with no safety checker required."""
    assert DiffusionConfig().negative_prompt is None
    parts = tiny_random_sd(32)
    cfg = DiffusionConfig(name_or_path=TINY_RANDOM, steps=2, image_size=32)
    plain, negative = (
        StickerPainter(parts, cfg),
        StickerPainter(parts, cfg.model_copy(update={"negative_prompt": "ugly"})),
    )
    torch.testing.assert_close(plain.negative, encode_captions(parts, [""]))  # none: the empty prompt
    assert plain.text2img.safety_checker is None and plain.img2img.safety_checker is None
    torch.manual_seed(0)
    prompt = torch.randn(77, 32)
    a, b = plain.generate(prompt, seed=3), negative.generate(prompt, seed=3)
    assert a.size == (32, 32) and not np.array_equal(np.asarray(a), np.asarray(b))
    start = Image.new("RGB", (32, 32), (200, 40, 40))
    restyled = plain.restyle(start, prompt, seed=3), negative.restyle(start, prompt, seed=3)
    assert not np.array_equal(*(np.asarray(x) for x in restyled))


def test_the_demo_and_server_listen_locally_by_default(monkeypatch):
    """§9 item 35: the original demo opened a public share link; decided: local only. The demo and the server bind
    to the loopback address unless told otherwise, and the chat page loads nothing from outside."""
    import uvicorn

    from stickerconv import serve as serve_package
    from stickerconv.pipelines.demo import DemoOptions
    from stickerconv.pipelines.serving import DEFAULT_HOST, run_app

    assert DEFAULT_HOST == DemoOptions().host == "127.0.0.1"
    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: calls.append(kwargs))
    run_app(object())
    assert calls[0]["host"] == "127.0.0.1"
    ui = Path(serve_package.__file__).parent / "ui"
    for page in ui.iterdir():
        assert "http://" not in page.read_text() and "https://" not in page.read_text(), page.name
