"""Multimodal metrics (§6.6): hand-computed MM-Relevance for every sticker combination, CLIP score
only over predicted stickers, the real CLIP path on a tiny random model, the labelled proxy; and the
sticker fit (beyond the paper) on hand-checked cases of its table."""

from __future__ import annotations

import numpy as np
import pytest

from stickerconv.evaluate.multimodal.encoders import (
    ClipEncoder,
    EncoderError,
    StickerImage,
    StickerTextProxyEncoder,
    load_encoder,
)
from stickerconv.evaluate.multimodal.scores import (
    STICKER_FIT,
    MultimodalConfig,
    SampleRecordError,
    compute_terms,
    mm_relevance,
    optimised_mm_relevance,
    pred_text,
    read_samples,
    score_multimodal,
    sticker_fit,
    sticker_fit_table_id,
    sticker_frequency,
    user_state,
)

# Unit vectors with easy cosines: tt = 60, vv = 80, sim(t̂, v) = 28, sim(v̂, t) = 96,
# sim(v̂, t̂) = 80 (CLIP score), sim(v, t) = 93.6 (gold CLIP score).
VECTORS = {
    "hyp": (1.0, 0.0),
    "ref": (0.6, 0.8),
    "hyp.png": (0.8, 0.6),
    "ref.png": (0.28, 0.96),
    "other hyp": (0.6, 0.8),  # with hyp.png: CLIP score 96
    "opposite": (-1.0, 0.0),
}


class FakeEncoder:
    """Texts and images to fixed vectors, so every similarity is known by hand."""

    name = "fake"
    proxy = ""
    libraries: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.image_calls: list[list[str]] = []

    def signature_fields(self) -> dict[str, str]:
        return {"encoder": self.name, "proxy": "no"}

    def encode_texts(self, texts):
        return np.array([VECTORS[t] for t in texts], dtype=np.float32)

    def encode_images(self, images):
        self.image_calls.append([i.path for i in images])
        return np.array([VECTORS[i.path] for i in images], dtype=np.float32)


def sample(pred_image: bool, gold_image: bool, hyp: str = "hyp", ref: str = "ref", key: str = "pred_text_response"):
    return {
        "response_text": ref + ("<IMG>" if gold_image else ""),
        "response_image": ["ref.png"] if gold_image else [],
        key: hyp + ("<IMG>" if pred_image else ""),
        "pred_image": ["hyp.png"] if pred_image else [],
    }


BOTH, NEITHER, PRED_ONLY, GOLD_ONLY = sample(True, True), sample(False, False), sample(True, False), sample(False, True)


@pytest.mark.parametrize(
    ("record", "p", "r", "f", "opt"),
    [
        (BOTH, 70.0, 70.0, 70.0, (60 + 80 + 28 + 96) / 4),  # P = R = F = (tt + vv) / 2
        (NEITHER, 60.0, 60.0, 60.0, 60.0),  # all equal tt
        (PRED_ONLY, 30.0, 60.0, 40.0, (60 + 96) / 2),  # F = 2 tt / 3
        (GOLD_ONLY, 60.0, 30.0, 40.0, (60 + 28) / 2),
    ],
    ids=["both", "neither", "pred-only", "gold-only"],
)
def test_mm_relevance_by_hand_for_every_sticker_combination(record, p, r, f, opt) -> None:
    out = score_multimodal([record], FakeEncoder(), bootstrap=0)
    assert out["mm_relevance_p"].score == pytest.approx(p, abs=1e-4)
    assert out["mm_relevance_r"].score == pytest.approx(r, abs=1e-4)
    assert out["mm_relevance_f"].score == pytest.approx(f, abs=1e-4)
    assert out["mm_relevance_opt"].score == pytest.approx(opt, abs=1e-4)


