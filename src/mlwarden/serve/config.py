"""The gateway's configuration file (``gateway.yaml``): schema, loading, saving.

One YAML file says who may call the model (hashed API keys and their roles), how
much (token-bucket rate and query budget per key), what an input must look like,
which input restoration and output hardening apply, how queries are monitored and
where the audit log goes. ``mlwarden gateway add-key`` creates and edits it;
:func:`mlwarden.serve.gateway_config_report` audits it.

Units: ``rate`` in queries (single inputs) per second, ``burst`` in queries,
``budget`` in queries per ``window_s`` seconds, ``max_body_bytes`` in bytes.

Example::

    input: {shape: [1, 8, 8], range: [0.0, 1.0], max_batch: 64}
    limits: {rate: 20, burst: 40, budget: 10000, window_s: 86400}
    keys:
      alice: {hash: "sha256:9f2c...", role: scores}
    detection: {action: block}
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from mlwarden.core.errors import InputFileError
from mlwarden.defenses.output import MODES

Action = Literal["log", "throttle", "block"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OutputPolicy(_Strict):
    """Output hardening for one role (see :func:`mlwarden.defenses.output.harden_output`)."""

    mode: str = "label-only"
    k: int = Field(default=1, ge=1)
    decimals: int = Field(default=2, ge=0, le=8)

    @field_validator("mode")
    @classmethod
    def _known_mode(cls, value: str) -> str:
        if value not in MODES:
            raise ValueError(f"unknown output mode {value!r}; expected one of {', '.join(MODES)}")
        return value


class Role(_Strict):
    """What a key with this role may do."""

    predict: bool = True
    metrics: bool = False
    output: OutputPolicy = Field(default_factory=OutputPolicy)


def default_roles() -> dict[str, Role]:
    """Built-in roles: least privilege first. A config's ``roles`` overrides them by name."""
    return {
        "labels": Role(output=OutputPolicy(mode="label-only")),
        "scores": Role(output=OutputPolicy(mode="round", decimals=2)),
        "admin": Role(metrics=True, output=OutputPolicy(mode="none")),
        "metrics": Role(predict=False, metrics=True),
    }


class Limits(_Strict):
    """Query limits. ``None`` means unlimited (and the config audit reports it)."""

    rate: float | None = Field(default=None, gt=0, description="queries per second")
    burst: int | None = Field(default=None, ge=1, description="bucket size, queries")
    budget: int | None = Field(default=None, ge=1, description="queries per window")
    window_s: float = Field(default=86400.0, gt=0, description="budget window, seconds")


class KeyEntry(_Strict):
    """One API key: only its hash is stored."""

    hash: str
    role: str = "labels"
    rate: float | None = Field(default=None, gt=0)
    burst: int | None = Field(default=None, ge=1)
    budget: int | None = Field(default=None, ge=1)
    window_s: float | None = Field(default=None, gt=0)
    # An allowance for a client that resends one input with fresh noise (see
    # mlwarden.serve.monitor.Monitor): its similarity threshold and Blacklight chain.
    near_duplicates: int | None = Field(
        default=None, ge=1, description="near-duplicate queries this key may send unflagged"
    )
    # A benign workload the operator declares for this key, and the risk it takes: see
    # mlwarden.serve.profiles (gateway check reports it, MLW-GW-016).
    profile: Literal["camera"] | None = Field(
        default=None, description="the key's declared workload: camera (lighting drifts)"
    )
    created: str = ""

    @field_validator("hash")
    @classmethod
    def _hashed(cls, value: str) -> str:
        algo, _, digest = value.partition(":")
        if (
            algo != "sha256"
            or len(digest) != 64
            or any(c not in "0123456789abcdef" for c in digest)
        ):
            raise ValueError(
                "must be 'sha256:<64 hex digits>' (a key's hash, never the key itself); "
                "create keys with 'mlwarden gateway add-key'"
            )
        return value


class Anonymous(_Strict):
    """Callers without a key. Absent (the default): they get 401."""

    role: str = "labels"
    rate: float | None = Field(default=None, gt=0)
    burst: int | None = Field(default=None, ge=1)
    budget: int | None = Field(default=None, ge=1)
    window_s: float | None = Field(default=None, gt=0)


