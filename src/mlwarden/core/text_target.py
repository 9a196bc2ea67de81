"""Text targets: models whose ``predict`` takes a list of strings.

Same contract as :mod:`mlwarden.core.target` (``access``, ``output``, exact query
counting across batches, ``max_queries`` refused before spending), with inputs that
are texts: ``predict(["a text", ...])`` returns float32 scores ``(N, C)`` or int64
labels ``(N,)`` for label access. One query is one text sent to the model.

Adapters:

* :class:`SklearnTextTarget` — a fitted scikit-learn estimator (usually a ``Pipeline``
  whose first step is a vectorizer) that takes raw strings;
* :class:`HFTextTarget` — a local Hugging Face folder (``config.json``, safetensors
  weights, tokenizer files) loaded strictly offline without remote code; white-box:
  :meth:`HFTextTarget.embedding_forward` gives logits differentiable w.r.t. the input
  embeddings. Scan the folder first (:func:`mlwarden.supplychain.load_target` does);
* :class:`HttpTextTarget` — an endpoint taking ``{"inputs": ["...", ...]}``;
* :class:`CallableTextTarget` — a Python callable ``list[str] -> scores``.

Example::

    target = SklearnTextTarget(pipeline)
    target.predict(["what a lovely day", "awful service"])   # (2, C) float32
    target.queries                                          # 2
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mlwarden.core.errors import InputFileError, UserError
from mlwarden.core.target import BaseTarget, HttpTarget, TargetError

#: Longest text a target accepts, in characters (one clear error instead of a stall).
MAX_TEXT_CHARS = 100_000
#: Texts per forward pass of a Hugging Face model (after sorting a call's texts by length).
_FORWARD_BATCH = 64


def as_texts(x: Any) -> list[str]:
    """A batch of texts as ``list[str]``; a one-line :class:`TargetError` otherwise."""
    if isinstance(x, str):
        raise TargetError("predict() needs a batch of texts (a list of strings), got one string")
    if isinstance(x, np.ndarray) and x.dtype.kind in "US":
        x = x.tolist()
    if isinstance(x, np.ndarray) and x.dtype == object:
        x = x.tolist()
    if isinstance(x, np.ndarray | torch.Tensor) or not isinstance(x, Sequence):
        raise TargetError(
            f"a text model takes a list of strings; got {type(x).__name__}"
            + (f" of shape {tuple(x.shape)}" if hasattr(x, "shape") else "")
        )
    for i, t in enumerate(x):
        if not isinstance(t, str):
            raise TargetError(f"input {i} is {type(t).__name__}; a text model takes strings")
        if len(t) > MAX_TEXT_CHARS:
            raise TargetError(f"input {i} has {len(t)} characters, over the {MAX_TEXT_CHARS} limit")
    return list(x)


class TextTarget(BaseTarget):
    """Batching, query counting and budgets for text inputs; subclasses implement ``_predict``
    on a ``list[str]``."""

    modality = "text"

    def predict(self, x: Any) -> np.ndarray:
        """Scores ``(N, C)`` float32, or labels ``(N,)`` int64 for label access."""
        texts = as_texts(x)
        n = len(texts)
        self._spend(n)
        if n == 0:
            if self.access == "label":
                return np.zeros((0,), np.int64)
            return np.zeros((0, self.num_classes or 0), np.float32)
        outs = []
        for i in range(0, n, self.batch_size):
            batch = texts[i : i + self.batch_size]
            out_b = np.asarray(self._predict_texts(batch))
            if out_b.ndim == 0 or len(out_b) != len(batch):
                rows = "a scalar" if out_b.ndim == 0 else f"{len(out_b)} rows"
                raise TargetError(f"{self.name} returned {rows} for a batch of {len(batch)} texts")
            if out_b.dtype.kind not in "biuf":
                raise TargetError(f"{self.name} returned {out_b.dtype} values; expected numbers")
            outs.append(out_b)
        out = np.concatenate(outs, axis=0)
        if self.access == "label":
            return (out.argmax(axis=1) if out.ndim == 2 else out).astype(np.int64)
        if out.ndim == 1:
            raise TargetError(
                f"{self.name} returned labels but was declared with {self.access} access"
            )
        if self.num_classes is None:
            self.num_classes = out.shape[1]
        return out.astype(np.float32, copy=False)

    def predict_labels(self, x: Any) -> np.ndarray:
        """Predicted class indices ``(N,)`` int64 (costs the same queries as :meth:`predict`)."""
        out = self.predict(x)
        return out.astype(np.int64) if out.ndim == 1 else out.argmax(axis=1).astype(np.int64)

    def describe(self) -> dict[str, Any]:
        return super().describe() | {"modality": "text"}

    def _predict_texts(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError


class SklearnTextTarget(TextTarget):
    """A fitted scikit-learn estimator taking raw strings (``predict_proba`` if it has one)."""

    output = "probabilities"

    def __init__(self, estimator: Any, **kw: Any) -> None:
        has_proba = hasattr(estimator, "predict_proba")
        if not has_proba:
            kw["access"] = "label"
        elif kw.get("access") == "white":
            raise UserError(
                "a scikit-learn estimator has no gradients; use access 'score' or 'label'"
            )
        kw.setdefault("name", type(estimator).__name__)
        classes = getattr(estimator, "classes_", None)
        if classes is not None:
            kw.setdefault("num_classes", len(classes))
        super().__init__(**kw)
        self.estimator = estimator
        self._has_proba = has_proba
        self._classes = None if classes is None else list(np.asarray(classes))

    def _predict_texts(self, texts: list[str]) -> np.ndarray:
        try:
            if self.access == "label" or not self._has_proba:
                labels = list(np.asarray(self.estimator.predict(texts)))
                if self._classes is None:
                    return np.asarray(labels, dtype=np.int64)
                return np.asarray([self._classes.index(v) for v in labels], dtype=np.int64)
            return np.asarray(self.estimator.predict_proba(texts), dtype=np.float32)
        except (ValueError, TypeError, AttributeError, IndexError) as exc:
            raise TargetError(f"{self.name} rejected {len(texts)} texts: {_first(exc)}") from None


class CallableTextTarget(TextTarget):
    """A callable ``list[str] -> scores (N, C) or labels (N,)``."""

    def __init__(self, fn: Callable[[list[str]], Any], **kw: Any) -> None:
        kw.setdefault("name", getattr(fn, "__name__", "callable"))
        super().__init__(**kw)
        if self.access == "white":
            raise UserError("a plain callable has no gradients; use access 'score' or 'label'")
        self.fn = fn

    def _predict_texts(self, texts: list[str]) -> np.ndarray:
        try:
            return np.asarray(self.fn(texts))
        except (ValueError, TypeError, IndexError, RuntimeError, KeyError) as exc:
            raise TargetError(f"{self.name} failed on {len(texts)} texts: {_first(exc)}") from None


class HttpTextTarget(TextTarget, HttpTarget):
    """An endpoint taking ``{input_field: ["text", ...]}`` and answering scores or labels at
    ``output_field`` (same options as :class:`~mlwarden.core.target.HttpTarget`)."""

    def _predict_texts(self, texts: list[str]) -> np.ndarray:
        batch = np.empty(len(texts), dtype=object)
        batch[:] = texts
        return HttpTarget._predict(self, batch)


class HFTextTarget(TextTarget):
    """A local Hugging Face sequence classifier, loaded offline, never with remote code.

    White-box by default: :meth:`embedding_forward` runs the model from input embeddings
    so attacks (HotFlip, Ebrahimi et al. 2018, arXiv:1712.06751) get gradients with
    respect to them. ``max_length`` tokens per text (longer texts are truncated, as the
    deployed model would). Scan the folder first; see the module docs.
    """

    access = "white"
    output = "logits"

    def __init__(self, path: str | Path, *, max_length: int = 128, **kw: Any) -> None:
        try:
            from transformers import AutoModelForSequenceClassification, AutoTokenizer
        except ImportError:
            raise UserError(
                "Hugging Face models need transformers: pip install 'mlwarden[text]'"
            ) from None
        path = Path(path)
        if not (path / "config.json").is_file():
            raise InputFileError(path, "has no config.json; expected a Hugging Face model folder")
        from transformers.utils import logging as hf_logging

        bar = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # no "Loading weights" bar in a scanner's output
        try:
            model = AutoModelForSequenceClassification.from_pretrained(
                str(path), local_files_only=True, trust_remote_code=False, use_safetensors=True
            )
            self.tokenizer = AutoTokenizer.from_pretrained(
                str(path), local_files_only=True, trust_remote_code=False
            )
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
            raise InputFileError(path, f"not a loadable text classifier ({_first(exc)})") from None
        finally:
            if bar:
                hf_logging.enable_progress_bar()
        kw.setdefault("name", path.name)
        kw.setdefault("num_classes", int(model.config.num_labels))
        kw.setdefault("batch_size", 1024)  # split by length in _predict_texts
        super().__init__(**kw)
        self.model = model.eval()
        limits = [max_length, getattr(model.config, "max_position_embeddings", max_length)]
        tok_max = getattr(self.tokenizer, "model_max_length", None)
        if isinstance(tok_max, int) and 0 < tok_max < 1_000_000:
            limits.append(tok_max)
        self.max_length = int(min(limits))
        self.path = path

    def encode(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Token ids and attention mask (padded, truncated to ``max_length``)."""
        enc = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask")}

    def embedding_matrix(self) -> torch.Tensor:
        """The input word-embedding table ``(vocab, dim)``."""
        return self.model.get_input_embeddings().weight  # type: ignore[no-any-return]

    def embedding_forward(
        self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """Logits from input embeddings ``(N, T, dim)``, differentiable; counts N queries."""
        if self.access != "white":
            raise TargetError(f"{self.name} has {self.access} access; gradients are not available")
        self._spend(len(inputs_embeds))
        return self.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask).logits  # type: ignore[no-any-return]

    def _predict_texts(self, texts: list[str]) -> np.ndarray:
        """Logits; texts of similar token length go through the model together, so a
        batch pads to its own longest text rather than the call's (same logits)."""
        try:
            ids = self.tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]
            order = sorted(range(len(texts)), key=lambda i: len(ids[i]))
            out: np.ndarray | None = None
            with torch.inference_mode():
                for start in range(0, len(order), _FORWARD_BATCH):
                    part = order[start : start + _FORWARD_BATCH]
                    logits = self.model(**self._padded([ids[i] for i in part])).logits.float()
                    if out is None:
                        out = np.empty((len(texts), logits.shape[1]), np.float32)
                    out[part] = logits.numpy()
        except (RuntimeError, ValueError, IndexError) as exc:
            raise TargetError(f"{self.name} failed on {len(texts)} texts: {_first(exc)}") from None
        assert out is not None  # TextTarget.predict never sends an empty batch
        return out

    def _padded(self, rows: list[list[int]]) -> dict[str, torch.Tensor]:
        """Token id rows padded to the longest on the tokenizer's padding side, with the
        attention mask."""
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id or 0
        left = getattr(self.tokenizer, "padding_side", "right") == "left"
        x = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for k, r in enumerate(rows):
            cols = slice(width - len(r), width) if left else slice(0, len(r))
            x[k, cols] = torch.as_tensor(r, dtype=torch.long)
            mask[k, cols] = 1
        return {"input_ids": x, "attention_mask": mask}


def as_text_target(model: Any, **kw: Any) -> TextTarget:
    """Wrap an in-memory text model: a TextTarget passes through; an estimator or a callable
    ``list[str] -> scores`` is adapted."""
    if isinstance(model, TextTarget):
        return model
    if hasattr(model, "predict") and hasattr(model, "fit"):
        return SklearnTextTarget(model, **kw)
    if callable(model):
        return CallableTextTarget(model, **kw)
    raise UserError(
        f"cannot use a {type(model).__name__} as a text model; expected a scikit-learn "
        "pipeline, a Hugging Face folder or a callable list[str] -> scores"
    )


def _first(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[0][:300] if lines else type(exc).__name__
