"""The PEGS send decision (pegs/send.py): the send score, the fitted threshold, its storage and modes, the
`pegs train` send stage and `pegs fit-send`; and the issue's pin on a trained checkpoint's served chat."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from stickerconv.cli import app
from stickerconv.data.samples import opening, render_samples
from stickerconv.evaluate.quality.metrics import label_polarity, message_polarity
from stickerconv.pegs.config import SendConfig, SendFit
from stickerconv.pegs.model import CONFIG_FILE, PegsModel
from stickerconv.pegs.send import fit_threshold, fitting_prompts, gold_reply, gold_sends
from stickerconv.pegs.sequence import sample_example
from stickerconv.responders.pegs import PegsResponder
from stickerconv.schema import Conversation, Sticker, Turn
from stickerconv.stickers.library import StickerLibrary
from stickerconv.text import ends_mid_sentence, has_repeat, readable

from helpers.pegs import boost_token, dialogue_samples, tiny_model


def _f1(pred: np.ndarray, gold: np.ndarray) -> float:
    hits = (pred & gold).sum()
    return 2 * hits / (pred.sum() + gold.sum())


def test_share_target_matches_the_gold_share_and_f1_target_maximises_f1():
    rng = np.random.default_rng(0)
    gold = rng.random(200) < 0.3
    scores = rng.normal(size=200) + 0.8 * gold  # weakly informative, as a small model's are
    fit = fit_threshold(scores, gold, "share")
    assert fit.gold_share == pytest.approx(gold.mean())
    assert fit.share == pytest.approx(gold.mean())  # distinct scores: the share is met exactly
    assert fit.share == pytest.approx((scores > fit.threshold).mean())
    assert fit.f1 == pytest.approx(_f1(scores > fit.threshold, gold))
    best = fit_threshold(scores, gold, "f1")
    brute = max(_f1(scores > c, gold) for c in np.concatenate([[scores.min() - 1], scores]))
    assert best.f1 == pytest.approx(brute) and best.f1 >= fit.f1
    assert (best.precision, best.recall) == pytest.approx(
        ((scores > best.threshold) & gold).sum() / np.array([(scores > best.threshold).sum(), gold.sum()])
    )
    # the cut lies midway between neighbouring scores, never on one
    assert not np.isclose(scores, fit.threshold).any()


def test_fit_threshold_edge_cases():
    never = fit_threshold(np.array([0.5, 1.0, 2.0]), np.array([False, False, False]))
    assert never.share == 0.0 and never.threshold >= 2.0
    always = fit_threshold(np.array([0.5, 1.0, 2.0]), np.array([True, True, True]))
    assert always.share == 1.0 and always.threshold < 0.5
    tied = fit_threshold(np.array([1.0, 1.0, 1.0, 1.0]), np.array([True, False, False, False]))
    # equal scores cannot be split: the nearest achievable share to the gold 0.25 is none
    assert tied.share == 0.0 and tied.threshold >= 1.0
    with pytest.raises(ValueError, match="one score per gold decision"):
        fit_threshold(np.array([1.0, 2.0]), np.array([True]))
    with pytest.raises(ValueError, match="finite"):
        fit_threshold(np.array([1.0, np.inf]), np.array([True, False]))
    with pytest.raises(ValueError, match="choose share or f1"):
        fit_threshold(np.array([1.0, 2.0]), np.array([True, False]), "recall")  # type: ignore[arg-type]


@pytest.mark.parametrize("style", ["v1.5", "v0"])
def test_send_score_is_the_log_ratio_of_the_block_and_eos_after_the_reply(small_pack, style):
    """The score is read where training puts the block: after the reply text and the style's separator."""
    model = tiny_model(style=style).eval()
    sample = dialogue_samples(StickerLibrary.load(small_pack), 1)[1]  # turn 2: the gold reply has a sticker
    prompt = sample_example(sample, small_pack, style, model.config.system_prompt, with_response=False)
    text_ids = model.tokenizer("Sending you a hug!", add_special_tokens=False).input_ids
    with torch.no_grad():
        embeds = model.embed(model.collator()([prompt]))  # (1, T, H)
        end = model.read_reply(embeds, text_ids)
        sep = model.separator_ids
        ids = torch.tensor([[*text_ids, *sep, *model.img_ids]])
        full = torch.cat([embeds, model.llm.get_input_embeddings()(ids)], dim=1)
        out = model.llm(inputs_embeds=full, output_hidden_states=True)
    t, n = embeds.shape[1], len(text_ids)
    logp = F.log_softmax(out.logits[0].float(), dim=-1)  # (T + L, V): row i predicts position i + 1
    send = sum(logp[t + n - 1 + j, tok] for j, tok in enumerate([*sep, model.img_ids[0]]))
    assert end.send_score == pytest.approx(float(send - logp[t + n - 1, model.tokenizer.eos_token_id]), abs=1e-4)
    assert torch.allclose(end.block, out.hidden_states[-1][0, t + n + len(sep) :], atol=1e-5)
    assert len(sep) == (1 if style == "v0" else 0)


