"""Retrieval protocols (1+9, 1+999, full pool), the seen/unseen split, send decisions and their scorers."""

# The scorers ``eval retrieval --scorer`` names (a PEGS checkpoint is a third, chosen by --checkpoint).
SCORERS: dict[str, str] = {
    "index": "the sticker index's embedding of the dialogue text",
    "tool": "the LLM + tool baseline's sticker query, written with the tool call forced",
}
