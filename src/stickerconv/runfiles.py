"""The file names of a generation run folder, the one contract between the simulator that writes the folder
and the dataset tools that read it.

Why a bottom-layer module and not ``data/``: the writer, ``agent4sc`` (its runner and the Ray executor), sits
below ``data`` in the layer order, so it could not import names that ``data`` owned; and the reader, ``data``,
should not load the whole simulator for three strings. Here both import them without pulling in anything.
"""

from __future__ import annotations

CONVERSATIONS = "conversations.jsonl"  # the kept sessions (those with a sticker), in the published record format
REJECTED = "rejected.jsonl"  # the sessions without a sticker or that could not finish, each with its reason
SUMMARY = "summary.json"  # counts, how the sessions ended, dataset statistics and the LLM ledger
