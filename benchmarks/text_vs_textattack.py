"""Text evasion: mlwarden against TextAttack 0.3.11 on the same models and samples.

Both sides attack the same texts (a seeded sample of the bundled tweets' test split)
of the same two models — a TF-IDF + logistic-regression pipeline and a tiny BERT
(2 layers, WordPiece tokenizer trained on the tweets), both built here offline — and
both are judged by mlwarden's text threat model (:class:`ThreatModel`: WordNet synonym
or <= 2 character edits per word, at most ``max(int(r*n),1)`` words, no insertion or
deletion) plus a fresh query of the model. TextAttack gets the same word budget as a
``MaxModificationRate`` with our rounding. Reported per model and recipe: valid success
rate (of the clean-correct samples), median queries per valid success, and the wall
time of the whole process (imports and model loading counted on both sides).

mlwarden runs as users run it: ``mlwarden evasion MODEL samples.jsonl
--save-adversarial out.jsonl`` (default recipes: ``combined``; ``hotflip`` then
``combined`` on the white-box BERT). TextAttack runs the recipes that work offline:
PWWS, DeepWordBug and Pruthi (the others fetch embeddings, language models or USE).

TextAttack lives in its own venv (its pins clash with ours): ``--setup`` creates
``.venv-textattack`` (textattack without its dependency resolver, which backtracks for
an hour; flair with the modules it imports; numpy >= 2) and an NLTK data folder with
WordNet (our offline copy) and a stopwords file.

Example::

    python benchmarks/text_vs_textattack.py --setup
    nice -n 10 python benchmarks/text_vs_textattack.py --n 40 --out text.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
# before torch loads (training here): threads sleep at barriers instead of spinning, as the
# mlwarden console script sets it (spinning threads crawl on a loaded machine); TextAttack
# runs with the caller's setting unless --textattack-omp-passive
_OMP_CALLER = os.environ.get("OMP_WAIT_POLICY")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
TA_VENV = Path(os.environ.get("TEXTATTACK_VENV", ROOT / ".venv-textattack"))
RUNNER = Path(__file__).resolve().parent / "_textattack_runner.py"
TA_DEPS = [
    "transformers>=4.30,<5", "datasets>=2.4", "nltk", "pandas", "scipy", "editdistance",
    "lemminflect", "lru-dict", "terminaltables", "tqdm", "word2number", "num2words",
    "more-itertools", "pinyin", "jieba", "OpenHowNet", "Levenshtein", "language_tool_python",
    "scikit-learn", "joblib", "boto3", "deprecated", "segtok", "ftfy", "lxml", "bioc", "gdown",
    "pillow", "conllu", "semver", "sentencepiece", "transformer-smaller-training-vocab",
    "langdetect", "bert-score", "numpy>=2",
]  # fmt: skip


def setup(nltk_dir: Path) -> None:
    """Create TextAttack's venv and the NLTK data it reads (see the module docs)."""
    pip = [str(TA_VENV / "bin" / "pip"), "install", "--quiet"]
    if not (TA_VENV / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(TA_VENV)], check=True)
    subprocess.run([*pip, "torch==2.13.0"], check=True)
    subprocess.run([*pip, "--no-deps", "textattack==0.3.11", "flair==0.14.0"], check=True)
    subprocess.run([*pip, *TA_DEPS], check=True)
    _nltk_data(nltk_dir)


def _nltk_data(nltk_dir: Path) -> None:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    from mlwarden.evasion.text.wordnet import wordnet

    wn_root = Path(wordnet().root.path)  # our CR-free WordNet 3.0 copy
    (nltk_dir / "corpora" / "stopwords").mkdir(parents=True, exist_ok=True)
    if not (nltk_dir / "corpora" / "wordnet").exists():
        shutil.copytree(wn_root, nltk_dir / "corpora" / "wordnet")
    (nltk_dir / "corpora" / "stopwords" / "english").write_text(
        "\n".join(sorted(ENGLISH_STOP_WORDS)) + "\n"
    )


def build_models(cache: Path) -> dict[str, Path]:
    """The two models, built once into ``cache`` (same seeds every time)."""
    import joblib

    from mlwarden.core.data import load_dataset
    from mlwarden.core.textmodels import tfidf_pipeline, tiny_transformer

    cache.mkdir(parents=True, exist_ok=True)
    train, _ = load_dataset("tweets").split(0.2, 0)
    pipe_path, bert = cache / "tfidf-logreg.joblib", cache / "tiny-bert"
    if not pipe_path.exists():
        joblib.dump(tfidf_pipeline(train.x, train.y), pipe_path)
    if not (bert / "model.safetensors").exists():
        k = np.random.default_rng(0).permutation(len(train))[:12000]
        tiny_transformer(train.x[k], train.y[k], bert, epochs=3)
    return {"tfidf-logreg": pipe_path, "tiny-bert": bert}


