"""Profiles: one switch for a whole family of settings. ``default`` is this project's improvements;
``paper`` restores every setting of the StickerConv paper and its original code, so a researcher can run the
method as published (issue 20). Each layer reads the profile and applies its own settings (the PEGS stages
take the paper's §5.4 table, evaluation decodes 512 tokens, ...); outputs record the profile they ran under.
"""

from __future__ import annotations

from typing import Literal

Profile = Literal["default", "paper"]
PROFILES: dict[str, str] = {
    "default": "this project's settings (see docs for each difference from the paper and why)",
    "paper": "the paper's and its original code's settings, for reproducing its numbers",
}
DEFAULT_PROFILE: Profile = "default"