def test_averages_over_samples_and_per_item_values() -> None:
    out = score_multimodal([BOTH, NEITHER, PRED_ONLY, GOLD_ONLY], FakeEncoder(), bootstrap=0)
    assert out["mm_relevance_p"].score == pytest.approx((70 + 60 + 30 + 60) / 4, abs=1e-4)
    assert out["mm_relevance_r"].score == pytest.approx((70 + 60 + 60 + 30) / 4, abs=1e-4)
    assert out["mm_relevance_f"].per_item == pytest.approx([70, 60, 40, 40], abs=1e-4)
    assert out["mm_relevance_f"].score == pytest.approx(52.5, abs=1e-4)
    assert out["mm_relevance_opt"].score == pytest.approx((66 + 60 + 78 + 44) / 4, abs=1e-4)
    assert out["mm_relevance_f"].n_items == 4
    assert out["mm_relevance_f"].signature["alias"] == "f-MMr"


def test_closed_forms_hold_for_random_vectors() -> None:
    rng = np.random.default_rng(3)

    class RandomEncoder(FakeEncoder):
        def encode_texts(self, texts):
            x = rng.normal(size=(len(texts), 8))
            return x / np.linalg.norm(x, axis=1, keepdims=True)

        def encode_images(self, images):
            return self.encode_texts(images)

    combos = [(True, True), (False, False), (True, False), (False, True)] * 5
    records = [
        {"pred_text_response": f"h{i}", "response_text": f"r{i}"}
        | {"pred_image": [f"h{i}.png"] if p else [], "response_image": [f"r{i}.png"] if g else []}
        for i, (p, g) in enumerate(combos)
    ]
    terms = compute_terms(records, RandomEncoder())
    p, r, f = mm_relevance(terms)
    both, neither = terms.has_pred & terms.has_gold, ~terms.has_pred & ~terms.has_gold
    one = terms.has_pred ^ terms.has_gold
    np.testing.assert_allclose(p[both], (terms.tt + terms.vv)[both] / 2)
    np.testing.assert_allclose(r[both], p[both])
    np.testing.assert_allclose(f[both], p[both])
    np.testing.assert_allclose(f[neither], terms.tt[neither])
    np.testing.assert_allclose(p[neither], terms.tt[neither])
    np.testing.assert_allclose(f[one], 2 * terms.tt[one] / 3)
    assert (terms.vv[~both] == 0).all()
    opt = optimised_mm_relevance(terms)
    np.testing.assert_allclose(opt[neither], terms.tt[neither])


def test_similarities_are_not_clipped() -> None:
    out = score_multimodal([sample(False, False, hyp="opposite", ref="hyp")], FakeEncoder(), bootstrap=0)
    assert out["mm_relevance_f"].score == pytest.approx(-100.0, abs=1e-4)
    out = score_multimodal([sample(True, False, hyp="opposite", ref="hyp")], FakeEncoder(), bootstrap=0)
    assert out["mm_relevance_f"].score == pytest.approx(-200 / 3, abs=1e-4)


def test_clip_score_averages_only_over_samples_with_a_predicted_sticker() -> None:
    records = [BOTH, sample(True, False, hyp="other hyp"), NEITHER, GOLD_ONLY]
    out = score_multimodal(records, FakeEncoder(), bootstrap=200)
    clip = out["clip_score"]
    assert clip.score == pytest.approx((80 + 96) / 2, abs=1e-4)
    assert clip.n_items == 2
    assert clip.per_item[2] is None and clip.per_item[3] is None
    assert clip.signature["of"] == "has-sticker"
    gt = out["clip_score_gt"]
    assert gt.score == pytest.approx(93.6, abs=1e-4) and gt.n_items == 2
    low, high = clip.ci
    assert 80 - 1e-4 <= low <= clip.score <= high <= 96 + 1e-4


def test_text_only_system_has_frequency_zero_and_no_clip_score() -> None:
    out = score_multimodal([NEITHER, GOLD_ONLY], FakeEncoder(), bootstrap=0)
    assert "clip_score" not in out
    assert out["clip_score_gt"].n_items == 1
    assert out["sticker_frequency"].score == 0.0
    assert out["sticker_frequency_gt"].score == 0.5
    assert out["sticker_frequency"].n_items == 2