class InputSchema(_Strict):
    """What one input must look like; requests that differ get 422."""

    modality: str = Field(default="tensor", description="request parser (validate.py)")
    sample_rate: int | None = Field(
        default=None, ge=1000, le=192000, description="audio: the rate (Hz) uploads must have"
    )
    shape: list[int] | None = None
    range: tuple[float, float] | None = None
    dtype: Literal["float32", "float64", "int"] = "float32"
    max_batch: int = Field(default=64, ge=1)
    max_chars: int = Field(default=5000, ge=1, description="text: characters per text")
    max_body_bytes: int = Field(default=1 << 20, ge=64)
    read_timeout_s: float = Field(default=10.0, gt=0, description="to receive the body, s")

    @field_validator("shape")
    @classmethod
    def _positive(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and (not value or any(d < 1 for d in value)):
            raise ValueError(f"every dimension must be >= 1; got {value}")
        return value

    @field_validator("range")
    @classmethod
    def _ordered(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and not value[0] < value[1]:
            raise ValueError(f"must be [low, high] with low < high; got {list(value)}")
        return value


class Blacklight(_Strict):
    """Near-duplicate query detection (Li et al. 2022, arXiv:2006.14042); see monitor.py."""

    enabled: bool = True
    quantization: float = Field(default=0.1, gt=0, description="bin width, input units")
    window: int = Field(default=20, ge=1, description="values per hashed window")
    top: int = Field(default=50, ge=1, description="hashes kept per query")
    threshold: int = Field(default=20, ge=1, description="matching hashes that make a match")
    # A chain: each match with a query at most 64 before it (monitor.Blacklight._chain).
    chain: int = Field(default=3, ge=1, description="chained matches that flag a query")
    # As long as gateway calibrate's benign streams: matches with older queries grew
    # with the stream (digits+shifts 718 per 1,000 at 10,000 under the old chain rule;
    # returning searches are the similarity detector's).
    history: int = Field(default=1000, ge=1, description="queries matches are sought among")
    # Pauses in speech quantise to the same bins in every clip (distinct clips matched).
    silence: float | None = Field(
        default=None,
        ge=0,
        description="windows within +-silence are not hashed (input units); "
        "default: the bin width for audio, 0 (off) otherwise",
    )


class Prada(_Strict):
    """Extraction detection (Juuti et al. 2019, arXiv:1805.02628); see monitor.py."""

    enabled: bool = True
    delta: float = Field(default=0.85, gt=0, lt=1, description="Shapiro-Wilk W alarm level")
    min_queries: int = Field(default=30, ge=3, description="distances before testing")
    history: int = Field(default=5000, ge=3, description="distances kept per key")
    test_every: int = Field(default=10, ge=1, description="queries between normality tests")
    # Juuti et al.'s own code (SSGAalto/prada-protecting-against-dnn-model-stealing-attacks,
    # src/growing_set.py) tests the record without its values 3 std or more from its mean:
    # a class's first distances, measured against a set of one, are such outliers when a
    # labelled folder is walked class by class (W 0.757 at query 180 on digits with them).
    # Image keys only by default: on tables calibrate then kept delta 0.85 from 100 wine
    # rows and 2 of 20 orders of all 178 were flagged (with the outliers: <= 1).
    outliers: float | None = Field(
        default=None,
        ge=0,
        description="distances this many standard deviations or more from the record's "
        "mean are left out of the normality test (0: none); default: 3 on image keys "
        "(inputs of 2 or more dimensions, not audio or text), 0 otherwise",
    )
    # "all": each query is measured against every earlier distinct query of its class
    # (the most recent ``history`` in all); "growing": the paper's Algorithm 1, only the
    # queries that once stepped past the class threshold. Those sets stay tiny (2-15 rows
    # a class on MNIST: max(T, mean - std) rises with the first natural queries), every
    # distance is to a far reference, and Jacobian steps of lambda 0.1 never show (W
    # 0.97-0.99 over 3,000 queries). Text and audio keep "growing": their benign streams
    # were not measured against "all" (tweets with a typo: 13 alarms in 2,000 at 0.85).
    references: Literal["all", "growing"] | None = Field(
        default=None,
        description="what a query's distance is measured against: every earlier distinct "
        "query of its class (all) or the paper's growing set (growing); "
        "default: growing for text and audio, all otherwise",
    )
    # A client resending one input with fresh noise (or a typo) is no extraction: each
    # copy's distance to the first is tiny, and a pile of tiny distances fails the test.
    resend: float | None = Field(
        default=None,
        ge=0,
        description="RMS distance per value (fraction of the input range) under which a "
        "query is a resend of its class's nearest reference and is not recorded; "
        "default: half similarity.radius (text: the radius, shingle Jaccard near)",
    )
    # Query blinding (a search's queries each through a fresh random rotation, zoom,
    # shift, light and noise): image keys count the distinct inputs rendering each
    # query in a view such renderings barely move (serve/blinding.py).
    blinding: bool = Field(
        default=True, description="image keys: flag a query many other inputs render"
    )


class Projection(_Strict):
    """A linear map of the reduced query for the similarity detector (``gateway calibrate``).

    ``(v - mean) @ components.T``: ``components`` are the leading principal axes of the
    deployment's benign inputs (rows of ``len(mean)`` values, orthonormal).
    """

    mean: list[float] = Field(min_length=1)
    components: list[list[float]] = Field(min_length=1)

    @field_validator("components")
    @classmethod
    def _rows(cls, value: list[list[float]]) -> list[list[float]]:
        if len({len(row) for row in value}) != 1:
            raise ValueError("every component must have the same number of values")
        if any(v != v or v in (float("inf"), float("-inf")) for row in value for v in row):
            raise ValueError("components must be finite numbers")
        return value

    @model_validator(mode="after")
    def _fits(self) -> Projection:
        if len(self.components[0]) != len(self.mean):
            raise ValueError(f"components have {len(self.components[0])} values, the mean "
                             f"{len(self.mean)}; they must match")  # fmt: skip
        return self


class FeatureScale(_Strict):
    """Per-feature centre and spread of tabular rows (``gateway calibrate`` learns them).

    The detectors see ``(x - centre) / spread`` per feature, so every radius, bin width
    and noise level means a fraction of each feature's spread rather than of one
    ``input.range``: rows served in raw units ([0, 5000] with most features below 1)
    otherwise put every benign row within a radius of every other.
    """

    centre: list[float] = Field(min_length=1)
    spread: list[float] = Field(min_length=1)

    @model_validator(mode="after")
    def _valid(self) -> FeatureScale:
        if len(self.centre) != len(self.spread):
            raise ValueError(f"centre has {len(self.centre)} values, spread "
                             f"{len(self.spread)}; they must match")  # fmt: skip
        if not all(math.isfinite(v) for v in self.centre):
            raise ValueError("centre values must be finite numbers")
        if not all(math.isfinite(v) and v > 0 for v in self.spread):
            raise ValueError("spread values must be finite numbers > 0")
        return self


class Similarity(_Strict):
    """Near-neighbour count on reduced inputs, robust to per-query noise; see monitor.py."""

    enabled: bool = True
    radius: float = Field(
        default=0.1, gt=0, description="RMS distance per value, fraction of the input range"
    )
    min_neighbours: int = Field(default=20, ge=1, description="neighbours that flag a query")
    history: int = Field(default=10000, ge=1, description="queries remembered per key")
    # Benign neighbours accumulate with the history; a search's cluster in time. The
    # count that meets min_neighbours is taken over the last ``window`` queries; the
    # whole history answers to ``long_neighbours`` (a search spread thin among benign
    # queries), so false alarms measured on ``window``-query streams hold at any length.
    window: int = Field(
        default=1000, ge=1, description="recent queries min_neighbours is counted over"
    )
    long_neighbours: int | None = Field(
        default=None, ge=1, description="neighbours over the whole history that flag a query"
    )
    max_dims: int = Field(default=128, ge=1, description="values kept per reduced query")
    near: float = Field(
        default=0.6, gt=0, lt=1, description="text: shingle Jaccard similarity of neighbours"
    )
    # Tabular rows: isotropic noise spreads over every feature, benign rows differ along
    # a few axes; distances there separate a noisy search from distinct rows.
    projection: Projection | None = Field(
        default=None, description="principal axes the distance is measured along (calibrate)"
    )
    # One input resent with fresh noise is a still ball; a search's centre drifts
    # (serve/stationary.py). On by default for every input (text since session 8).
    stationary: bool | None = Field(
        default=None,
        description="leave still balls of neighbours (noisy resends of one input) "
        "unflagged; default: on for every input",
    )
    # A still ball is excused only when it is still in a secret sketch of the raw input
    # too (serve/sketch.py): the reduction's null space hides no search from the rule.
    sketch: bool = Field(
        default=True,
        description="images and audio: excuse a still ball only when it is still in a "
        "secret sketch of the raw input too",
    )


class Dilution(_Strict):
    """A search spread thin among benign queries: a tight ball; see serve/dilution.py."""

    # Off until ``gateway calibrate`` has checked the deployment's benign inputs: a
    # ratio of counts means something only at a radius fitted to the data.
    enabled: bool = False
    min_neighbours: int = Field(
        default=20, ge=2, description="neighbours over the whole history before the test"
    )
    ratio: float = Field(
        default=0.5, gt=0, le=1, description="count at a radius over the count at twice it"
    )
    # With similarity.projection: the same test off the principal axes (calibrate sets it)
    residual: float | None = Field(
        default=None, gt=0, description="RMS radius per value off the projection's axes"
    )


class Spread(_Strict):
    """A key working on one input: its last distinct queries spread too little; see
    serve/spread.py. Tensors of 64 or more reduced values only (not tables, audio or text)."""

    enabled: bool = True
    window: int = Field(default=50, ge=5, le=1000, description="a key's distinct queries measured")
    # RMS per value of the window's variance, input-range units, as the similarity detector
    # measures (reduced, projected); 8x8 digits: benign windows >= 0.248, 50 digits of one
    # class in a row >= 0.139 (zeros), a search at sigma 0.1 <= 0.096, 0.15 <= 0.129
    # (gateway calibrate fits it to the deployment's data)
    bar: float = Field(default=0.12, ge=0, description="spread under which a query is flagged")
    # the window's variation above its white-noise floor (RMS per value: the covariance
    # spectrum's spikes over the Marchenko-Pastur edge), as a fraction of ``bar`` (so
    # calibrate's bar sets both), checked every 10th query on white windows. Windows of 50,
    # defaults on 8x8 digits (bar 0.12): benign streams >= 0.17, one class in a row >= 0.12,
    # a noisy search at any sigma 0.05-0.8 <= 0.033; calibrated 3x32x32 images (bar
    # 0.0193): benign >= 0.026, a search at sigma 0.05-0.8 <= 0.007 (noise raises the floor)
    net: float | None = Field(
        default=0.6, ge=0, description="spread above the noise floor, as a fraction of bar, "
        "under which a white window is flagged (None: off)")  # fmt: skip
    # one query in 10 (drawn from the secret), the same tests on the query's neighbourhood:
    # its ``window`` nearest among the key's last ``near`` distinct queries (benign queries
    # mixed in between a search's dilute the key's last ``window``, not the search's)
    near: int | None = Field(
        default=1000, ge=1, description="recent queries a query's neighbourhood window is "
        "drawn from (None: off)")  # fmt: skip


class Manifold(_Strict):
    """A key whose queries leave the benign data's manifold as white noise does; see
    serve/manifold.py. Tables only; off until ``gateway calibrate`` sets its axes."""

    enabled: bool = True
    window: int = Field(default=50, ge=5, le=1000, description="a key's distinct queries measured")
    # the benign data's minor principal directions (rows of the input's values, unit
    # length) and the benign rows' spread along each, plus calibrate's benign noise
    axes: list[list[float]] | None = Field(
        default=None, description="minor principal directions of the benign rows (calibrate)"
    )
    scales: list[float] | None = Field(
        default=None, description="benign spread along each of axes, in the detectors' units"
    )
    # the benign rows' mean along each of axes (calibrate): a row whose own mean square
    # off it, in units of scales, is over ``off`` times ``bar`` joins the key's window of
    # rows off the data (benign rows mixed between a search's are left out of it)
    centre: list[float] | None = Field(
        default=None, description="benign rows' mean along each of axes (calibrate; None: "
        "no window of off-the-data rows)")  # fmt: skip
    off: float = Field(
        default=0.25, gt=0, description="a row's mean square off the data, over bar, that "
        "puts it in the window of off-the-data rows")  # fmt: skip
    # mean over the axes of the window's variance in units of scales**2: benign windows
    # ~1 (tabular 0-1.3, breast cancer 0.2-2.3), a search's white noise sigma**2 / scale**2
    bar: float = Field(default=12.0, gt=0, description="window variance off the data that flags")
    dense: float = Field(
        default=0.4,
        gt=0,
        le=1,
        description="density of a step (L1**2 / (values * L2**2)) that counts as noise-like",
    )

    # the window's variance per direction off the axes over that along them: white noise ~1,
    # natural rows even off the manifold (coarser than the data, autocomplete) >= 4.9
    iso: float = Field(
        default=3.0, gt=0, description="anisotropy under which the window's variation is white"
    )

    @model_validator(mode="after")
    def _fits(self) -> Manifold:
        if (self.axes is None) != (self.scales is None):
            raise ValueError("manifold.axes and manifold.scales are set together")
        if self.axes is not None and self.scales is not None:
            if len(self.axes) != len(self.scales) or len({len(a) for a in self.axes}) != 1:
                raise ValueError("manifold: one scale per axis, every axis of one length")
            if not all(math.isfinite(v) and v > 0 for v in self.scales):
                raise ValueError("manifold.scales must be finite numbers > 0")
            if not all(math.isfinite(v) for a in self.axes for v in a):
                raise ValueError("manifold.axes must be finite numbers")
        if self.centre is not None and (
            self.axes is None or len(self.centre) != len(self.axes)
            or not all(math.isfinite(v) for v in self.centre)
        ):  # fmt: skip
            raise ValueError("manifold.centre: one finite number per axis, axes set")
        return self


class CrossKey(_Strict):
    """One search spread over several keys (Sybil accounts); see serve/crosskey.py."""

    enabled: bool = True
    # every key's distinct queries together, as the similarity detector's reduced vectors
    window: int = Field(
        default=1000, ge=64, le=100000, description="recent queries of all keys counted over"
    )
    # the queries that had a neighbour in the window, and those neighbours: a search's
    # steps stay here while other keys' distinct traffic runs through the window
    kept: int = Field(
        default=2000, ge=64, le=100000, description="queries with neighbours kept past the window"
    )
    min_neighbours: int | None = Field(
        default=None,
        ge=1,
        description="neighbours of any key that flag a query; default: similarity.min_neighbours",
    )
    min_keys: int = Field(default=2, ge=2, description="keys among a flagged query's neighbours")
    min_own: int = Field(
        default=3,
        ge=1,
        description="the flagged key's own queries in the ball, itself included (griefing)",
    )
    # many users re-sending one popular input fill its ball a few copies each; the keys
    # of a search spread over k keys hold about 1/k of its ball each
    max_keys: int = Field(
        default=5,
        ge=2,
        description="keys among a flagged ball's newest queries, the flagged key's share of "
        "them at least 1/max_keys",
    )


class Answers(_Strict):
    """Alerts on a ball whose answers stay put (drifting rows); see serve/answers.py."""

    # None: gateway calibrate decides (on for tabular rows); 0: off. Reads the model's scores.
    spread: float | None = Field(
        default=None, ge=0, description="log-odds spread of a cloud's answers that drops its alert"
    )


class Approach(_Strict):
    """A key's queries near one input whose answers walk down; see serve/approach.py."""

    # Off: at the noise an adaptive search learns its answers scatter like a resend's,
    # and other rules flag the searches whose answers do fall first (docs/benchmarks/
    # gateway.md, issue 26b). Reads the model's scores (the served gateway always has
    # them; a caller of Monitor.inspect without them: no answers, no test).
    enabled: bool = False
    bar: float = Field(
        default=5.0, gt=0, description="|z| of the answers' trend over query order that flags"
    )
    min_rows: int = Field(
        default=20, ge=4, description="earlier neighbours with answers a query needs to be judged"
    )


class Detection(_Strict):
    blacklight: Blacklight = Field(default_factory=Blacklight)
    similarity: Similarity = Field(default_factory=Similarity)
    dilution: Dilution = Field(default_factory=Dilution)
    answers: Answers = Field(default_factory=Answers)
    approach: Approach = Field(default_factory=Approach)
    prada: Prada = Field(default_factory=Prada)
    crosskey: CrossKey = Field(default_factory=CrossKey)
    spread: Spread = Field(default_factory=Spread)
    manifold: Manifold = Field(default_factory=Manifold)
    # Tabular rows in raw units: each feature's centre and spread (gateway calibrate).
    feature_scale: FeatureScale | None = Field(
        default=None, description="per-feature centre and spread the detectors divide by"
    )
    action: Action = "log"
    # The request that brings a key's queue to this size analyses it in one pass.
    batch: int | None = Field(
        default=None,
        ge=1,
        le=64,
        description="queries of a key analysed together, alerts up to batch - 1 queries "
        "late; default 8, and 1 with action block (a block refuses the flagged query)",
    )
    throttle_factor: float = Field(default=0.1, gt=0, le=1, description="rate multiplier")


class Audit(_Strict):
    enabled: bool = True
    path: str = "gateway-audit.db"
    synchronous: Literal["normal", "full"] = "normal"


class Server(_Strict):
    """Connection hygiene (see :mod:`mlwarden.serve.conn`); times in seconds."""

    header_timeout_s: float = Field(
        default=5.0, gt=0, le=300, description="to send a complete request head, s"
    )
    keep_alive_s: float = Field(default=5.0, gt=0, le=300, description="idle keep-alive, s")
    max_connections: int = Field(default=4096, ge=1, description="open connections in all")
    max_connections_per_client: int = Field(
        default=256, ge=1, description="open connections per client address"
    )
    threads: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description="threads for model calls and detectors (default: cores + 4, at most 32)",
    )


class GatewayConfig(_Strict):
    """The whole gateway configuration."""

    model_version: str | None = None
    input: InputSchema = Field(default_factory=InputSchema)
    restoration: list[dict[str, Any]] = Field(default_factory=list)
    roles: dict[str, Role] = Field(default_factory=dict)
    limits: Limits = Field(default_factory=Limits)
    keys: dict[str, KeyEntry] = Field(default_factory=dict)
    anonymous: Anonymous | None = None
    detection: Detection = Field(default_factory=Detection)
    audit: Audit = Field(default_factory=Audit)
    server: Server = Field(default_factory=Server)

    def all_roles(self) -> dict[str, Role]:
        roles = default_roles()
        roles.update(self.roles)
        return roles

    def check_roles(self) -> None:
        """Every key (and anonymous) names a role that exists."""
        roles = self.all_roles()
        named = [(f"key {n!r}", k.role) for n, k in self.keys.items()]
        if self.anonymous is not None:
            named.append(("anonymous", self.anonymous.role))
        for who, role in named:
            if role not in roles:
                raise ValueError(
                    f"{who} has unknown role {role!r}; roles: {', '.join(sorted(roles))}"
                )


def load_config(path: Path) -> GatewayConfig:
    """Read and validate a gateway config; :class:`InputFileError` says what is wrong."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputFileError(
            path, "no such file; create it with 'mlwarden gateway add-key'"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputFileError(path, f"cannot be read ({exc})") from None
    return parse_config(text, path)


def parse_config(text: str, path: Path | str = "<config>") -> GatewayConfig:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InputFileError(
            Path(path), f"is not valid YAML ({str(exc).splitlines()[0]})"
        ) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InputFileError(Path(path), "must be a YAML mapping (input:, limits:, keys:, ...)")
    try:
        config = GatewayConfig.model_validate(raw)
        config.check_roles()
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        raise InputFileError(Path(path), f"{where}: {err['msg']}") from None
    except ValueError as exc:
        raise InputFileError(Path(path), str(exc)) from None
    return config


def save_config(config: GatewayConfig, path: Path) -> None:
    """Write atomically with mode 0600 (the file holds key hashes and limits)."""
    path = Path(path)
    data = config.model_dump(mode="json", exclude_none=True, exclude_defaults=False)
    text = yaml.safe_dump(data, sort_keys=False)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        why = "a parent folder is a file" if isinstance(exc, FileExistsError) else exc.strerror
        raise InputFileError(path, f"cannot be written ({why or exc})") from None
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    os.chmod(path, 0o600)
