"""Prometheus metrics of outcomes, labelled by category, action and outcome.

Never by account: account names are unbounded and private; per-account
counts live in the ledger's per-minute counters instead. Counting is a dict
increment on the request path; the Prometheus collector reads the dict only
when scraped. Everything else (settlement, the journal, the limiter, webhooks)
is read at scrape time from counts kept where the work happens
(``gauge``/``family``/``histogram``): no label of any of them names an account.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Literal

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

__all__ = ["STANDING_REASONS", "MeteringMetrics"]

#: Distinct upstream error codes kept as label values; beyond, "other".
_MAX_REASONS = 200

#: The refusal reasons of the standing check and spend guard (spend_guard.py's
#: ``*_REASON``; tests/test_metrics_runtime.py keeps the two equal). Their counts are
#: derived at scrape time from ``metering_calls``: nothing more on the request path.
STANDING_REASONS = ("overdue", "suspended", "held", "spend_guard", "cap")

#: Labels -> value, read at scrape time.
Samples = Mapping[tuple[str, ...], float]


class MeteringMetrics(Collector):
    def __init__(self) -> None:
        self._calls: defaultdict[tuple[str, str, str, str], int] = defaultdict(int)
        self._reasons: set[str] = set()
        self._gauges: dict[str, tuple[str, Callable[[], float]]] = {}
        self._families: dict[
            str, tuple[Literal["counter", "gauge"], str, tuple[str, ...], Callable[[], Samples]]
        ] = {}
        self._histograms: dict[
            str, tuple[str, Callable[[], tuple[Sequence[float], Sequence[int], float]]]
        ] = {}

    def count(self, category: str, action: str, outcome: str, reason: str) -> None:
        if reason not in self._reasons:
            if len(self._reasons) >= _MAX_REASONS:
                reason = "other"
            else:
                self._reasons.add(reason)
        self._calls[(category, action, outcome, reason)] += 1

    def gauge(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        """Expose a value read at scrape time (ledger backlog, writer health)."""
        self._gauges[name] = (help_text, read)

    def family(
        self,
        name: str,
        help_text: str,
        labels: tuple[str, ...],
        read: Callable[[], Samples],
        *,
        kind: Literal["counter", "gauge"] = "counter",
    ) -> None:
        """Labelled values read at scrape time (a counter's name gets ``_total``)."""
        self._families[name] = (kind, help_text, labels, read)

    def histogram(
        self,
        name: str,
        help_text: str,
        read: Callable[[], tuple[Sequence[float], Sequence[int], float]],
    ) -> None:
        """``read`` gives (bucket upper bounds, count per bucket (not cumulative), sum)."""
        self._histograms[name] = (help_text, read)

    def snapshot(self) -> Mapping[tuple[str, str, str, str], int]:
        return dict(self._calls)

    def _standing_refusals(self) -> Samples:
        totals: dict[tuple[str, ...], float] = {(r,): 0.0 for r in STANDING_REASONS}
        for (_, _, outcome, reason), n in list(self._calls.items()):
            if outcome == "refused" and (reason,) in totals:
                totals[(reason,)] += n
        return totals

    def collect(self) -> Iterator[Metric]:
        calls = CounterMetricFamily(
            "metering_calls",
            "VIAPI calls seen by the meter, by outcome (charged, free, refused) and reason.",
            labels=["category", "action", "outcome", "reason"],
        )
        for (category, action, outcome, reason), n in sorted(self._calls.items()):
            calls.add_metric([category, action, outcome, reason], n)
        yield calls
        refusals = CounterMetricFamily(
            "metering_standing_refusals",
            "Calls refused for the account's standing or spending (overdue, suspended, held, "
            'spend_guard, cap); the same calls as metering_calls{outcome="refused"}.',
            labels=["reason"],
        )
        for (reason,), total in self._standing_refusals().items():
            refusals.add_metric([reason], total)
        yield refusals
        for name, (help_text, read) in sorted(self._gauges.items()):
            yield GaugeMetricFamily(name, help_text, value=read())
        for name, (kind, help_text, labels, read_samples) in sorted(self._families.items()):
            family: CounterMetricFamily | GaugeMetricFamily
            if kind == "counter":
                family = CounterMetricFamily(name, help_text, labels=list(labels))
            else:
                family = GaugeMetricFamily(name, help_text, labels=list(labels))
            for values, value in sorted(read_samples().items()):
                family.add_metric(list(values), value)
            yield family
        for name, (help_text, read_histogram) in sorted(self._histograms.items()):
            bounds, counts, total = read_histogram()
            buckets: list[tuple[str, float]] = []
            cumulative = 0.0
            for bound, n in zip(bounds, counts, strict=True):
                cumulative += n
                buckets.append(("+Inf" if math.isinf(bound) else repr(float(bound)), cumulative))
            yield HistogramMetricFamily(name, help_text, buckets=buckets, sum_value=total)
