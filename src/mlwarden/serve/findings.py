"""Audit a gateway config: what an attacker with API access could get away with.

:func:`gateway_config_report` reads ``gateway.yaml`` (the same file ``mlwarden serve``
uses) and reports MLW-GW-* findings mapped to ATLAS AML.T0040 (AI Model Inference
API Access), AML.T0024 (Exfiltration via AI Inference API) and AML.T0043.001
(Black-Box Optimization), with the mitigations AML.M0019, AML.M0004, AML.M0002,
AML.M0015, AML.M0010 and AML.M0024. A config that cannot be parsed is an error
(:class:`~mlwarden.core.errors.InputFileError`), never a clean report.

Rules:

========== ======================================================= ================
rule       finding                                                 severity
========== ======================================================= ================
MLW-GW-001 anonymous callers may query the model                   high
MLW-GW-002 callers without a rate limit                            high/medium
MLW-GW-003 callers without a query budget                          medium
MLW-GW-004 full-precision scores to anonymous / low-privilege keys high/medium
MLW-GW-005 no stateful attack detection                            medium
MLW-GW-006 detection only logs (no throttle or block)              low
MLW-GW-007 no declared input schema (shape / value range)          medium
MLW-GW-008 no input restoration                                    low
MLW-GW-009 audit logging disabled                                  medium
MLW-GW-010 config file writable (high) or readable (low) by others high/low
MLW-GW-011 limits or body size under which valid batches never pass medium
MLW-GW-012 only detectors that per-query noise defeats              medium
MLW-GW-014 enabled detectors whose settings never let them flag     medium
MLW-GW-015 detectors flag a benign stream of the sample (``--data``)  medium/low
MLW-GW-016 keys whose declared profile excuses a kind of search      low
MLW-GW-017 action throttle on callers without a rate limit          medium
MLW-GW-018 rules off in this deployment (uncalibrated, this input)  low
========== ======================================================= ================
"""

from __future__ import annotations

import math
import stat
from pathlib import Path

from mlwarden.core.findings import Finding, Report, Severity
from mlwarden.serve.config import GatewayConfig, load_config

CHECK = "gateway-config"


def _callers(cfg: GatewayConfig) -> list[tuple[str, str, float | None, int | None]]:
    """(name, role, effective rate, effective budget) of every caller that may predict."""
    roles = cfg.all_roles()
    d = cfg.limits
    out = []
    for name, k in cfg.keys.items():
        if roles[k.role].predict:
            rate = k.rate if k.rate is not None else d.rate
            out.append((name, k.role, rate, k.budget if k.budget is not None else d.budget))
    a = cfg.anonymous
    if a is not None and roles[a.role].predict:
        rate = a.rate if a.rate is not None else d.rate
        out.append(("(anonymous)", a.role, rate, a.budget if a.budget is not None else d.budget))
    return out