def test_original_filter_also_drops_non_positive_clip_scores() -> None:
    negative = sample(True, False, hyp="opposite")  # sim(v̂, t̂) = -80
    out = score_multimodal([BOTH, negative], FakeEncoder(), bootstrap=0, config=MultimodalConfig(True))
    assert out["clip_score"].score == pytest.approx(80.0, abs=1e-4) and out["clip_score"].n_items == 1
    assert out["clip_score"].signature["of"] == "has-sticker,>0"
    plain = score_multimodal([BOTH, negative], FakeEncoder(), bootstrap=0)
    assert plain["clip_score"].score == pytest.approx(0.0, abs=1e-4)


def test_each_distinct_sticker_is_encoded_once() -> None:
    encoder = FakeEncoder()
    score_multimodal([BOTH, BOTH, PRED_ONLY], encoder, bootstrap=0)
    assert sorted(p for call in encoder.image_calls for p in call) == ["hyp.png", "ref.png"]


def test_frequency_counts_predicted_and_gold_stickers() -> None:
    out = sticker_frequency([BOTH, NEITHER, PRED_ONLY, GOLD_ONLY, NEITHER], bootstrap=0)
    assert out["sticker_frequency"].score == pytest.approx(0.4)
    assert out["sticker_frequency_gt"].score == pytest.approx(0.4)
    assert out["sticker_frequency"].signature["samples"] == "5"


def test_reads_the_misspelled_prediction_key_and_rejects_bad_records() -> None:
    misspelled = sample(False, False, key="pred_text_reponse")
    assert pred_text(misspelled, 0) == "hyp"
    out = score_multimodal([misspelled], FakeEncoder(), bootstrap=0)
    assert out["mm_relevance_f"].score == pytest.approx(60.0, abs=1e-4)
    with pytest.raises(SampleRecordError, match="sample 1: field 'pred_text_response': missing"):
        score_multimodal([BOTH, {"response_text": "ref"}], FakeEncoder(), bootstrap=0)
    with pytest.raises(SampleRecordError, match="at most one sticker"):
        score_multimodal([BOTH | {"pred_image": ["hyp.png", "hyp.png"]}], FakeEncoder(), bootstrap=0)


def test_read_samples_takes_a_json_array_or_json_lines(tmp_path) -> None:
    import json

    (tmp_path / "a.json").write_text(json.dumps([BOTH, NEITHER]))
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps(r) for r in (BOTH, NEITHER)) + "\n")
    assert read_samples(tmp_path / "a.json") == read_samples(tmp_path / "b.jsonl") == [BOTH, NEITHER]


# ---------------------------------------------------------------------------------------- sticker fit
def fit_sample(pred: str | None, *, user: str | None = None, query: str = "ok", gold: str | None = None) -> dict:
    """A sample whose user sent a sticker labelled ``user`` (or none), answered with a ``pred`` sticker."""

    def sticker(label: str | None, name: str) -> dict | None:
        return None if label is None else {"image": f"{name}.png", "description": "", "origin_anno": label}

    return {
        "query": query,
        "input_image_metadata": sticker(user, "user"),
        "response_text": "gold",
        "response_image": [] if gold is None else ["gold.png"],
        "response_image_metadata": sticker(gold, "gold"),
        "pred_text_response": "pred",
        "pred_image": [] if pred is None else ["pred.png"],
        "pred_image_metadata": sticker(pred, "pred"),
    }


