"""The data path's per-request metrics (proxy.metrics.LoopCounter, LoopHistogram) are collectors of
our own, for speed: what a scrape shows must be exactly what prometheus_client's Counter and
Histogram would have shown for the same counts, held here by a differential property test."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from proxy.metrics import LoopCounter, LoopHistogram, Metrics

LABELS = st.tuples(st.sampled_from(["allowed", "denied", 'a"b\\c\nd']), st.sampled_from(["none", "x", "é"]))
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


def _exposition(registry: CollectorRegistry) -> str:
    return generate_latest(registry).decode()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), LABELS), max_size=40))
def test_counter_scrapes_as_the_library_counter(ops: list[tuple[bool, tuple[str, str]]]) -> None:
    theirs_r, ours_r = CollectorRegistry(), CollectorRegistry()
    theirs = Counter("t_requests", "Help text.", ["decision", "reason"], registry=theirs_r)
    ours = LoopCounter("t_requests", "Help text.", ["decision", "reason"], registry=ours_r)
    for count, labels in ops:
        if count:
            theirs.labels(*labels).inc()
            ours.inc(*labels)
        else:  # a series made to exist at 0, as Metrics.initialise does
            theirs.labels(*labels)
            ours.zero(*labels)
    assert _exposition(ours_r) == _exposition(theirs_r)


VALUES = st.one_of(
    st.sampled_from([0.0, *BUCKETS]),  # on a bound: counted in that bucket (le is inclusive)
    st.floats(min_value=0, max_value=1e4, allow_nan=False),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(VALUES, max_size=40))
def test_histogram_scrapes_as_the_library_histogram(values: list[float]) -> None:
    theirs_r, ours_r = CollectorRegistry(), CollectorRegistry()
    theirs = Histogram("t_seconds", "Help text.", buckets=BUCKETS, registry=theirs_r)
    ours = LoopHistogram("t_seconds", "Help text.", buckets=BUCKETS, registry=ours_r)
    for v in values:
        theirs.observe(v)
        ours.observe(v)
    assert _exposition(ours_r) == _exposition(theirs_r)


def test_a_counter_refuses_the_wrong_number_of_labels() -> None:
    c = LoopCounter("t_total", "Help.", ["decision", "reason"], registry=CollectorRegistry())
    with pytest.raises(ValueError, match="labels"):
        c.inc("allowed")
    assert c.value("allowed") is None


def test_metric_names_are_registered_once() -> None:
    # The registry refuses a second collector of the same name: our collectors describe themselves.
    m = Metrics()
    with pytest.raises(ValueError, match="Duplicated"):
        LoopCounter("sandgate_egress_requests", "Again.", ["decision", "reason"], registry=m.registry)