def gateway_config_findings(cfg: GatewayConfig, path: Path | None = None) -> list[Finding]:
    """The findings for a parsed config (``path`` adds the file-permission check)."""
    art = str(path) if path is not None else "gateway config"
    roles = cfg.all_roles()
    callers = _callers(cfg)
    found: list[Finding] = []

    def add(
        rule: str,
        title: str,
        sev: Severity,
        atlas: list[str],
        mit: list[str],
        desc: str,
        rec: str,
        **ev: object,
    ) -> None:
        found.append(
            Finding(
                rule=rule,
                title=title,
                severity=sev,
                atlas=atlas,
                mitigations=mit,
                description=desc,
                recommendation=rec,
                evidence=dict(ev),
                artifact=art,
                check=CHECK,
                owasp=["ML05"],
            )
        )

    anon = cfg.anonymous
    if anon is not None and roles[anon.role].predict:
        add(
            "MLW-GW-001",
            "Anonymous callers may query the model",
            Severity.HIGH,
            ["AML.T0040"],
            ["AML.M0019"],
            "Requests without an API key are answered, so nobody can be held to a limit or blocked: "
            "a blocked attacker simply comes back without a key.",
            "Remove 'anonymous:' from the config and give every client its own key "
            "('mlwarden gateway add-key NAME --config gateway.yaml').",
            role=anon.role,
        )

    no_rate = [n for n, _, rate, _ in callers if rate is None]
    if no_rate:
        sev = Severity.HIGH if "(anonymous)" in no_rate else Severity.MEDIUM
        add(
            "MLW-GW-002",
            f"{len(no_rate)} caller(s) have no rate limit",
            sev,
            ["AML.T0040", "AML.T0024"],
            ["AML.M0004"],
            "Without a token-bucket rate a caller can send queries as fast as the server answers: "
            "query-based evasion and extraction attacks need thousands of queries.",
            "Set 'limits: {rate: ..., burst: ...}' (queries per second) or per-key 'rate'.",
            callers=no_rate,
        )

    no_budget = [n for n, _, _, budget in callers if budget is None]
    if no_budget:
        add(
            "MLW-GW-003",
            f"{len(no_budget)} caller(s) have no query budget",
            Severity.MEDIUM,
            ["AML.T0024.002"],
            ["AML.M0004"],
            "A rate limit alone still allows an unbounded number of queries over days; model "
            "extraction attacks are budgeted in total queries.",
            "Set 'limits: {budget: ..., window_s: ...}' (queries per window) or per-key 'budget'.",
            callers=no_budget,
        )

    full = [(n, r) for n, r, _, _ in callers if roles[r].output.mode == "none"]
    if full:
        anon_full = any(n == "(anonymous)" for n, _ in full)
        low = [n for n, r in full if r != "admin"]
        if anon_full or low:
            add(
                "MLW-GW-004",
                "Full-precision probabilities returned to "
                + ("anonymous callers" if anon_full else "non-admin keys"),
                Severity.HIGH if anon_full else Severity.MEDIUM,
                ["AML.T0024.002", "AML.T0043.001"],
                ["AML.M0002"],
                "Every digit of every score helps score-based evasion (Square, NES) and model "
                "extraction (Tramer et al. 2016, arXiv:1609.02943).",
                "Give these callers a role with output mode 'label-only', 'top-k' or 'round' "
                "(e.g. the built-in 'labels' or 'scores' roles).",
                callers=[n for n, _ in full],
            )

    det = cfg.detection
    if not (det.blacklight.enabled or det.similarity.enabled or det.prada.enabled):
        add(
            "MLW-GW-005",
            "No stateful attack detection",
            Severity.MEDIUM,
            ["AML.T0043.001", "AML.T0024.002"],
            ["AML.M0015"],
            "Query-based attacks send long streams of near-duplicate or synthetic inputs that no "
            "single-request check sees.",
            "Enable 'detection: {similarity: {enabled: true}, blacklight: {enabled: true}, "
            "prada: {enabled: true}}'.",
        )
    elif det.action == "log":
        add(
            "MLW-GW-006",
            "Attack detection only logs",
            Severity.LOW,
            ["AML.T0043.001"],
            ["AML.M0015"],
            "A flagged key keeps its full rate, so an attack completes while alerts pile up.",
            "Set 'detection: {action: throttle}' or 'block'.",
        )

    if (
        det.action == "throttle"
        and no_rate
        and (det.blacklight.enabled or det.similarity.enabled or det.prada.enabled)
    ):
        add(
            "MLW-GW-017",
            f"Throttling cannot slow {len(no_rate)} caller(s) without a rate limit",
            Severity.MEDIUM,
            ["AML.T0043.001"],
            ["AML.M0015", "AML.M0004"],
            "'action: throttle' scales a flagged key's rate limit down; a caller without one "
            "keeps its full speed, so a search it runs completes while alerts pile up.",
            "Give these callers a rate ('limits: {rate: ..., burst: ...}' or per-key 'rate'), "
            "or set 'detection: {action: block}'.",
            callers=no_rate,
        )

    if (det.blacklight.enabled or det.prada.enabled) and not det.similarity.enabled:
        add(
            "MLW-GW-012",
            "Attack detection that per-query noise defeats",
            Severity.MEDIUM,
            ["AML.T0043.001"],
            ["AML.M0015"],
            "Blacklight's hashes change when an attacker adds fresh noise to every query (Feng "
            "et al. 2023, arXiv:2303.06280) and PRADA watches extraction, not evasion: a noisy "
            "random search runs undetected.",
            "Enable 'detection: {similarity: {enabled: true}}'.",
        )

    problems = unworkable_limits(cfg)
    if problems:
        add(
            "MLW-GW-011",
            f"{len(problems)} setting(s) that cannot work",
            Severity.MEDIUM,
            ["AML.T0040"],
            ["AML.M0004"],
            "Requests the schema allows are refused every time: " + "; ".join(problems) + ".",
            "Make every caller's burst and budget at least input.max_batch, and "
            "input.max_body_bytes large enough for a full batch (or lower max_batch).",
            problems=problems,
        )

    silent = silent_detectors(cfg)
    if silent:
        add(
            "MLW-GW-014",
            f"{len(silent)} detector setting(s) under which the detector never flags",
            Severity.MEDIUM,
            ["AML.T0043.001", "AML.T0024.002"],
            ["AML.M0015"],
            "Detection is switched on but cannot fire: " + "; ".join(silent) + ".",
            "Run 'mlwarden gateway calibrate' on benign inputs of this deployment, or fix the "
            "settings named above.",
            problems=silent,
        )

    off = off_rules(cfg)
    if off:
        add(
            "MLW-GW-018",
            f"{len(off)} detection rule(s) off in this deployment",
            Severity.LOW,
            ["AML.T0043.001", "AML.T0024.002"],
            ["AML.M0015"],
            "The searches these rules flag run past them unseen: " + "; ".join(off) + ".",
            "Run 'mlwarden gateway calibrate' on benign inputs of this deployment and declare "
            "input.shape; switch a rule off only knowing the attack it leaves to the others.",
            problems=off,
        )

    profiled = {n: k.profile for n, k in cfg.keys.items() if k.profile is not None}
    if profiled:
        from mlwarden.serve.profiles import PROFILES

        risks = [f"{n} ({p}): {PROFILES[p][1]}" for n, p in sorted(profiled.items())]
        add(
            "MLW-GW-016",
            f"{len(profiled)} key(s) with a declared workload profile the detectors excuse",
            Severity.LOW,
            ["AML.T0043.001"],
            ["AML.M0024"],
            "A profile tells the stream detectors a key's benign workload (a fixed camera) so "
            "its queries are not flagged as a search; the searches shaped like that workload "
            "go unflagged on that key: " + "; ".join(risks) + ".",
            "Declare a profile only on keys of that workload (a camera's own key), keep their "
            "budgets tight, and remove the profile ('keys.NAME.profile') from any other key.",
            keys=risks,
        )

    schema = cfg.input
    missing = [n for n, v in (("shape", schema.shape), ("range", schema.range)) if v is None]
    if missing and schema.modality != "text":  # texts are bounded by max_chars instead
        add(
            "MLW-GW-007",
            f"No declared input {' or '.join(missing)}",
            Severity.MEDIUM,
            ["AML.T0043"],
            ["AML.M0015"],
            "Inputs of any shape or value range reach the model; out-of-range values are an easy "
            "way to push a model off its training distribution.",
            "Set 'input: {shape: [...], range: [low, high]}' or pass --input-shape/--input-range.",
            missing=missing,
        )

    if not cfg.restoration:
        add(
            "MLW-GW-008",
            "No input restoration",
            Severity.LOW,
            ["AML.T0015"],
            ["AML.M0010"],
            "Inputs reach the model unchanged. Restoration transforms raise the cost of small "
            "perturbations but are broken by adaptive attacks; measure them with 'mlwarden evasion'.",
            # text takes the normalisation chain; the tensor steps do not apply to it
            "Add 'restoration: [{type: nfkc}, {type: strip_invisible}, {type: fold_homoglyphs}]' "
            "and measure it with 'mlwarden evasion --normalise'."
            if cfg.input.modality == "text"
            else "Add e.g. 'restoration: [{type: bit_depth, bits: 4}]' and evaluate it adaptively.",
        )

    if not cfg.audit.enabled:
        add(
            "MLW-GW-009",
            "Audit logging is disabled",
            Severity.MEDIUM,
            ["AML.T0040"],
            ["AML.M0024"],
            "Without a per-request log there is no way to investigate who queried what.",
            "Set 'audit: {enabled: true}'.",
        )

    if path is not None and path.exists():
        mode = path.stat().st_mode
        if mode & (stat.S_IWGRP | stat.S_IWOTH):
            add(
                "MLW-GW-010",
                "Gateway config is writable by other users",
                Severity.HIGH,
                ["AML.T0040"],
                ["AML.M0019"],
                "Anyone who can write the file can add their own key or lift every limit.",
                f"chmod 600 {path}",
                mode=oct(mode & 0o777),
            )
        elif mode & (stat.S_IRGRP | stat.S_IROTH):
            add(
                "MLW-GW-010",
                "Gateway config is readable by other users",
                Severity.LOW,
                ["AML.T0040"],
                ["AML.M0019"],
                "The file holds key hashes and limits; keep it private.",
                f"chmod 600 {path}",
                mode=oct(mode & 0o777),
            )
    return found


