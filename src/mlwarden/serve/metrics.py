"""Gateway metrics in the Prometheus text exposition format (version 0.0.4).

Counters and one latency histogram, kept in memory and rendered on ``GET /metrics``:

* ``mlwarden_requests_total{path,status}`` — requests answered, by HTTP status;
* ``mlwarden_queries_total{key}`` — inputs answered per key (a batch of 8 counts 8);
* ``mlwarden_request_duration_seconds`` — latency histogram, seconds;
* ``mlwarden_alerts_total{key,kind}`` — requests flagged by a detector (``kind`` is
  ``blacklight`` or ``prada``), per key name;
* ``mlwarden_cpu_seconds_total{stage}`` — CPU time (thread CPU clock, seconds) spent
  in the ``model`` (restoration included) and the attack ``detectors`` (their state
  saves included), and the whole ``process``: what a request costs beyond the two is
  the gateway's own path (``benchmarks/gateway_load.py`` reports the split).
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import defaultdict

BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    """Thread-safe counters and a latency histogram."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = defaultdict(int)
        self.queries: dict[str, int] = defaultdict(int)
        self.alerts: dict[tuple[str, str], int] = defaultdict(int)
        self.cpu: dict[str, float] = {"model": 0.0, "detectors": 0.0}
        self._buckets = [0] * (len(BUCKETS) + 1)
        self._sum = 0.0
        self._count = 0

    def observe(self, path: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(path, status)] += 1
            self._buckets[bisect.bisect_left(BUCKETS, seconds)] += 1
            self._sum += seconds
            self._count += 1

    def add_queries(self, key: str, n: int) -> None:
        with self._lock:
            self.queries[key] += n

    def alert(self, key: str, kind: str) -> None:
        with self._lock:
            self.alerts[(key, kind)] += 1

    def add_cpu(self, stage: str, seconds: float) -> None:
        """Add CPU seconds (``time.thread_time`` differences) spent in ``stage``."""
        with self._lock:
            self.cpu[stage] = self.cpu.get(stage, 0.0) + seconds

    def render(self, extra: list[str] | None = None) -> str:
        """The metrics as Prometheus text (``extra``: more lines, e.g. connection counters)."""
        with self._lock:
            out = [
                "# HELP mlwarden_requests_total Requests answered, by path and HTTP status.",
                "# TYPE mlwarden_requests_total counter",
            ]
            for (path, status), n in sorted(self.requests.items()):
                out.append(
                    f'mlwarden_requests_total{{path="{_label(path)}",status="{status}"}} {n}'
                )
            out += [
                "# HELP mlwarden_queries_total Inputs answered, by key name.",
                "# TYPE mlwarden_queries_total counter",
            ]
            for key, n in sorted(self.queries.items()):
                out.append(f'mlwarden_queries_total{{key="{_label(key)}"}} {n}')
            out += [
                "# HELP mlwarden_alerts_total Requests flagged by an attack detector.",
                "# TYPE mlwarden_alerts_total counter",
            ]
            for (key, kind), n in sorted(self.alerts.items()):
                out.append(
                    f'mlwarden_alerts_total{{key="{_label(key)}",kind="{_label(kind)}"}} {n}'
                )
            out += [
                "# HELP mlwarden_cpu_seconds_total CPU time spent, by stage (model, "
                "detectors, process: all of it).",
                "# TYPE mlwarden_cpu_seconds_total counter",
            ]
            cpu = {**self.cpu, "process": time.process_time()}
            for stage, seconds in sorted(cpu.items()):
                out.append(f'mlwarden_cpu_seconds_total{{stage="{_label(stage)}"}} {seconds:.6f}')
            out += [
                "# HELP mlwarden_request_duration_seconds Time to answer a request, seconds.",
                "# TYPE mlwarden_request_duration_seconds histogram",
            ]
            cum = 0
            for le, n in zip(BUCKETS, self._buckets, strict=False):
                cum += n
                out.append(f'mlwarden_request_duration_seconds_bucket{{le="{le}"}} {cum}')
            out.append(f'mlwarden_request_duration_seconds_bucket{{le="+Inf"}} {self._count}')
            out.append(f"mlwarden_request_duration_seconds_sum {self._sum:.6f}")
            out.append(f"mlwarden_request_duration_seconds_count {self._count}")
        out += extra or []
        return "\n".join(out) + "\n"
