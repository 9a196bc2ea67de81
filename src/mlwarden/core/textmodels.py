"""Small text classifiers built offline: for the demo, the tests and the benchmarks.

* :func:`tfidf_pipeline` — scikit-learn ``TfidfVectorizer`` (words, 1-2 grams) +
  ``LogisticRegression``: takes raw strings.
* :func:`tiny_transformer` — a 2-layer BERT (hidden 64) with a WordPiece tokenizer
  trained by ``tokenizers`` on the texts themselves, fine-tuned from scratch and saved
  as a Hugging Face folder (``config.json``, ``model.safetensors``, tokenizer files).
  Needs ``transformers`` and ``tokenizers`` (``pip install 'mlwarden[text]'``).

Example::

    pipe = tfidf_pipeline(train.x, train.y)
    folder = tiny_transformer(train.x, train.y, "models/tiny-bert", epochs=2)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def tfidf_pipeline(texts: Sequence[str] | np.ndarray, y: np.ndarray, *, c: float = 4.0) -> Any:
    """A fitted TF-IDF (1-2 word grams, sublinear tf) + logistic-regression pipeline."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from threadpoolctl import threadpool_limits

    pipe = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True),
        LogisticRegression(max_iter=1000, C=c),
    )
    with threadpool_limits(1):  # a small sparse problem: BLAS threads only contend
        return pipe.fit(list(texts), np.asarray(y))


def tiny_transformer(
    texts: Sequence[str] | np.ndarray,
    y: np.ndarray,
    out: str | Path,
    *,
    epochs: int = 2,
    vocab_size: int = 8000,
    seed: int = 0,
    max_length: int = 64,
) -> Path:
    """Train and save a tiny BERT sequence classifier; returns the folder."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    out = Path(out)
    torch.manual_seed(seed)
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(
        list(texts), trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=special)
    )
    from tokenizers.processors import TemplateProcessing

    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=max_length,
    )
    n_classes = int(np.max(y)) + 1
    config = BertConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=max_length,
        num_labels=n_classes,  # type: ignore[call-arg]
    )
    model = BertForSequenceClassification(config)
    _fit(model, fast, list(texts), np.asarray(y), epochs, max_length, seed)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=True)
    fast.save_pretrained(str(out))
    return out


def _fit(
    model: Any,
    tokenizer: Any,
    texts: list[str],
    y: np.ndarray,
    epochs: int,
    max_length: int,
    seed: int,
) -> None:
    import torch

    rng = np.random.default_rng(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
    model.train()
    for _ in range(epochs):
        order = rng.permutation(len(texts))
        for i in range(0, len(order), 64):
            idx = order[i : i + 64]
            enc = tokenizer(
                [texts[j] for j in idx],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
            out = model(**enc, labels=torch.as_tensor(y[idx]))
            opt.zero_grad()
            out.loss.backward()
            opt.step()
    model.eval()