def unworkable_limits(cfg: GatewayConfig) -> list[str]:
    """Settings under which requests the input schema accepts can never succeed.

    A token bucket smaller than a batch (``burst`` < ``input.max_batch``; without a
    burst the bucket holds ``ceil(rate)``) refuses every batch larger than it with 429,
    forever; so does a budget smaller than a batch; and a body limit below the smallest
    JSON a full batch of the declared shape can take (two bytes a value) refuses it
    with 413. ``mlwarden gateway add-key``'s defaults (burst 20, max_batch 64) were one.
    """
    m = cfg.input.max_batch
    d = cfg.limits
    callers = [(f"key {n!r}", k.rate, k.burst, k.budget) for n, k in cfg.keys.items()]
    if cfg.anonymous is not None:
        a = cfg.anonymous
        callers.append(("anonymous", a.rate, a.burst, a.budget))
    out = []
    for who, rate, burst, budget in callers:
        rate = rate if rate is not None else d.rate
        burst = burst if burst is not None else d.burst
        budget = budget if budget is not None else d.budget
        bucket = burst if burst is not None else max(1, math.ceil(rate or 1))
        if rate is not None and bucket < m:
            out.append(
                f"{who}: burst {bucket} < input.max_batch {m}, "
                f"so batches of {bucket + 1}-{m} inputs always get 429"
            )
        if budget is not None and budget < m:
            out.append(f"{who}: budget {budget} < input.max_batch {m}")
    if cfg.input.modality == "text":
        # a full batch of texts of max_chars ASCII characters, quoted, comma-separated
        smallest = m * (cfg.input.max_chars + 3) - 1 + len('{"inputs": []}')
        if smallest > cfg.input.max_body_bytes:
            out.append(
                f"a batch of {m} texts of input.max_chars {cfg.input.max_chars} needs at least "
                f"{smallest} bytes of JSON > input.max_body_bytes {cfg.input.max_body_bytes}"
            )
    elif cfg.input.modality == "audio" and cfg.input.shape is not None:
        # one upload a request: a full-length 16-bit PCM WAV (44-byte header)
        frames = cfg.input.shape[-1]
        smallest = 44 + 2 * frames
        if smallest > cfg.input.max_body_bytes:
            out.append(
                f"a 16-bit WAV of {frames} frames (input.shape) needs {smallest} bytes "
                f"> input.max_body_bytes {cfg.input.max_body_bytes}"
            )
    elif cfg.input.shape is not None:
        smallest = m * math.prod(cfg.input.shape) * 2 + len('{"inputs": []}')
        if smallest > cfg.input.max_body_bytes:
            out.append(
                f"a batch of {m} inputs of shape {cfg.input.shape} needs at least "
                f"{smallest} bytes of JSON > input.max_body_bytes {cfg.input.max_body_bytes}"
            )
    return out