def samples(n: int, path: Path) -> list[dict[str, Any]]:
    from mlwarden.core.data import load_dataset

    _, test = load_dataset("tweets").split(0.2, 0)
    idx = np.random.default_rng(0).choice(len(test), n, replace=False)
    rows = [
        {"index": k, "text": str(test.x[i]), "label": int(test.y[i])} for k, i in enumerate(idx)
    ]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return rows


def _timed(
    cmd: list[str], env: dict[str, str] | None = None, timeout: float | None = None
) -> tuple[float, bool]:
    """Wall seconds of ``cmd`` and whether it finished within ``timeout``."""
    full = {**os.environ, **(env or {})}
    if env is not None and env.get("OMP_WAIT_POLICY") is None:  # the caller's, or none
        full.pop("OMP_WAIT_POLICY", None)
        if _OMP_CALLER is not None:
            full["OMP_WAIT_POLICY"] = _OMP_CALLER
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=full, timeout=timeout)
    except subprocess.TimeoutExpired:
        return time.perf_counter() - start, False
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[1]} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return wall, True


def judge(
    model: Any, rows: list[dict[str, Any]], adv: dict[int, tuple[str, int]], r: float
) -> dict[str, Any]:
    """Valid success rate and median queries under our threat model and a fresh query."""
    from mlwarden.evasion.text.threat import ThreatModel

    tm = ThreatModel(max_change=r)
    texts = [row["text"] for row in rows]
    y = np.asarray([row["label"] for row in rows])
    correct = model.predict_labels(texts) == y
    valid, queries, invalid = [], [], 0
    cand = [k for k in adv if correct[k]]
    fresh = model.predict_labels([adv[k][0] for k in cand]) if cand else []
    for k, p in zip(cand, fresh, strict=True):
        if tm.check(texts[k], adv[k][0]).ok and p != y[k]:
            valid.append(k)
            queries.append(adv[k][1])
        else:
            invalid += 1
    n_ok = int(correct.sum())
    return {"clean_correct": n_ok, "valid_success": len(valid),
            "success_rate": len(valid) / n_ok if n_ok else 0.0,
            "queries_median": float(np.median(queries)) if queries else None,
            "claimed_but_invalid": invalid,
            "valid_queries": {str(k): q for k, q in zip(valid, queries, strict=True)}}  # fmt: skip


def run_ours(
    model: Path, data: Path, work: Path, r: float, n: int
) -> tuple[float, dict[int, tuple[str, int]]]:
    out, rep = work / "ours.jsonl", work / "ours.json"
    cmd = [str(ROOT / ".venv" / "bin" / "mlwarden"), "evasion", str(model), str(data), "--limit",
           str(n), "--max-change", str(r), "--save-adversarial", str(out), "--json", str(rep), "-q"]  # fmt: skip
    wall, _ = _timed(cmd)
    rows = [json.loads(line) for line in out.read_text("utf-8").split("\n") if line]
    return wall, {row["index"]: (row["adversarial"], row["queries"]) for row in rows}


def run_textattack(
    model: Path,
    recipe: str,
    data: Path,
    work: Path,
    r: float,
    nltk_dir: Path,
    timeout: float | None = None,
    env: dict[str, str] | None = None,
) -> tuple[float, dict[int, tuple[str, int]], int]:
    """Wall seconds, successes ``{index: (text, queries)}`` and the samples finished (all of
    them unless ``timeout`` stopped the run)."""
    out = work / f"ta-{recipe}.jsonl"
    out.unlink(missing_ok=True)
    cmd = [str(TA_VENV / "bin" / "python"), str(RUNNER), str(model), recipe, str(data), str(out),
           str(r), str(nltk_dir)]  # fmt: skip
    env = {"NLTK_DATA": str(nltk_dir), "TOKENIZERS_PARALLELISM": "false", **(env or {})}
    wall, _ = _timed(cmd, env, timeout)
    adv, done = {}, 0
    lines = out.read_text("utf-8").split("\n") if out.exists() else []
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # the line being written when the timeout struck
            continue
        done += 1
        if row["status"] == "SuccessfulAttackResult":
            adv[row["index"]] = (row["adversarial"], row["queries"])
    return wall, adv, done


