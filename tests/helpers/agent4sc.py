"""A scripted world for the simulator: one backend that answers every Agent4SC call (utterances, drafted
messages, memory scores, reflections, plans, reviews, closure) from the prompt alone, so that runs are
reproducible in any call order, and an LLM factory that serves it as ``--llm local``."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from stickerconv.llm import LLMConfig, LLMFactory
from stickerconv.schema import Persona

from helpers.llm_fakes import ScriptedBackend

PERSONAS = [
    Persona(emotion="Sadness", persona=f"You are student {i}.", situation=f"You failed exam {i}.") for i in range(4)
]


def scripted_utterance(request) -> str:
    """A pure function of the prompt, so runs are reproducible in any call order."""
    digest = hashlib.sha256(request.key().encode()).hexdigest()[:8]
    return f"B: message {digest} about the exam"  # the prefix must be stripped


def farewell(request) -> str:
    """An utterance with a winding-down cue, so that the default rules let the closure judge decide."""
    return scripted_utterance(request) + ", thanks, I have to go now. Bye!"


def scripted_world(select_idx=0, inconsistent=False, closure="CONT", utterance=scripted_utterance) -> ScriptedBackend:
    def reply(request):
        schema = (request.json_schema or {}).get("title")
        if schema is None:
            return utterance(request)
        if schema == "DraftedMessage":
            query = "emotion: Sadness, emotion describe: The sticker conveys sadness."
            return json.dumps({"message": utterance(request), "intention": "Emotional Expression", "query": query})
        n = request.messages[-1].text.count("\n")
        return json.dumps(
            {
                "_Scores": {"scores": [6] * n},
                "_Questions": {"questions": ["What happened?"]},
                "_Insights": {"insights": ["B feels let down"]},
                "IntentAnswer": {"intention": "Emotional Expression"},
                "QueryAnswer": {"query": "emotion: Sadness, emotion describe: The sticker conveys sadness."},
                "SelectAnswer": {"idx": select_idx},
                "Review": {"inconsistent": inconsistent, "reason": "checked"},
                "Closure": {"decision": closure},
            }[schema]
        )

    return ScriptedBackend(default=reply, model="scripted")


def llm_factory(folder: Path, backend: ScriptedBackend) -> LLMFactory:
    """A factory whose ``local`` backend is ``backend``, with its cache and ledger in ``folder``."""
    factory = LLMFactory(LLMConfig(store=folder / "llm.sqlite"))
    factory.register_backend("local", backend)
    return factory


def used_sticker_images(sessions: list[dict]) -> list[str]:
    """The image of every sticker either side sent, over the sessions (records as written to conversations.jsonl)."""
    return [
        sticker["image"]
        for session in sessions
        for turn in session["conversation"]
        for sticker in (turn["user_sticker"], turn["system_sticker"])
        if sticker is not None
    ]
