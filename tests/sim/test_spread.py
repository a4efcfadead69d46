"""conv.spread: worker threads take the spans of a layer one at a time."""

import threading
import time

import pytest

from acompile.sim import conv


def test_every_item_runs_once_on_a_numbered_worker(monkeypatch):
    monkeypatch.setattr(conv, "_WORKERS", 3)
    seen, lock = [], threading.Lock()

    def work(worker, item, single):
        with lock:
            seen.append((worker, item, single))

    conv.spread(work, list(range(50)))
    assert sorted(item for _, item, _ in seen) == list(range(50))
    assert {w for w, _, _ in seen} <= {0, 1, 2} and all(single for _, _, single in seen)


def test_a_failing_item_stops_the_others_and_reaches_the_caller(monkeypatch):
    monkeypatch.setattr(conv, "_WORKERS", 2)
    done = []

    def work(worker, item, single):
        if item == 3:
            raise ValueError("item 3")
        time.sleep(0.001)       # lets the failing worker run
        done.append(item)

    with pytest.raises(ValueError, match="item 3"):
        conv.spread(work, list(range(1000)))
    assert len(done) < 999


def test_spans_cover_the_batch_in_order():
    class Geo:
        input_shape, kernel, output_shape = (64, 256, 14, 14), (3, 3), (64, 256, 14, 14)
    spans = conv.spans(Geo())
    assert spans[0][0] == 0 and spans[-1][1] == 64
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    assert len(spans) >= conv._WORKERS
