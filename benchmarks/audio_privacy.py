"""Membership inference and model extraction on a real audio target: a keyword-family
classifier (numbers, ordinals, letters, NATO alphabet) trained on real recordings.

Data: the single spoken words of Debian's ``asterisk-core-sounds-en-wav`` (one speaker,
8 kHz, 1 s clips; :func:`mlwarden.core.audio_samples.word_folders`), every other file
as the training half, the rest as the holdout half. Victim:
:class:`mlwarden.evasion.audio.models.MelClassifier` trained 200 epochs (memorises its
training clips: 100% train accuracy), saved as TorchScript and audited through the file,
as ``mlwarden privacy`` and ``mlwarden extract`` do. Privacy: the loss attack, LiRA
(online, ``--shadows`` shadow models trained by the same recipe,
``mlwarden.evasion.audio.models:train_mel_classifier``) and the label-only attack.
Extraction: the attacker's pool is 400 whole-sentence prompts of the same package (the
same voice, not the task's words), budgets 100/400, the substitute scored on the
holdout words.

Run (about 15 minutes on a loaded 2-core box)::

    timeout 2400 nice -n 10 .venv/bin/python benchmarks/audio_privacy.py --shadows 8
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mlwarden.core.audio_samples import asterisk_sounds, prompt_pool, word_folders
from mlwarden.core.data import load_dataset
from mlwarden.evasion.audio.models import train_mel_classifier
from mlwarden.privacy import extract_report, privacy_report

TRAINER = "mlwarden.evasion.audio.models:train_mel_classifier"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shadows", type=int, default=8)
    ap.add_argument("--budgets", type=int, nargs="+", default=[100, 400])
    ap.add_argument("--extract-only", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    voice = asterisk_sounds()
    if voice is None:
        raise SystemExit("asterisk-core-sounds-en-wav could not be fetched (apt unreachable)")
    tmp = Path(tempfile.mkdtemp(prefix="audio-privacy-"))
    train_dir, holdout_dir = word_folders(voice, tmp / "words")
    pool_dir = prompt_pool(voice, tmp / "pool")
    train, holdout = load_dataset(str(train_dir)), load_dataset(str(holdout_dir))
    net = train_mel_classifier(train.x, train.y)
    model = tmp / "words.pt"
    torch.jit.trace(net, torch.as_tensor(train.x[:2])).save(str(model))
    with torch.no_grad():
        accs = [
            float((net(torch.as_tensor(d.x)).argmax(1).numpy() == d.y).mean())
            for d in (train, holdout)
        ]
    print(f"train {len(train)} clips, holdout {len(holdout)}, classes {train.class_names}")
    print(f"victim accuracy: train {accs[0]:.1%}, holdout {accs[1]:.1%}")
    rows = []
    for attack, kw in (
        []
        if args.extract_only
        else (
            ("loss", {}),
            ("lira", {"shadows": args.shadows, "trainer": TRAINER}),
            ("label-only", {}),
        )
    ):
        t0 = time.perf_counter()
        rep = privacy_report(str(model), str(train_dir), str(holdout_dir), attack=attack, **kw)  # type: ignore[arg-type]
        m = rep.metrics
        rows.append(
            (
                attack,
                m["auc"],
                m.get("auc_ci"),
                m["tpr_at_fpr"],
                m.get("balanced_accuracy"),
                time.perf_counter() - t0,
            )
        )
        print(json.dumps({"attack": attack, "auc": m["auc"], "auc_ci": m.get("auc_ci"), "tpr_at_fpr": m["tpr_at_fpr"],
                          "balanced_accuracy": m.get("balanced_accuracy"), "access": m["access"],
                          "findings": [f.rule + " " + f.severity.value for f in rep.findings],
                          "s": round(time.perf_counter() - t0, 1)}), flush=True)  # fmt: skip
    pool = load_dataset(str(pool_dir))
    t0 = time.perf_counter()
    rep = extract_report(str(model), pool, budgets=tuple(args.budgets), test=holdout, seed=0)
    m = rep.metrics
    print(json.dumps({"extract": {k: m.get(k) for k in ("fidelity", "accuracy", "clean_accuracy", "fidelity_uniform", "queries")},
                      "findings": [f.rule + " " + f.severity.value for f in rep.findings],
                      "s": round(time.perf_counter() - t0, 1)}), flush=True)  # fmt: skip
    victim = net(torch.as_tensor(holdout.x)).argmax(1).numpy()
    print(f"majority-label fidelity baseline: {np.bincount(victim).max() / len(victim):.1%}")


if __name__ == "__main__":
    main()