@pytest.mark.parametrize(
    ("user", "pred", "fits"),
    [
        ("Sadness", "Happiness", True),  # comfort: warmth
        ("Sadness", "Neutral", True),  # comfort: calm presence
        ("Sadness", "Sadness", False),  # crying along echoes the pain
        ("Fear", "Neutral", True),
        ("Anger", "Neutral", True),  # de-escalation
        ("Anger", "Happiness", False),  # cheerful reads as dismissive
        ("Anger", "Anger", False),
        ("Disgust", "Happiness", False),
        ("Happiness", "Surprise", True),  # share the amazement
        ("Happiness", "Neutral", False),  # flat
        ("Surprise", "Neutral", True),
        ("Neutral", "Fear", False),
    ],
)
def test_sticker_fit_follows_the_table_on_the_users_sticker(user, pred, fits) -> None:
    out = sticker_fit([fit_sample(pred, user=user)], bootstrap=0)
    assert out["sticker_fit"].score == (1.0 if fits else 0.0)


@pytest.mark.parametrize(
    ("query", "state", "fitting", "unfitting"),
    [
        ("I failed my exam again", "negative message", "Happiness", "Surprise"),  # VADER compound -0.51
        ("We won the championship!", "positive message", "Surprise", "Neutral"),  # +0.78
        ("ok", "neutral message", "Neutral", "Sadness"),  # +0.30 is not yet positive: 0.296
    ],
)
def test_without_a_user_sticker_the_message_polarity_is_the_state(query, state, fitting, unfitting) -> None:
    assert user_state(fit_sample(None, query=query), 0) == state
    out = sticker_fit([fit_sample(fitting, query=query), fit_sample(unfitting, query=query)], bootstrap=0)
    assert out["sticker_fit"].per_item == [1.0, 0.0]
    # the user's sticker, when there is one, outranks the message: a Sadness sticker on a joyful message
    assert user_state(fit_sample(None, user="Sadness", query="We won the championship!"), 0) == "Sadness"


def test_sticker_fit_averages_over_labelled_stickers_with_an_interval() -> None:
    unlabelled = fit_sample("Happiness", user="Sadness") | {"pred_image_metadata": {"description": "no label"}}
    records = [
        fit_sample("Happiness", user="Sadness", gold="Neutral"),  # fits; gold fits
        fit_sample("Sadness", user="Sadness", gold="Sadness"),  # does not; gold does not
        fit_sample("Neutral", user="Anger"),  # fits; no gold sticker
        fit_sample(None, user="Fear", gold="Happiness"),  # no prediction: skipped; gold fits
        unlabelled,  # a sticker without a label: skipped, counted
        fit_sample("Surprise", user="Happiness"),  # fits
    ]
    out = sticker_fit(records, bootstrap=200, seed=1)
    fit = out["sticker_fit"]
    assert fit.score == pytest.approx(3 / 4) and fit.n_items == 4
    assert fit.per_item == [1.0, 0.0, 1.0, None, None, 1.0]
    assert 0.0 <= fit.ci[0] <= fit.score <= fit.ci[1] <= 1.0 and fit.ci[0] < fit.ci[1]
    assert fit.signature["unlabelled"] == "1" and fit.signature["side"] == "pred"
    assert fit.signature["table"] == sticker_fit_table_id() and fit.signature["table"].startswith("comfort-v1:")
    assert fit.signature["state"] == "user-sticker-label,else-vader-query:0.3"
    assert fit.signature["samples"] == "6" and "vaderSentiment-" in fit.signature["version"]
    gold = out["sticker_fit_gt"]
    assert gold.score == pytest.approx(2 / 3) and gold.n_items == 3 and gold.signature["unlabelled"] == "0"


def test_a_text_only_system_has_no_sticker_fit_and_a_missing_message_is_named() -> None:
    out = sticker_fit([fit_sample(None, user="Sadness", gold="Neutral")], bootstrap=0)
    assert "sticker_fit" not in out and out["sticker_fit_gt"].score == 1.0
    assert sticker_fit([fit_sample(None) | {"query": None}], bootstrap=0) == {}  # no sticker: no message needed
    with pytest.raises(SampleRecordError, match="sample 1: field 'query'"):
        sticker_fit([fit_sample("Neutral"), fit_sample("Neutral") | {"query": None}], bootstrap=0)