def silent_detectors(cfg: GatewayConfig) -> list[str]:
    """Enabled detectors whose settings mean they can never flag a query.

    Blacklight matches a query when ``threshold`` of its window hashes recur, but an
    input of ``n`` values has only ``n - window + 1`` windows (and keeps ``top``
    hashes): a 30-feature table at the defaults (windows of 20, threshold 20) has 11,
    so Blacklight is silently off there. Similarity counts neighbours among at most
    ``min(window, history)`` queries; PRADA tests once ``min_queries`` distances are
    kept of at most ``history``; the dilution test reads the similarity history.

    Example::

        silent_detectors(parse_config("input: {shape: [30]}"))
        # ['blacklight: an input of 30 values has 11 windows of 20 values, ...']
    """
    det = cfg.detection
    out = []
    bl = det.blacklight
    if bl.enabled:
        if bl.threshold > bl.top:
            out.append(f"blacklight.threshold {bl.threshold} > blacklight.top {bl.top} (hashes "
                       "kept a query), so no two queries ever share enough")  # fmt: skip
        if cfg.input.shape is not None and cfg.input.modality == "tensor":
            n = math.prod(cfg.input.shape)
            w = min(bl.window, n)
            if n - w + 1 < bl.threshold <= bl.top:
                out.append(f"blacklight: an input of {n} values has {n - w + 1} windows of {w} "
                           f"values, fewer hashes than blacklight.threshold {bl.threshold}, so "
                           "it never matches (lower blacklight.window or threshold)")  # fmt: skip
    sim = det.similarity
    if sim.enabled:
        recent = min(sim.window, sim.history)
        whole = sim.long_neighbours is not None and sim.long_neighbours <= sim.history
        if sim.min_neighbours > recent and not whole:
            out.append(f"similarity.min_neighbours {sim.min_neighbours} > the {recent} queries "
                       "it is counted over (similarity.window, history)")  # fmt: skip
    dil = det.dilution
    if dil.enabled and not sim.enabled:
        out.append("dilution is enabled but reads the similarity history, which is disabled")
    elif dil.enabled and dil.min_neighbours > sim.history:
        out.append(f"dilution.min_neighbours {dil.min_neighbours} > similarity.history "
                   f"{sim.history}")  # fmt: skip
    ck = det.crosskey  # off with similarity: it counts the similarity detector's vectors
    if ck.enabled and sim.enabled and (ck.min_neighbours or sim.min_neighbours) > ck.kept:
        out.append(f"crosskey: {ck.min_neighbours or sim.min_neighbours} neighbours needed "
                   f"among the {ck.kept} queries of crosskey.kept")  # fmt: skip
    pr = det.prada
    if pr.enabled and pr.min_queries > pr.history:
        out.append(f"prada.min_queries {pr.min_queries} > prada.history {pr.history} "
                   "(distances kept), so the normality test never runs")  # fmt: skip
    return out


