"""The scripted model the demo tests run every LLM step on: fresh profiles for persona requests, the
simulator's script for everything else."""

from __future__ import annotations

import json
import random

from helpers.fake_openai_server import dialogue_reply, requested_schema

WORDS = [f"w{n}" for n in range(500)]  # situations drawn from these share almost no words: ROUGE-L keeps them


def demo_reply(body: dict) -> str:
    """A fresh profile for a persona request (a situation of random words), else the simulator's script."""
    schema = requested_schema(body) or {}
    if {"emotion", "persona", "situation"} <= set(schema.get("properties", {})):
        rng = random.Random(json.dumps(body["messages"], sort_keys=True))
        situation = "You recently " + " ".join(rng.sample(WORDS, 30)) + "."
        persona = "You are a person who " + " ".join(rng.sample(WORDS, 20)) + "."
        emotion = rng.choice(["Sadness", "Anger", "Fear", "Happiness"])
        return json.dumps({"emotion": emotion, "persona": persona, "situation": situation})
    return dialogue_reply(body)