def test_gold_reply_is_the_text_before_the_block(images_conversation):
    for style, expected in (("v1.5", "Sending you a hug!"), ("v0", "Sending you a hug!")):
        samples = render_samples(images_conversation, style, lambda s: s.image)
        assert gold_reply(samples[1], style) == expected
        assert gold_reply(samples[0], style) == "I hear you."
        assert gold_sends(samples).tolist() == [False, True]


def test_later_turns_are_also_fitted_as_a_new_chat_at_half_weight(images_conversation):
    samples = render_samples(images_conversation, "v1.5", lambda s: s.image)
    prompts, gold, weights = fitting_prompts(samples, "v1.5")
    assert prompts == [samples[0], samples[1], opening(samples[1], "v1.5")]
    assert gold.tolist() == [False, True, True] and weights.tolist() == [1.0, 0.5, 0.5]
    fit = fit_threshold(np.array([0.0, 1.0, 3.0]), gold, "share", weights)
    assert fit.turns == 2 and fit.gold_share == 0.5  # each turn counts once
    assert fit.share == 0.5 and 0.0 < fit.threshold < 1.0  # both readings of the sticker turn are over it
    assert fit.precision == 1.0 and fit.recall == 1.0
    with pytest.raises(ValueError, match="weights must be positive"):
        fit_threshold(np.array([0.0, 1.0]), np.array([False, True]), "share", np.array([1.0, 0.0]))


@pytest.fixture
def images_conversation() -> Conversation:
    hug = Sticker(image="s1.png", description="a hug")
    return Conversation(
        conversation=[
            Turn(turn=1, user_message="I feel sad.", system_message="I hear you."),
            Turn(turn=2, user_message="Long day.", system_message="Sending you a hug!", system_sticker=hug),
        ],
        user_persona="",
        user_status="",
    )


def _with_fit(model: PegsModel, threshold: float, decision: str = "threshold") -> PegsModel:
    fit = SendFit(
        threshold=threshold, target="share", turns=10, gold_share=0.4, share=0.4, precision=0.5, recall=0.5, f1=0.5
    )
    model.config = model.config.model_copy(update={"send": SendConfig(decision=decision, fit=fit)})  # type: ignore[arg-type]
    return model


def test_threshold_decides_greedy_stays_a_mode_and_an_unfitted_model_is_greedy(small_pack):
    model = tiny_model().eval()
    sample = dialogue_samples(StickerLibrary.load(small_pack), 1)[1]
    prompt = sample_example(sample, small_pack, "v1.5", model.config.system_prompt, with_response=False)
    boost_token(model, prompt, model.img_ids[0], -100.0)  # greedy decoding never opens the block here
    plain = model.generate(prompt, max_new_tokens=6)
    assert model.send_threshold is None and not plain.emitted and not plain.send_sticker  # unfitted: greedy
    assert plain.text == readable(plain.raw_text)
    below, above = plain.send_score - 0.5, plain.send_score + 0.5
    sent = _with_fit(model, below).generate(prompt, max_new_tokens=6)
    assert sent.send_sticker and not sent.emitted and sent.send_score == pytest.approx(plain.send_score)
    assert sent.ret_embedding is not None and sent.gen_embeds is not None
    assert sent.token_ids[-len(model.img_ids) :] == model.img_ids  # the block follows the text when sent
    held = _with_fit(model, above).generate(prompt, max_new_tokens=6)
    assert not held.send_sticker and held.ret_embedding is None
    assert not _with_fit(model, below, "greedy").generate(prompt, max_new_tokens=6).send_sticker  # greedy: no [IMG1]
    boost_token(model, prompt, model.img_ids[0], 100.0)  # now greedy decoding opens the block at once
    greedy = _with_fit(model, 1e9, "greedy").generate(prompt, max_new_tokens=6)
    assert greedy.emitted and greedy.send_sticker and greedy.text == ""
    assert not _with_fit(model, 1e9).generate(prompt, max_new_tokens=6).send_sticker  # the threshold overrules it


