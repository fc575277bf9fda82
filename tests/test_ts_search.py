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


@pytest.mark.slow
def test_distilled_head_reaches_first_order_saddles_in_fewer_force_calls(ts_search, tmp_path):
    """On a trained ethanol surface (40 epochs), a head taught the model's own Hessians (300
    frames, 30 epochs) drives Sella to first-order saddles (the methyl and hydroxyl torsions) with
    fewer force calls than Sella's own Davidson iterations, from the same MD frames."""
    import ase.io
    import torch
    from conftest import SHARED

    ethanol = SHARED / "ethanol"
    if not (ethanol / "train.xyz").exists():
        pytest.skip(f"ethanol data not found in {ethanol}")
    torch.set_num_threads(1)
    teacher = ts_search.train_teacher(ethanol / "train.xyz", ethanol / "isolated_atoms.xyz", tmp_path / "teacher",
                                      epochs=40)
    student = ts_search.with_distilled_head(teacher.double(), ase.io.read(ethanol / "train.xyz", index=":300"))
    for index in (0, 300, 600):
        start = ase.io.read(ethanol / "test_MD.xyz", index=index)
        head = ts_search.search(student, start, "head", fmax=0.01)
        plain = ts_search.search(student, start, "none", fmax=0.01)
        assert head["first_order"] and head["negative"] == 1 and head["max_force"] < 0.01, (index, head)
        assert head["force_calls"] < plain["force_calls"], (index, head["force_calls"], plain["force_calls"])
