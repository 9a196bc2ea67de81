"""What ``mlwarden demo`` hands each check: a trained model, its files and its data.

Each check package offers ``<package>.demo.run(ctx: DemoContext) -> Report``; the demo
runner (:mod:`mlwarden.audit.demo`) calls them in turn and merges their reports.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from mlwarden.core.data import Dataset


@dataclass
class DemoContext:
    out_dir: Path
    seed: int
    dataset: Dataset  #: the whole bundled set (digits)
    train: Dataset
    test: Dataset
    model: nn.Module  #: SmallCNN trained on ``train``; logits out
    torchscript_path: Path  #: the model as a TorchScript archive
    state_dict_path: Path  #: the model's state dict (torch.save zip)
    sklearn_model: Any  #: a fitted scikit-learn classifier on flattened ``train``
    sklearn_path: Path  #: that estimator as a joblib file
    data_path: Path  #: ``dataset`` as a plain .npz
    quick: bool = True
    extra: dict[str, Any] = field(default_factory=dict)