def test_the_fit_round_trips_and_an_older_checkpoint_loads_greedy(tmp_path, small_pack, caplog):
    model = _with_fit(tiny_model(), -1.25)
    again = PegsModel.from_pretrained(model.save_pretrained(tmp_path / "fitted"))
    assert again.config.send == model.config.send and again.send_threshold == -1.25
    old = tmp_path / "old"
    tiny_model().save_pretrained(old)
    config = json.loads((old / CONFIG_FILE).read_text())
    del config["send"], config["decoding"]  # a checkpoint written before the send decision existed
    (old / CONFIG_FILE).write_text(json.dumps(config))
    loaded = PegsModel.from_pretrained(old)
    assert loaded.config.send.fit is None and loaded.send_threshold is None  # greedy, as it was trained
    library = StickerLibrary.load(small_pack)
    with caplog.at_level(logging.WARNING, logger="stickerconv.responders.pegs"):
        responder = PegsResponder(loaded, StickerLibrary(library.root, library.stickers[:8]), "ret")
    assert any("no fitted send threshold" in r.getMessage() for r in caplog.records)
    assert responder.describe()["send_decision"] == "greedy"
    fitted = PegsResponder(again, StickerLibrary(library.root, library.stickers[:8]), "ret")
    assert fitted.describe()["send_decision"] == "threshold -1.2500"


