"""How many intra-op threads one model evaluation uses: the package's one thread policy.

The policy is applied, through :func:`policy_threads`, by the entry points only:
``Potential.predict`` / ``molsym.models.predict``, ``MolSymCalculator`` (energy, forces,
stress, Hessian), ``CompiledPotential`` (whose graph always runs on one thread, see
``molsym.models.compiled``) and the training's forward pass (``molsym.train.losses.predict_batch``).
The derivative functions of ``molsym.models.derivatives`` never change torch's thread count:
called directly, they run on whatever it is.

Splitting a small graph's operations over threads costs more than it saves:
every parallel region wakes the other threads, and with OpenMP's passive wait
policy that costs about 0.1-0.2 ms on a virtualised 2-core CPU, more than most
operations of a 27-atom molecule take on one thread (measured: 2 threads 35 ms,
1 thread 17 ms per energy + forces call of the default TensorNet). Graphs below
:data:`SINGLE_THREAD_EDGES` directed edges therefore run on one thread; larger
ones on the threads torch was given (at 7800 edges, a 192-atom water box, one
and two threads took the same time in float32, two were faster in float64).
"""
from __future__ import annotations

from contextlib import contextmanager

import torch

from molsym.data import keys as K

# directed edges below which one intra-op thread is faster on CPU
SINGLE_THREAD_EDGES = 4096


def threads_for(graph: dict[str, torch.Tensor]) -> int:
    """Intra-op threads for evaluating ``graph``: 1 for small graphs on CPU, else all available."""
    edge_index = graph[K.EDGE_INDEX]
    if edge_index.device.type == "cpu" and edge_index.shape[1] < SINGLE_THREAD_EDGES:
        return 1
    return torch.get_num_threads()


@contextmanager
def intra_op_threads(count: int):
    """Run the block with at most ``count`` intra-op threads; the previous number is restored after."""
    previous = torch.get_num_threads()
    if count >= previous:
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def policy_threads(graph: dict[str, torch.Tensor]):
    """Context manager: evaluate ``graph`` on the policy's thread count (:func:`threads_for`)."""
    return intra_op_threads(threads_for(graph))