def off_rules(cfg: GatewayConfig) -> list[str]:
    """Detection rules that do not run in this deployment, each with what goes unflagged.

    Some rules need ``gateway calibrate`` (the table rule ``manifold``: its axes; the
    diluted-search test ``dilution``), some a declared ``input.shape`` (query blinding
    on images), some run on certain inputs only (``spread``: tensors whose reduced
    vectors have 64 values or more); a detector may also be switched off. The monitor
    says nothing when a rule is off, so the operator learns it here (MLW-GW-018).
    Nothing is listed when every detector is off (MLW-GW-005 says so).

    Example::

        off_rules(parse_config("input: {shape: [30]}"))
        # ['manifold: off until ...', 'dilution: off until ...', 'spread: off ...']
    """
    det, inp = cfg.detection, cfg.input
    sim = det.similarity
    if not (det.blacklight.enabled or sim.enabled or det.prada.enabled):
        return []
    out = [f"{name}: switched off ({name}.enabled false)"
           for name in ("blacklight", "similarity", "prada") if not getattr(det, name).enabled]  # fmt: skip
    out += _uncalibrated(cfg)
    if sim.enabled and det.spread.enabled:
        dims = _reduced(cfg)
        if inp.modality != "tensor":
            out.append(f"spread: not run on {inp.modality} inputs (a key working on one input "
                       "answers to the similarity count alone)")  # fmt: skip
        elif dims is not None and dims < 64:
            out.append(f"spread: the reduced vectors have {dims} values, under the 64 its "
                       "white-noise test needs (a key working on one input answers to the "
                       "similarity count alone)")  # fmt: skip
    if det.prada.enabled and det.prada.blinding and inp.modality == "tensor" and not inp.shape:
        out.append("prada.blinding: off until input.shape is declared (query blinding: many "
                   "renderings of one image answer to PRADA alone)")  # fmt: skip
    if det.crosskey.enabled and not sim.enabled:
        out.append("crosskey: off with similarity (one search spread over several keys)")
    return out