def test_the_fit_table_covers_every_state_and_never_rewards_a_negative_sticker() -> None:
    labels = {"Anger", "Disgust", "Fear", "Happiness", "Neutral", "Sadness", "Surprise"}
    assert set(STICKER_FIT) == labels | {"negative message", "positive message", "neutral message"}
    assert all(fitting and fitting <= {"Happiness", "Neutral", "Surprise"} for fitting in STICKER_FIT.values())


# ---------------------------------------------------------------------------------------- proxy
@pytest.fixture(scope="module")
def proxy(embedder) -> StickerTextProxyEncoder:
    return StickerTextProxyEncoder(embedder)


def test_proxy_is_labelled_in_every_name_and_signature(proxy) -> None:
    meta = {"description": "A crying face.", "emotion": "sadness and grief"}
    record = {
        "response_text": "I am so sorry.<IMG>",
        "response_image": ["images/noto/1f622.png"],
        "response_image_metadata": meta,
        "pred_text_response": "That is so sad.<IMG>",
        "pred_image": ["images/noto/1f622.png"],
        "pred_image_metadata": meta,
    }
    out = score_multimodal([record, NEITHER | {"response_text": "fine", "pred_text_response": "ok"}], proxy, 0)
    multimodal = [name for name in out if not name.startswith("sticker_frequency")]
    plain = ("mm_relevance_p", "mm_relevance_r", "mm_relevance_f", "mm_relevance_opt", "clip_score", "clip_score_gt")
    assert set(multimodal) == {f"{m}_proxy" for m in plain}
    for name in multimodal:
        assert out[name].signature["proxy"] == "minilm over sticker text, not CLIP"
        assert out[name].signature["encoder"] == "proxy:minilm-onnx-int8"
        assert "proxy" in out[name].signature_text
    # identical stickers: vv = 100 on the proxy too
    terms = compute_terms([record], proxy)
    assert terms.vv[0] == pytest.approx(100.0, abs=1e-3)


def test_proxy_looks_stickers_up_in_a_library_or_says_what_is_missing(embedder, small_pack) -> None:
    from stickerconv.stickers.library import StickerLibrary

    library = StickerLibrary.load(small_pack)
    first = library.stickers[0]
    bare = StickerImage(first.image)
    with pytest.raises(EncoderError, match="no description or emotion"):
        StickerTextProxyEncoder(embedder).encode_images([bare])
    with_library = StickerTextProxyEncoder(embedder, library=library)
    from_library = with_library.encode_images([bare])
    from_metadata = with_library.encode_images([StickerImage(first.image, first.description, first.emotion)])
    assert from_library.shape == (1, 384)
    np.testing.assert_allclose(from_library, from_metadata, atol=1e-6)


def test_load_encoder_names_the_choices() -> None:
    with pytest.raises(EncoderError, match="unknown encoder 'siglip'; use 'clip'"):
        load_encoder("siglip")


# ---------------------------------------------------------------------------------------- tiny CLIP
@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A randomly initialised CLIP (hidden 32, 32 px, patch 8) with a byte-level tokenizer built
    here (no merges), saved as a model folder: the real loading path, never a download."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    folder = tmp_path_factory.mktemp("clip") / "tiny-clip"
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for char in sorted(ByteLevel.alphabet()):
            vocab[char + suffix] = len(vocab)
    layers = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4}
    config = CLIPConfig(
        text_config=layers
        | {"vocab_size": len(vocab), "max_position_embeddings": 77, "bos_token_id": 0, "eos_token_id": 1}
        | {"pad_token_id": 1},
        vision_config=layers | {"image_size": 32, "patch_size": 8},
        projection_dim=16,
    )
    model = CLIPModel(config).eval()
    model.save_pretrained(folder)
    CLIPTokenizer(vocab=vocab, merges=[]).save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    images = folder.parent / "images"
    images.mkdir()
    from PIL import Image

    for name, colour in (("red.png", (255, 0, 0, 255)), ("ghost.png", (0, 0, 255, 60)), ("big.png", (0, 200, 0, 255))):
        Image.new("RGBA", (48 if name == "big.png" else 40, 40), colour).save(images / name)
    return folder, images, model


