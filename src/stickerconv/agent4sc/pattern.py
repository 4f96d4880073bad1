"""How the method's steps map onto LLM calls. Both patterns run every step of the method reference
(utterance, importance, reflection, self-summary, intent, query, retrieve, select, review, closure);
the lean one, the default, spends far fewer tokens on them (figures: ``bench/agent4sc.py``):

* the sticker intent and query are drafted in the utterance call itself whenever the frequency rules
  allow a sticker, instead of two more calls repeating the agent's profile and the message;
* a turn's memories are rated for importance in one call per agent, not one call per memory;
* few-shot query examples are shortened to their first words, and selection candidates are
  listed by label and the start of their description;
* after the last turn the agents' memories are not updated (no rating, reflection or
  self-summary): no utterance would ever use them.

``CallPattern.original()`` reproduces the original's calls, for faithful reproduction and as the
baseline of the benchmark.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CallPattern:
    fuse_plan: bool = True
    batch_importance: bool = True
    compact_prompts: bool = True
    skip_final_memory: bool = True

    @classmethod
    def original(cls) -> CallPattern:
        return cls(fuse_plan=False, batch_importance=False, compact_prompts=False, skip_final_memory=False)


CALL_PATTERNS = {"lean": CallPattern(), "original": CallPattern.original()}