def table(results: list[dict[str, Any]]) -> str:
    """The results as the Markdown rows of ``docs/benchmarks/text.md``."""
    out = ["| model | attack | valid successes / clean-correct | median queries (own successes) "
           "| median queries on samples both broke (ours vs theirs) | wall s | claimed but invalid |",
           "|---|---|---|---|---|---|---|"]  # fmt: skip
    ours = {r["model"]: r for r in results if r["tool"] == "mlwarden"}
    for r in results:
        name = "mlwarden default" if r["tool"] == "mlwarden" else f"TextAttack {r['recipe']}"
        if "error" in r:
            out.append(f"| {r['model']} | {name} | failed: {r['error'][:80]} | | | | |")
            continue
        both = "—"
        mine = ours.get(r["model"], {}).get("valid_queries", {})
        common = sorted(set(mine) & set(r["valid_queries"])) if r["tool"] != "mlwarden" else []
        if common:
            a = np.median([mine[k] for k in common])
            b = np.median([r["valid_queries"][k] for k in common])
            both = f"{a:g} vs {b:g} ({len(common)} samples)"
        done = r.get("finished")
        cut = f" (stopped: {done} samples finished)" if done is not None and done < r.get(
            "n", done) else ""  # fmt: skip
        out.append(f"| {r['model']} | {name} | {r['valid_success']}/{r['clean_correct']} = "
                   f"{r['success_rate']:.1%}{cut} | {r['queries_median']} | {both} | "
                   f"{r['wall_s']:.0f} | {r['claimed_but_invalid']} |")  # fmt: skip
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--setup", action="store_true", help="create TextAttack's venv and exit")
    ap.add_argument("--n", type=int, default=40, help="texts attacked per model")
    ap.add_argument("--max-change", type=float, default=0.2)
    ap.add_argument("--recipes", default="pwws,deepwordbug,pruthi")
    ap.add_argument("--models", default="tfidf-logreg,tiny-bert")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/mlwarden-text-bench"))
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--skip-ours", action="store_true", help="run only TextAttack")
    ap.add_argument(
        "--textattack-omp-passive",
        action="store_true",
        help="give TextAttack OMP_WAIT_POLICY=PASSIVE too (mlwarden sets it itself)",
    )
    ap.add_argument("--timeout", type=float, default=None,
                    help="seconds per TextAttack recipe; a stopped run is judged on the "
                    "samples it finished")  # fmt: skip
    ap.add_argument("--table", type=Path, nargs="+", help="print the rows of these --out files")
    args = ap.parse_args()
    if args.table:
        print(table([r for p in args.table for r in json.loads(p.read_text())]))
        return
    nltk_dir = args.cache / "nltk_data"
    if args.setup:
        setup(nltk_dir)
        return
    _nltk_data(nltk_dir)
    from mlwarden.supplychain.loader import load_target

    models = build_models(args.cache)
    data = args.cache / f"samples-{args.n}.jsonl"
    rows = samples(args.n, data)
    results: list[dict[str, Any]] = []
    for name in args.models.split(","):
        target = load_target(str(models[name]))
        work = args.cache / f"work-{name}"
        work.mkdir(exist_ok=True)
        if not args.skip_ours:
            wall, adv = run_ours(models[name], data, work, args.max_change, args.n)
            results.append(
                {"model": name, "tool": "mlwarden", "recipe": "default", "wall_s": wall}
                | judge(target, rows, adv, args.max_change)
            )
            print(json.dumps(results[-1]), flush=True)
        if args.out:
            args.out.write_text(json.dumps(results, indent=1))
        for recipe in args.recipes.split(","):
            head = {"model": name, "tool": "textattack", "recipe": recipe}
            env = {"OMP_WAIT_POLICY": "PASSIVE"} if args.textattack_omp_passive else None
            if env:
                head["env"] = env
            try:
                wall, adv, done = run_textattack(models[name], recipe, data, work,
                                                 args.max_change, nltk_dir, args.timeout, env)  # fmt: skip
            except RuntimeError as exc:
                results.append(head | {"error": str(exc)})
            else:
                # a run stopped by --timeout is judged on the samples it finished
                results.append(head | {"wall_s": wall, "finished": done, "n": args.n}
                               | judge(target, rows[:done], adv, args.max_change))  # fmt: skip
            print(json.dumps(results[-1]), flush=True)
        if args.out:
            args.out.write_text(json.dumps(results, indent=1))
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
