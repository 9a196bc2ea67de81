"""GloVe neighbours for the textfooler recipe: nearest first, TextFooler's settings, and
the threat model still the only judge of what may be reported."""

from __future__ import annotations

import numpy as np

from mlwarden.evasion.text.embeddings import MIN_COSINE, TOP_N, _table, neighbours
from mlwarden.evasion.text.threat import ThreatModel
from mlwarden.evasion.text.transforms import embedding_candidates


def test_neighbours_are_nearest_first_within_textfooler_settings() -> None:
    index, _, table = _table()
    near = neighbours("film")
    sims = [float(table[index[w]] @ table[index["film"]]) for w in near]

    assert "movie" in near[:3] and len(near) <= TOP_N
    assert sims == sorted(sims, reverse=True) and min(sims) >= MIN_COSINE
    assert np.allclose(np.linalg.norm(table[:100], axis=1), 1.0, atol=1e-5)
    assert neighbours("qqzzxv") == ()  # outside the vocabulary: nothing, not an error


def test_candidates_keep_shape_and_the_threat_model_drops_non_synonyms() -> None:
    cands = embedding_candidates("Movies,")
    tm = ThreatModel()
    admitted = [c for c in cands if tm.word_ok("Movies,", c)]

    assert all(c[0].isupper() and c.endswith(",") for c in cands)
    assert "Films," in admitted  # a neighbour that shares a synset (inflected)
    assert "Comedy," in cands and "Comedy," not in admitted  # related, not a synonym
