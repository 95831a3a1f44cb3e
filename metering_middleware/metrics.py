"""Prometheus metrics of outcomes, labelled by category, action and outcome.

Never by account: account names are unbounded and private; per-account
counts live in the ledger's per-minute counters instead. Counting is a dict
increment on the request path; the Prometheus collector reads the dict only
when scraped.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["MeteringMetrics"]

#: Distinct upstream error codes kept as label values; beyond, "other".
_MAX_REASONS = 200


class MeteringMetrics(Collector):
    def __init__(self) -> None:
        self._calls: defaultdict[tuple[str, str, str, str], int] = defaultdict(int)
        self._reasons: set[str] = set()
        self._gauges: dict[str, tuple[str, Callable[[], float]]] = {}

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

    def snapshot(self) -> Mapping[tuple[str, str, str, str], int]:
        return dict(self._calls)

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        calls = CounterMetricFamily(
            "metering_calls",
            "VIAPI calls seen by the meter, by outcome (charged, free, refused) and reason.",
            labels=["category", "action", "outcome", "reason"],
        )
        for (category, action, outcome, reason), n in sorted(self._calls.items()):
            calls.add_metric([category, action, outcome, reason], n)
        yield calls
        for name, (help_text, read) in sorted(self._gauges.items()):
            yield GaugeMetricFamily(name, help_text, value=read())
