"""Sella transition-state search fed the model's exact Hessian (examples/ts_search/ts_search.py)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("sella", reason="Sella is in the test extra: pip install -e '.[test]'")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "ts_search" / "ts_search.py"


@pytest.fixture(scope="module")
def ts_search():
    spec = importlib.util.spec_from_file_location("ts_search_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_exact_hessian_reaches_a_first_order_saddle_in_fewer_force_calls(ts_search):
    seed = 3  # fixed model weights and start: the run is deterministic
    model, start = ts_search.random_model(seed), ts_search.start_geometry(seed)
    exact = ts_search.search(model, start, "autograd", fmax=0.01)
    plain = ts_search.search(model, start, "none", fmax=0.01)
    # a first-order saddle of the model's own surface: converged, one negative eigenvalue of the
    # exact projected Hessian, every force below fmax
    assert exact["converged"] and exact["negative"] == 1 and exact["max_force"] < 0.01, exact
    assert exact["imaginary_cm1"] < 0
    assert exact["hessian_calls"] >= 1
    assert exact["force_calls"] < plain["force_calls"], (exact["force_calls"], plain["force_calls"])


def test_unknown_hessian_source_is_refused(ts_search):
    with pytest.raises(ValueError, match="hessian must be one of"):
        ts_search.search(ts_search.random_model(0, head=False), ts_search.start_geometry(0), "exact")
