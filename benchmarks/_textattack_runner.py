"""Run one TextAttack 0.3.11 recipe on one model (inside TextAttack's own venv).

Usage: python _textattack_runner.py MODEL RECIPE SAMPLES.jsonl OUT.jsonl MAX_CHANGE NLTK_DIR

MODEL is a scikit-learn joblib file (built by the benchmark itself) or a Hugging Face
folder. The word budget is ours, exactly: a MaxModificationRate whose limit is
``max(int(r * n), 1)`` (TextAttack's own rounds up). Writes one JSON line per sample:
``{"index", "adversarial", "status", "queries"}``. Not part of mlwarden; benchmark only.
"""

from __future__ import annotations

import json
import os
import sys


def main() -> None:
    model_path, recipe, samples, out, max_change, nltk_dir = sys.argv[1:7]
    os.environ.setdefault("TA_CACHE_DIR", os.path.join(nltk_dir, "ta-cache"))
    import nltk

    nltk.data.path.insert(0, nltk_dir)
    import numpy as np
    import textattack
    from textattack import Attack
    from textattack.constraints.pre_transformation import MaxModificationRate
    from textattack.models.wrappers import ModelWrapper

    rate = float(max_change)

    class OurBudget(MaxModificationRate):  # type: ignore[misc]
        def _check_constraint(self, transformed_text, reference_text):  # type: ignore[no-untyped-def]
            n = len(reference_text.words)
            return len(transformed_text.attack_attrs["modified_indices"]) <= max(int(rate * n), 1)

        def _get_modifiable_indices(self, current_text):  # type: ignore[no-untyped-def]
            n = len(current_text.attack_attrs.get("original_text", current_text).words)
            if len(current_text.attack_attrs["modified_indices"]) >= max(int(rate * n), 1):
                return set()
            return set(range(len(current_text.words)))

    if os.path.isdir(model_path):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        model = AutoModelForSequenceClassification.from_pretrained(
            model_path, local_files_only=True
        )
        try:
            tok = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
        except ValueError:  # saved by transformers 5 ("TokenizersBackend"): read tokenizer.json
            from transformers import PreTrainedTokenizerFast

            tok = PreTrainedTokenizerFast(
                tokenizer_file=os.path.join(model_path, "tokenizer.json"),
                unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
                mask_token="[MASK]", model_max_length=model.config.max_position_embeddings,
            )  # fmt: skip
        wrapper = textattack.models.wrappers.HuggingFaceModelWrapper(model, tok)
    else:
        import joblib

        pipe = joblib.load(model_path)  # the benchmark built this file itself

        class SkWrapper(ModelWrapper):  # type: ignore[misc]
            def __init__(self, m):  # type: ignore[no-untyped-def]
                self.model = m

            def __call__(self, texts):  # type: ignore[no-untyped-def]
                return np.asarray(self.model.predict_proba(list(texts)))

        wrapper = SkWrapper(pipe)
    recipes = {
        "pwws": textattack.attack_recipes.PWWSRen2019,
        "deepwordbug": textattack.attack_recipes.DeepWordBugGao2018,
        "pruthi": textattack.attack_recipes.Pruthi2019,
        "textbugger": textattack.attack_recipes.TextBuggerLi2018,
        "checklist": textattack.attack_recipes.CheckList2020,
        "hotflip": textattack.attack_recipes.HotFlipEbrahimi2017,
        "textfooler": textattack.attack_recipes.TextFoolerJin2019,
    }
    built = recipes[recipe].build(wrapper)
    attack = Attack(built.goal_function, [*built.constraints, OurBudget(max_rate=rate)],
                    built.transformation, built.search_method)  # fmt: skip
    with open(samples, encoding="utf-8") as src:
        rows = [json.loads(line) for line in src]
    with open(out, "w", encoding="utf-8") as fh:
        for row in rows:
            res = attack.attack(row["text"], int(row["label"]))
            status = type(res).__name__
            adv = res.perturbed_result.attacked_text.text
            queries = int(res.perturbed_result.num_queries)
            fh.write(json.dumps({"index": row["index"], "adversarial": adv, "status": status,
                                 "queries": queries}) + "\n")  # fmt: skip
            fh.flush()  # a run stopped by the benchmark's timeout keeps the samples it finished


if __name__ == "__main__":
    main()