def _uncalibrated(cfg: GatewayConfig) -> list[str]:
    """:func:`off_rules`' rules that ``gateway calibrate`` turns on (or found no use for)."""
    det, inp = cfg.detection, cfg.input
    sim, out = det.similarity, []
    shape = inp.shape
    table = inp.modality == "tensor" and shape is not None and len(shape) == 1
    table = table and math.prod(shape or [0]) <= sim.max_dims
    if table and det.manifold.axes is None:
        why = "switched off" if not det.manifold.enabled else (
            "off until 'gateway calibrate' sets manifold.axes from benign rows (it leaves it "
            "off where the features are not correlated enough)")  # fmt: skip
        out.append(f"manifold (tables): {why}; noise a search adds off the rows' manifold is "
                   "judged by the similarity count alone")  # fmt: skip
    elif table and det.manifold.enabled and det.manifold.centre is None:
        out.append("manifold.centre: unset (a config calibrated before session 14), so the "
                   "window of a key's rows off the data is off until 'gateway calibrate' is "
                   "re-run; a search diluted among benign rows is judged by the last "
                   f"{det.manifold.window} rows alone")  # fmt: skip
    if sim.enabled and not det.dilution.enabled and sim.long_neighbours is None:
        out.append(f"dilution: off until 'gateway calibrate' enables it; a search diluted below "
                   f"similarity.min_neighbours {sim.min_neighbours} per {sim.window} queries "
                   "among benign ones has no test of its own")  # fmt: skip
    return out


def _reduced(cfg: GatewayConfig) -> int | None:
    """Values of the similarity detector's vectors (projected, if so), None: not known."""
    sim, shape = cfg.detection.similarity, cfg.input.shape
    if sim.projection is not None:
        return len(sim.projection.components)
    return None if shape is None else min(math.prod(shape), sim.max_dims)


ORDERS = 3  # random orders of the sample replayed by benign_alerts


