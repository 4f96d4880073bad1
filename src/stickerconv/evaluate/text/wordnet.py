"""WordNet for METEOR, offline: an NLTK corpus directory made from the Debian WordNet packages.

NLTK's METEOR matches synonyms through WordNet, which NLTK normally downloads; that is impossible
offline (and ``nltk.download`` is never called here). Debian ships the same WordNet 3.0 database
(packages ``wordnet-base`` and ``wordnet-sense-index``) in ``/usr/share/wordnet``, but NLTK will not
read that directory directly and the packages lack the ``lexnames`` file NLTK's reader requires.
So the files are copied once into a cache directory, ``lexnames`` is generated (the 45 standard
lexicographer files), and a reader is built on that copy and handed to METEOR explicitly. NLTK
reads corpora only below a directory listed in ``nltk.data.path`` ("Security Violation" otherwise),
so the cache directory is appended there: after the entries already listed, so a real NLTK WordNet
download, where one exists, still answers ``nltk.corpus.wordnet``.

The cache is ``$STICKERCONV_NLTK_DATA`` if set, else ``$XDG_CACHE_HOME/stickerconv/nltk_data``
(``~/.cache/stickerconv/nltk_data``); the corpus lands in its ``corpora/wordnet`` like an NLTK
download, so the directory can also be given to NLTK as an ordinary data directory.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

log = logging.getLogger(__name__)

SYSTEM_WORDNET = Path("/usr/share/wordnet")
# The files NLTK's WordNetCorpusReader opens (its _FILES, less the generated lexnames), by package.
REQUIRED_FILES = {
    "wordnet-base": (
        "cntlist.rev",
        "index.adj",
        "index.adv",
        "index.noun",
        "index.verb",
        "data.adj",
        "data.adv",
        "data.noun",
        "data.verb",
        "adj.exc",
        "adv.exc",
        "noun.exc",
        "verb.exc",
    ),
    "wordnet-sense-index": ("index.sense",),
}
_NOUN_FILES = (
    "act animal artifact attribute body cognition communication event feeling food group location motive object "
    "person phenomenon plant possession process quantity relation shape state substance time"
).split()
_VERB_FILES = (
    "body change cognition communication competition consumption contact creation emotion motion perception "
    "possession social stative weather"
).split()
_MARKER = ".stickerconv-source.json"


class WordNetMissingError(RuntimeError):
    """The system WordNet files are absent, with the packages that provide them."""


def lexnames_text() -> str:
    """The WordNet 3.0 ``lexnames`` file: ``NN<TAB>name<TAB>pos`` for the 45 lexicographer files."""
    names = [("adj.all", 3), ("adj.pert", 3), ("adv.all", 4), ("noun.Tops", 1)]
    names += [(f"noun.{n}", 1) for n in _NOUN_FILES] + [(f"verb.{v}", 2) for v in _VERB_FILES] + [("adj.ppl", 3)]
    return "".join(f"{i:02d}\t{name}\t{pos}\n" for i, (name, pos) in enumerate(names))


def default_data_dir() -> Path:
    """Where the NLTK data directory goes: ``$STICKERCONV_NLTK_DATA``, else the user's cache directory."""
    if env := os.environ.get("STICKERCONV_NLTK_DATA"):
        return Path(env)
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "stickerconv" / "nltk_data"


def _source_listing(source: Path) -> dict[str, list[int]]:
    missing = {pkg: [f for f in files if not (source / f).is_file()] for pkg, files in REQUIRED_FILES.items()}
    if any(missing.values()):
        absent = sorted(f for files in missing.values() for f in files)
        packages = " ".join(pkg for pkg, files in missing.items() if files)
        raise WordNetMissingError(
            f"WordNet (needed by METEOR) is missing from {source}: {', '.join(absent)}. "
            f"Install it with `sudo apt-get install {packages}` (scripts/install.sh does this); "
            f"NLTK's own download is not used"
        )
    return {p.name: [p.stat().st_size, p.stat().st_mtime_ns] for p in sorted(source.iterdir()) if p.is_file()}


def prepare_wordnet(data_dir: Path | None = None, source: Path = SYSTEM_WORDNET) -> Path:
    """Make ``<data_dir>/corpora/wordnet`` from ``source`` (copy + generated ``lexnames``); return that folder.

    Does nothing when an up-to-date copy is there (same file names, sizes and times as ``source``).
    The copy is built beside its final place and renamed into it, so concurrent callers never see
    half a corpus.
    """
    listing = _source_listing(source)
    target = (data_dir or default_data_dir()) / "corpora" / "wordnet"
    marker = {"source": str(source.resolve()), "files": listing, "lexnames": lexnames_text()}
    if _is_current(target, marker):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("copying WordNet from %s into %s", source, target)
    staging = Path(tempfile.mkdtemp(prefix=".wordnet-", dir=target.parent))
    try:
        for name in listing:
            shutil.copy2(source / name, staging / name)
        (staging / "lexnames").write_text(marker["lexnames"], encoding="utf-8")
        (staging / _MARKER).write_text(json.dumps(marker), encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)
        try:
            staging.rename(target)
        except OSError:
            if not _is_current(target, marker):  # not another process that finished first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _is_current(target: Path, marker: dict) -> bool:
    try:
        return json.loads((target / _MARKER).read_text(encoding="utf-8")) == marker
    except (OSError, ValueError):
        return False


def load_wordnet(data_dir: Path | None = None, source: Path = SYSTEM_WORDNET) -> WordNetCorpusReader:
    """A WordNet reader on the prepared copy (about 2 s to load its indexes)."""
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    root = prepare_wordnet(data_dir, source)
    data_root = str(root.parents[1])
    if data_root not in nltk.data.path:
        nltk.data.path.append(data_root)
    with warnings.catch_warnings():  # "multilingual functions are not available": METEOR is English-only
        warnings.simplefilter("ignore", UserWarning)
        return WordNetCorpusReader(str(root), None)
