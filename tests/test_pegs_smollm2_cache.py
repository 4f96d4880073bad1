"""The embedded SmolLM2 GGUF is converted once to a cached transformers folder (pegs/model.py): the folder
loads to exactly what the GGUF gives, and a second load reuses it."""

from __future__ import annotations

import logging

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from stickerconv.assets import embedded_gguf
from stickerconv.pegs.config import PegsConfig
from stickerconv.pegs.model import load_backbone, load_tokenizer, smollm2_folder

TEXTS = ["I failed my exam again 😞", "USER: We won!<IMG>\nASSISTANT:", "Ünïcödé and   spaces\n\nnew lines"]


def test_the_cached_folder_is_the_gguf_exactly(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("STICKERCONV_CACHE", str(tmp_path))
    with caplog.at_level(logging.INFO, logger="stickerconv.pegs.model"):
        folder = smollm2_folder()
    assert folder.parent == tmp_path / "hf-from-gguf" and (folder / "config.json").is_file()
    assert any("converting" in r.getMessage() for r in caplog.records)
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # no temporary folder left behind
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="stickerconv.pegs.model"):
        assert smollm2_folder() == folder
    assert not any("converting" in r.getMessage() for r in caplog.records)  # the second load reuses it

    gguf = embedded_gguf()
    direct_tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    cached_tok = load_tokenizer("smollm2-gguf")
    for text in TEXTS:
        assert cached_tok(text).input_ids == direct_tok(text).input_ids
    assert cached_tok.eos_token == direct_tok.eos_token and len(cached_tok) == len(direct_tok)

    direct = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    cached = load_backbone(PegsConfig.preset("small").llm, cached_tok, seed=0)
    a, b = direct.state_dict(), cached.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