def benign_alerts(cfg: GatewayConfig, x: object, y: object, seed: int = 0,
                  limit: int = 1000) -> list[str]:  # fmt: skip
    """Where the configured detectors flag a benign client sending the sample's distinct
    inputs ``x`` (classes ``y``; ``None``: calibrate's stand-in), one a request, in
    :data:`ORDERS` random orders (at most ``limit`` each): one line per order that is
    flagged, with the query and the detectors. The monitor is built as ``mlwarden
    serve`` builds it, so with ``action: block`` each line is a benign key blocked.

    Example: ``benign_alerts(load_config(p), x, y)`` -> ``["order 1: query 21 (similarity)"]``.
    """
    import numpy as np

    from mlwarden.serve.calibrate import _labels
    from mlwarden.serve.monitor import Monitor

    xs = np.asarray(x)
    text = cfg.input.modality == "text"
    labels = np.zeros(len(xs), np.int64) if text and y is None else y
    labels = _labels(xs) if labels is None else np.asarray(labels)
    lo, hi = cfg.input.range or (0.0, 1.0)
    det = cfg.detection.model_copy(update={"batch": 1})  # each query's alert at once
    mon = Monitor(det, cfg.input.shape, scale=hi - lo, modality=cfg.input.modality)
    mon.crosskey = None  # one key per stream, replayed in turn: not one gateway's traffic
    sim = det.similarity
    rng = np.random.default_rng(seed)
    out = []
    for k in range(ORDERS):
        p = rng.permutation(len(xs))[:limit]
        for i, j in enumerate(p):
            q = xs[j : j + 1]
            if text:
                from mlwarden.serve.text import text_features

                q = text_features(q, sim.max_dims, sim.radius, sim.near)
            found = mon.inspect(f"benign-{k}", q, labels[j : j + 1])
            if found:
                out.append(f"order {k + 1}: query {i + 1} of {len(p)} ({'+'.join(sorted(found))})")
                break
    return out


def _benign_finding(cfg: GatewayConfig, data: str, alerts: list[str]) -> Finding:
    block = cfg.detection.action != "alert"
    what = "blocks" if cfg.detection.action == "block" else "flags"
    return Finding(
        rule="MLW-GW-015",
        title=f"The configured detectors {what} a benign client of this deployment",
        severity=Severity.MEDIUM if block else Severity.LOW,
        atlas=["AML.T0040"],
        mitigations=["AML.M0015"],
        description=(
            f"A client sending the distinct inputs of {data} one a request, in random "
            f"orders, is flagged (action {cfg.detection.action}): " + "; ".join(alerts) + ". "
            "Benign users of this deployment would be " + ("cut off." if block else "flagged.")
        ),
        recommendation=(
            "Calibrate the detectors on this data ('mlwarden gateway calibrate CONFIG DATA', "
            "with --model when the data has no labels) and serve the calibrated config."
        ),
        evidence={"orders": ORDERS, "flagged": alerts, "data": data},
        check=CHECK,
    )


def gateway_config_report(config: Path, seed: int = 0, data: str | None = None) -> Report:
    """Audit a gateway config file; a Report with MLW-GW-* findings. ``data`` (benign
    inputs of the deployment, as ``gateway calibrate`` reads them) adds MLW-GW-015 when
    the configured detectors flag a client sending them (:func:`benign_alerts`).

    Example::

        report = gateway_config_report(Path("gateway.yaml"))
        [f.rule for f in report.findings]     # e.g. ['MLW-GW-002', 'MLW-GW-006']
    """
    report = Report.new("gateway check", seed=seed)
    config = Path(config)
    with report.timed(CHECK):
        cfg = load_config(config)
        report.add(*gateway_config_findings(cfg, config))
        if data is not None and (cfg.detection.blacklight.enabled or cfg.detection.similarity.enabled
                                 or cfg.detection.prada.enabled):  # fmt: skip
            from mlwarden.serve.calibrate import _load_inputs

            x, y = _load_inputs(cfg, data)
            alerts = benign_alerts(cfg, x, y, seed)
            if alerts:
                report.add(_benign_finding(cfg, data, alerts))
            report.metrics["benign_orders_flagged"] = len(alerts)
    report.config = {"config": str(config)} | ({"data": data} if data else {})
    report.metrics.update(
        {
            "keys": len(cfg.keys),
            "anonymous": cfg.anonymous is not None,
            "detection_action": cfg.detection.action,
        }
    )
    return report