def test_tiny_clip_shapes_normalisation_and_the_models_own_embeddings(tiny_clip) -> None:
    import torch
    from transformers import AutoTokenizer

    folder, images, model = tiny_clip
    encoder = load_encoder(f"clip:{folder}", image_root=images)
    assert isinstance(encoder, ClipEncoder)
    assert encoder.name == "clip:tiny-clip" and encoder.dim == 16 and encoder.max_tokens == 77
    texts = encoder.encode_texts(["I am so sorry.", "Great news!", "ok"])  # (3, 16)
    assert texts.shape == (3, 16) and texts.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1.0, atol=1e-5)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    inputs = tokenizer(["Great news!"], return_tensors="pt")
    with torch.inference_mode():
        expected = model(**inputs, pixel_values=torch.zeros(1, 3, 32, 32)).text_embeds[0].numpy()
    np.testing.assert_allclose(texts[1], expected, atol=1e-5)
    pictures = encoder.encode_images([StickerImage("red.png"), StickerImage("ghost.png"), StickerImage("big.png")])
    assert pictures.shape == (3, 16)
    np.testing.assert_allclose(np.linalg.norm(pictures, axis=1), 1.0, atol=1e-5)


def test_tiny_clip_truncates_text_to_77_tokens(tiny_clip) -> None:
    folder, images, _ = tiny_clip
    encoder = ClipEncoder(str(folder), image_root=images)
    long = "a" * 200  # one token per character with this tokenizer
    same_prefix = encoder.encode_texts([long, long + " and then something else entirely"])
    np.testing.assert_allclose(same_prefix[0], same_prefix[1], atol=1e-6)
    short = encoder.encode_texts(["a" * 20, "a" * 20 + " b"])
    assert not np.allclose(short[0], short[1], atol=1e-4)


def test_tiny_clip_scores_samples_without_a_proxy_label(tiny_clip) -> None:
    folder, images, _ = tiny_clip
    encoder = ClipEncoder(str(folder), image_root=images)
    records = [
        {"response_text": "so sad<IMG>", "response_image": ["red.png"], "pred_text_response": "sad<IMG>"}
        | {"pred_image": ["ghost.png"]},
        {"response_text": "yay", "response_image": [], "pred_text_response": "yay", "pred_image": []},
    ]
    out = score_multimodal(records, encoder, bootstrap=0)
    assert "clip_score" in out and "mm_relevance_f" in out
    assert out["mm_relevance_f"].signature["encoder"] == "clip:tiny-clip"
    assert out["mm_relevance_f"].signature["proxy"] == "no"
    assert out["mm_relevance_f"].signature["trunc"] == "77"
    assert "transformers-" in out["clip_score"].signature["version"]
    assert out["mm_relevance_f"].per_item[1] == pytest.approx(100.0, abs=1e-3)  # identical text, no stickers


def test_clip_images_resolve_against_the_image_root(tiny_clip, tmp_path) -> None:
    folder, images, _ = tiny_clip
    with pytest.raises(EncoderError, match="no image root is set"):
        ClipEncoder(str(folder)).encode_images([StickerImage("red.png")])
    with pytest.raises(EncoderError, match="does not exist"):
        ClipEncoder(str(folder), image_root=tmp_path).encode_images([StickerImage("red.png")])
    absolute = ClipEncoder(str(folder)).encode_images([StickerImage(str(images / "red.png"))])
    rooted = ClipEncoder(str(folder), image_root=images).encode_images([StickerImage("red.png")])
    np.testing.assert_allclose(absolute, rooted, atol=1e-6)


def test_missing_clip_model_says_how_to_get_it(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EncoderError, match="No CLIP weights install offline"):
        ClipEncoder(str(tmp_path / "no-such-clip"))