def test_pegs_train_send_stage_and_fit_send(small_pack, tmp_path):
    library = StickerLibrary.load(small_pack)
    samples = tmp_path / "samples.json"
    records = dialogue_samples(library, 4)  # 12 turns, 4 with a gold sticker
    samples.write_text(json.dumps([s.model_dump(mode="json") for s in records]))
    runner = CliRunner()
    args = ["pegs", "train", "--preset", "tiny", "--stickers", str(library.root), "--out", str(tmp_path / "run")]
    args += ["--data", str(samples), "--stages", "send", "--send-turns", "9"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    record = SendFit.model_validate_json((tmp_path / "run" / "01-send" / "send.json").read_text())
    # later turns are read twice at half weight each, so the share is met to half a turn
    assert record.turns == 9 and abs(record.share - record.gold_share) <= 0.5 / 9 + 1e-9
    text = " ".join(result.output.split())
    assert f"sends on {record.share:.1%} of 9 training turns (gold share {record.gold_share:.1%})" in text, text
    assert "fitted to share" in text and "training when-to-send F1" in text
    final = PegsModel.from_pretrained(tmp_path / "run" / "final")
    assert final.config.send.fit == record and final.send_threshold == record.threshold
    rerun = runner.invoke(app, args)
    assert rerun.exit_code == 0 and "send: reusing the finished stage" in " ".join(rerun.output.split())
    other = runner.invoke(app, [*args, "--send-fit", "f1"])  # another target is fitted again, not reused
    assert other.exit_code == 0 and "fitted to share on 9 turns; fitting again" in " ".join(other.output.split())
    assert PegsModel.from_pretrained(tmp_path / "run" / "final").config.send.fit.target == "f1"

    checkpoint = tmp_path / "older"
    tiny_model().save_pretrained(checkpoint)
    refit = ["pegs", "fit-send", "--checkpoint", str(checkpoint), "--data", str(samples), "--stickers"]
    result = runner.invoke(app, [*refit, str(library.root), "--target", "f1", "--turns", "12"])
    assert result.exit_code == 0, result.output
    fit = PegsModel.from_pretrained(checkpoint).config.send.fit
    assert fit is not None and fit.target == "f1" and fit.turns == 12 and fit.gold_share == pytest.approx(4 / 12)
    bad = runner.invoke(app, [*refit, str(library.root), "--target", "recall"])
    assert bad.exit_code != 0 and "choose from share, f1" in str(bad.exception)


# ----- the pin: the demo's served chat on a trained `small` checkpoint -----
#
# Training dialogues and fresh chats are written for this test (no dataset's text). A training message is an
# event and a feeling; the assistant sends a sticker on 2 of every 5 turns (the index's top hit for the message,
# as the simulator's sticker tool picks one), so the gold assistant sticker share is 40 %.

NEGATIVE_EVENTS = [
    "my grandmother passed away last night",
    "I got fired today without any warning",
    "my boyfriend broke up with me over text",
    "I failed the final exam I studied weeks for",
    "someone keyed my car in the parking lot",
    "the biopsy results come tomorrow",
    "my roommate ate my food again and lied about it",
    "I moved to a city where I know nobody",
    "the landlord is raising the rent again",
    "my dog is sick and the vet bills are piling up",
    "my boss yelled at me in front of the whole team",
    "I haven't slept properly in a week",
    "my best friend forgot my birthday",
    "my flight got cancelled and I'm stuck at the airport",
    "a coworker took credit for my project",
    "there was a huge spider in my bed",
    "the concert I waited months for was cancelled",
    "my parents keep fighting every night",
    "I lost my wallet on the bus",
    "the fridge broke and all the food went rotten",
]
POSITIVE_EVENTS = [
    "I just got accepted into my dream university",
    "we're having a baby",
    "I finished my first marathon today",
    "my sister surprised me with tickets to Paris",
    "I got the promotion I worked toward for years",
    "our team won the regional championship",
    "I adopted the sweetest puppy",
    "my painting was chosen for the city exhibition",
    "I passed my driving test on the first try",
    "we just bought our first house",
    "my grandpa recovered fully from his surgery",
    "I spent the whole day at the beach with friends",
    "my startup landed its first big customer",
    "I baked bread for the first time and it came out great",
    "a former student wrote me a thank-you letter",
    "my article got published in a magazine",
    "I finally paid off my student loans",
    "my garden produced its first tomatoes",
    "my best friend is coming to visit next week",
    "I got a raise at work",
]
NEUTRAL_EVENTS = [
    "I'm moving to a new apartment next week",
    "today was an ordinary day at the office",
    "I started reading a book about history",
    "I'm thinking about changing my haircut",
    "we have a team meeting on Monday",
    "I bought a new desk lamp",
    "I'm taking the bus to work this week",
    "I'm cooking pasta for dinner",
]
FEELINGS = {
    "negative": ["I'm so upset.", "it really hurts.", "I'm scared and angry.", "I'm devastated.", "I feel terrible."],
    "positive": ["I'm so happy!", "I'm so glad!", "life is good!", "I can't stop smiling!", "I'm delighted!"],
}
REPLIES = {
    "negative": [
        "I'm so sorry you're going through this. I'm here for you.",
        "That sounds really hard. Do you want to talk about it?",
        "Oh no, that must hurt a lot. Please take care of yourself.",
    ],
    "positive": [
        "That's wonderful news! I'm so happy for you.",
        "Congratulations! You must be thrilled.",
        "How amazing! You really deserve it.",
    ],
    "neutral": ["Thanks for telling me. How do you feel about it?", "I see. What are you planning next?"],
}
FRESH_CHATS = [
    "My cat died this morning and the house feels empty and sad.",
    "I just won a scholarship for next year, I'm so happy!",
    "Nobody came to my birthday party and I feel so lonely.",
    "I got engaged last night, I'm so excited!",
    "My laptop crashed and I lost my whole thesis, I want to cry.",
    "The doctor says I'm healthy again, what a relief!",
    "I'm scared of walking home alone in the dark.",
    "My son took his first steps today, I'm so proud!",
    "I was robbed on my way home and I'm terrified.",
    "We finally paid off all our debt, I feel wonderful!",
    "My best friend betrayed me and I'm furious.",
    "I got a perfect score on my chemistry exam, yay!",
    "I'm heartbroken, my parents are getting divorced.",
    "Our garden is blooming and it looks beautiful.",
    "I'm so angry, the neighbours keep blasting music at night.",
    "I reunited with my childhood friend and it was wonderful.",
    "I missed my train and I'm panicking about the interview.",
    "My band played our first gig and the crowd loved it!",
    "I feel worthless after being rejected from every job.",
    "I got a puppy for my birthday, best gift ever!",
    "My flight was delayed six hours, I'm exhausted and annoyed.",
    "I finally learned to swim, I'm thrilled!",
    "My dad is in hospital after a heart attack and I'm so worried.",
    "My students threw me a party and I feel so loved.",
    "My grandmother's ring was stolen and I'm devastated.",
    "I won the cooking contest at work, I'm so happy!",
    "My car broke down on the highway and I'm so frustrated.",
    "My daughter graduated today and I'm so proud and happy!",
    "We celebrated our anniversary and it was perfect.",
    "I spilled coffee on my new dress and I'm so upset.",
]


def training_dialogues(index) -> list:
    """One-turn dialogues: every event with two feelings (one for a neutral event), a sticker on 2 turns of 5."""
    messages = []
    for events, polarity in ((NEGATIVE_EVENTS, "negative"), (POSITIVE_EVENTS, "positive")):
        feelings = FEELINGS[polarity]
        for i, event in enumerate(events):
            for j in range(2):
                messages.append((f"{event[0].upper()}{event[1:]}, {feelings[(i + j) % len(feelings)]}", polarity))
    messages += [(f"{event[0].upper()}{event[1:]}. Just letting you know.", "neutral") for event in NEUTRAL_EVENTS]
    samples = []
    for i, (message, polarity) in enumerate(messages):
        sticker = index.search(message, k=1)[0].sticker if i % 5 in (0, 2) else None
        reply = REPLIES[polarity][i % len(REPLIES[polarity])]
        turn = Turn(turn=1, user_message=message, system_message=reply, system_sticker=sticker)
        conv = Conversation(conversation=[turn], user_persona="", user_status="")
        samples += render_samples(conv, "v1.5", lambda s: s.image)
    return samples


@pytest.mark.slow
def test_served_chat_sends_at_the_training_share_with_stickers_that_match_the_mood(small_index, tmp_path):
    """The issue's done-means on a `small` checkpoint trained as `pegs train` does (vision, distill, send; the
    joint stage is left out for time), served as `stickerconv demo` serves it, 30 fresh single-message chats."""
    from fastapi.testclient import TestClient

    from stickerconv.responders import build_responder
    from stickerconv.serve import ServeSettings, create_app

    library = small_index.library
    samples = training_dialogues(small_index)
    gold_share = float(gold_sends(samples).mean())
    data = tmp_path / "train.json"
    data.write_text(json.dumps([s.model_dump(mode="json") for s in samples]))
    args = ["pegs", "train", "--preset", "small", "--stickers", str(library.root), "--out", str(tmp_path / "run")]
    args += ["--data", str(data), "--stages", "vision,distill,send", "--vision-steps", "60"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    responder = build_responder("pegs-ret", index=small_index, checkpoint=tmp_path / "run" / "final")
    assert responder.model.send_threshold is not None  # the served model decides by its fitted threshold
    sent, agreeing = 0, 0
    with TestClient(create_app(responder, small_index, ServeSettings())) as client:
        for message in FRESH_CHATS:
            body = {"model": "stickerconv-pegs-ret", "messages": [{"role": "user", "content": message}]}
            answer = client.post("/v1/chat/completions", json=body)
            assert answer.status_code == 200, answer.text
            reply = answer.json()["choices"][0]["message"]
            text = reply.get("content") or ""
            assert text.strip(), message  # every chat gets words, sticker or not
            assert not ends_mid_sentence(text) and not has_repeat(text), (message, text)
            calls = reply.get("tool_calls") or []
            if calls:
                sticker = json.loads(calls[0]["function"]["arguments"])
                sent += 1
                agreeing += label_polarity(sticker["label"]) == message_polarity(message)
    share = sent / len(FRESH_CHATS)
    logging.getLogger(__name__).info(
        "served chat: %d of %d chats with a sticker (%.0f%%, training %.0f%%), %d of them agreeing in polarity",
        sent,
        len(FRESH_CHATS),
        100 * share,
        100 * gold_share,
        agreeing,
    )
    assert abs(share - gold_share) <= 0.15, (sent, len(FRESH_CHATS), gold_share)
    assert sent > 0 and agreeing / sent >= 0.70, (agreeing, sent)


def test_a_batch_of_replies_is_each_prompt_alone(small_pack):
    """Left padding changes no reply: the send stage decodes 8 prompts a batch, the served chat one at a time."""
    model = tiny_model().eval()
    library = StickerLibrary.load(small_pack)
    samples = dialogue_samples(library, 2)  # prompts of different lengths, with and without user stickers
    prompts = [sample_example(s, small_pack, "v1.5", model.config.system_prompt, with_response=False) for s in samples]
    batched = model.draft(prompts, max_new_tokens=12)
    for prompt, together in zip(prompts, batched, strict=True):
        (alone,) = model.draft([prompt], max_new_tokens=12)
        assert together.raw_text == alone.raw_text and together.text_ids == alone.text_ids
        assert together.end.send_score == pytest.approx(alone.end.send_score, abs=1e-4)
        assert together.embeds.shape == alone.embeds.shape
    assert len({d.embeds.shape[1] for d in batched}) > 1  # the prompts' lengths differ: the batch was padded
