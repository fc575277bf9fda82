"""Worker of ``compare_commits.py``: times molsym calls of one source tree, on request.

Started as ``python commit_worker.py TREE``; imports ``molsym`` from ``TREE`` (a checkout
of any commit) and answers JSON lines on stdin:

    {"setup": [system index, dtype name, "eager" | "compiled"]}   -> {"ready": seconds of setup}
    {"call": count}   -> {"times": [seconds per call, ...]} (the last set-up callable)

Each call is one energy + forces evaluation of the benchmark's TensorNet (128 channels,
2 layers, cutoff 4.5 Å, 32 radial functions, seed 0) on a prebuilt graph, under the
package's thread policy as its entry points run it.
"""
from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path

TREE = Path(sys.argv[1]).resolve()
sys.path.insert(0, str(TREE))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import molsym  # noqa: E402
from molsym.data.graph import collate, from_ase, to_device  # noqa: E402
from molsym.models.derivatives import energy_forces_stress  # noqa: E402
from systems import bpa_frames, bpa_molecule, water_box  # noqa: E402

if Path(molsym.__file__).resolve().parents[1] != TREE:
    raise SystemExit(f"molsym imported from {molsym.__file__}, not from {TREE}")
try:  # the thread policy's entry point; older trees applied it inside energy_forces_stress
    from molsym.models.threads import policy_threads
except ImportError:
    def policy_threads(graph):
        return contextlib.nullcontext()

DTYPES = {"float32": torch.float32, "float64": torch.float64}
SYSTEMS = [lambda: [bpa_molecule()], lambda: [water_box()], lambda: bpa_frames(32)]
_COMPILED: dict = {}


def model_of(dtype):
    torch.manual_seed(0)
    model = molsym.Potential.from_config({"elements": [1, 6, 7, 8], "family": "tensornet", "channels": 128,
                                          "layers": 2, "cutoff": 4.5, "num_radial": 32}).to(dtype).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def setup(system: int, dtype_name: str, kind: str):
    dtype = DTYPES[dtype_name]
    model = model_of(dtype)
    graph = to_device(collate([from_ase(a, 4.5) for a in SYSTEMS[system]()]), dtype=dtype)
    if kind == "eager":
        def call():
            with policy_threads(graph):
                return energy_forces_stress(model, graph)
        return call
    from molsym.models.compiled import CompiledPotential

    key = (dtype_name, system == 2)  # a batch of structures compiles once more
    runner = _COMPILED.get(key)
    if runner is None:
        runner = _COMPILED[key] = CompiledPotential(model)
    return lambda: runner(graph)


def main() -> None:
    call = None
    for line in sys.stdin:
        request = json.loads(line)
        if "setup" in request:
            start = time.perf_counter()
            call = setup(*request["setup"])
            call()
            reply = {"ready": time.perf_counter() - start}
        else:
            times = []
            for _ in range(int(request["call"])):
                start = time.perf_counter()
                call()
                times.append(time.perf_counter() - start)
            reply = {"times": times}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
