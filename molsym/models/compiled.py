"""Energy, forces and stress of a Potential through one compiled graph (inference).

:class:`CompiledPotential` evaluates a frozen snapshot of a model in four steps:

1. eager bookkeeping: element indices (with the model's checks), the pair rows of
   the edge list (``molsym.nn.geometry.pair_rows``) and their lengths r;
2. the interactions' radial networks W(r) = network(basis(r)) * envelope(r), outside
   the graph (``Potential.radial_networks``);
3. one graph compiled by ``torch.compile`` (inductor) evaluates the energy with the
   W as inputs (``EdgeGeometry.pair_weights``) and differentiates it with
   ``torch.func.grad`` with respect to positions, strain and the W; inductor fuses
   everything but the matrix products into a few loops and calls them from a C++
   wrapper (no Python between kernels);
4. the chain rule through the radial networks: dE/dr = sum_k dE/dW_k dW_k/dr, with
   dW/dr by forward-mode differentiation, scattered onto the pair's two atoms (and
   the strain).

The graph runs on one intra-op thread. When torch has two or more threads, a worker
thread evaluates half of the networks in step 2 and all derivatives dW/dr of step 4
while this thread runs the graph.

Results equal :func:`molsym.models.derivatives.energy_forces_stress` to rounding.
Compilation happens on the first call for each dtype, device and with/without stress
(one to two minutes on a 2-core CPU, cached on disk by torch); shapes are dynamic, so
changing atom and edge counts (MD) do not recompile. First derivatives only: Hessians
and training use the eager model. Needs a C++ compiler on CPU (inductor's requirement).
A model with a layer whose family declares ``compiles=False`` (``molsym.nn.interactions.base``)
is evaluated eagerly, with the same results; every family of the builder's table compiles.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import torch
from torch import nn

from molsym.data import keys as K
from molsym.models.allocator import keep_freed_memory
from molsym.models.derivatives import _apply_strain, cell_volumes, energy_forces_stress
from molsym.models.dtypes import model_dtype_device
from molsym.models.snapshot import frozen_copy
from molsym.models.threads import intra_op_threads
from molsym.nn.geometry import pair_rows, pair_vectors


class CompiledPotential:
    """Compiled energy, forces and stress of a snapshot of ``model`` (a ``molsym.Potential``).

    The snapshot is a frozen copy in eval mode: later changes to ``model`` are not seen.
    Constructing one sets glibc's malloc to keep freed memory
    (:func:`molsym.models.allocator.keep_freed_memory`).
    Call it like :func:`~molsym.models.derivatives.energy_forces_stress`:
    ``compiled(graph, stress=False) -> {"energy": (B,), "energies": (N,), "forces": (N, 3)
    [, "stress": (B, 3, 3)]}`` (eV, eV/Å, eV/Å³), detached.
    """

    def __init__(self, model, device=None, dtype: torch.dtype | None = None):
        """``device`` and ``dtype`` (optional): where and in which precision the snapshot runs."""
        self.model = frozen_copy(model, device, dtype)
        self._graph_fn = torch.compile(_energy_and_gradients, dynamic=True, options={"cpp_wrapper": True})
        keep_freed_memory()
        self._pool: ThreadPoolExecutor | None = None

    def __call__(self, graph: dict[str, torch.Tensor], *, stress: bool = False) -> dict[str, torch.Tensor]:
        model = self.model
        positions = graph[K.POSITIONS]
        dtype, _ = model_dtype_device(model)
        if positions.dtype != dtype:
            raise ValueError(f"positions are {positions.dtype} but the model is {dtype}; "
                             "cast the graph (molsym.data.graph.to_device) or the model")
        if stress and bool((cell_volumes(graph[K.CELL]) < 1e-8).any()):
            raise ValueError("stress needs a cell with non-zero volume for every structure (got a zero-volume cell)")
        if graph[K.EDGE_INDEX].shape[1] < 2 or not model.compiles:
            # nothing to differentiate (no graph to compile), or a family that cannot be traced: eager
            return {key: value.detach() for key, value in energy_forces_stress(model, graph, stress=stress).items()}
        available = torch.get_num_threads()
        # the graph runs on one intra-op thread: inductor's multi-threaded code for the scatter of
        # atomic energies into a single structure fails to generate (torch 2.13); a second thread,
        # when there is one, evaluates radial networks and derivatives alongside
        with intra_op_threads(1), torch.no_grad():
            species = model.species(graph[K.ATOMIC_NUMBERS])
            rows = pair_rows(graph[K.EDGE_INDEX], graph[K.EDGE_SHIFT])
            pair_index, vectors = pair_vectors(graph, rows)
            lengths = torch.linalg.vector_norm(vectors, dim=-1)
            radial = _RadialAhead(model, lengths, self._worker() if available > 1 else None)
            strain = torch.zeros_like(graph[K.CELL])
            energy, atomic, gradient, strain_gradient, weight_gradients = self._graph_fn(
                model, positions, strain, radial.weights, graph[K.EDGE_SHIFT], graph[K.EDGE_INDEX],
                graph[K.CELL], graph[K.BATCH], species, rows, stress,
            )
            # chain rule through the radial networks: dE/dr per pair row, then onto atoms and strain
            length_gradient = sum((g * d).sum(-1) for g, d in zip(weight_gradients, radial.derivatives()))
            if isinstance(length_gradient, torch.Tensor):
                along = (length_gradient / lengths).unsqueeze(-1) * vectors  # dE/dr * unit vector
                gradient = gradient.index_add(0, pair_index[1], along).index_add(0, pair_index[0], -along)
                if stress:
                    row_graph = graph[K.BATCH].index_select(0, pair_index[0])
                    outer = along.unsqueeze(-1) * vectors.unsqueeze(-2)
                    strain_gradient = strain_gradient.index_add(0, row_graph, outer)
        out = {K.ENERGY: energy, K.ATOMIC_ENERGIES: atomic, K.FORCES: -gradient}
        if stress:
            out[K.STRESS] = strain_gradient / cell_volumes(graph[K.CELL])[:, None, None]
        return out

    def _worker(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="molsym-radial")
        return self._pool

    def __getstate__(self):
        raise TypeError("a CompiledPotential cannot be pickled; save the model (molsym.save) and compile it again")


class _RadialAhead:
    """Radial weights W(r) of a model's networks for pair lengths r, and their derivatives dW/dr.

    With a worker: the worker evaluates every other network's weights at once, then the
    derivatives of the radial basis and of all networks (reusing the stored activations),
    while the caller runs the graph.
    """

    def __init__(self, model, lengths: torch.Tensor, worker: ThreadPoolExecutor | None):
        builder = model.geometry
        basis, envelope = builder.radial(lengths)
        passes = [_TangentPass(network, basis[:, :k], envelope, k) for network, k in model.radial_networks()]
        self._derivative_inputs = lambda: builder.radial_derivative(lengths)
        self._pending = None
        if worker is None or len(passes) == 0:
            for p in passes:
                p.values()
        else:
            remote = passes[1::2]
            first = worker.submit(_on_worker, lambda: [p.values() for p in remote])
            for p in passes[0::2]:
                p.values()
            first.result()
            self._pending = worker.submit(_on_worker, lambda: self._derivatives(passes))
        self._passes = passes
        self.weights = tuple(p.weights for p in passes)

    def _derivatives(self, passes) -> list[torch.Tensor]:
        basis_derivative, envelope_derivative = self._derivative_inputs()
        return [p.derivative(basis_derivative[:, :p.num_radial], envelope_derivative) for p in passes]

    def derivatives(self) -> list[torch.Tensor]:
        if self._pending is not None:
            return self._pending.result()
        return self._derivatives(self._passes)


def _on_worker(task):
    """Run ``task`` on a worker thread: one intra-op thread, no autograd."""
    with intra_op_threads(1), torch.no_grad():
        return task()


class _TangentPass:
    """W = network(basis) * envelope and dW/dr by forward-mode differentiation along the length.

    Linear and SiLU layers (alone or in an ``nn.Sequential``) are propagated explicitly, reusing
    the activations of the value pass; other networks by ``torch.func.jvp``.
    """

    def __init__(self, network: nn.Module, basis: torch.Tensor, envelope: torch.Tensor, num_radial: int):
        """basis (P, num_radial) and envelope (P,) of the pair lengths."""
        self.network, self.num_radial = network, num_radial
        self.basis, self.envelope = basis, envelope.unsqueeze(-1)
        layers = list(network) if isinstance(network, nn.Sequential) else [network]
        self.layers = layers if all(isinstance(layer, (nn.Linear, nn.SiLU)) for layer in layers) else None
        self.weights: torch.Tensor | None = None
        self._raw: torch.Tensor | None = None
        self._activations: list[torch.Tensor] = []

    def values(self) -> torch.Tensor:
        """W (P, K)."""
        x = self.basis
        if self.layers is None:
            x = self.network(x)
        else:
            for layer in self.layers:
                self._activations.append(x)  # input of every layer
                x = layer(x)
        self._raw = x
        self.weights = x * self.envelope
        return self.weights

    def derivative(self, basis_derivative: torch.Tensor, envelope_derivative: torch.Tensor) -> torch.Tensor:
        """dW/dr (P, K) from d basis/dr (P, R) and d envelope/dr (P,); after :meth:`values`."""
        t = basis_derivative
        if self.layers is None:
            _, t = torch.func.jvp(self.network, (self.basis,), (t,))
        else:
            for layer, x in zip(self.layers, self._activations):
                if isinstance(layer, nn.Linear):
                    t = t @ layer.weight.T
                else:
                    sigmoid = torch.sigmoid(x)
                    t = t * (sigmoid * (1.0 + x * (1.0 - sigmoid)))
        return t * self.envelope + self._raw * envelope_derivative.unsqueeze(-1)


def _energy_and_gradients(model, positions, strain, weights, shift, edge_index, cell, batch, species, rows,
                          with_stress: bool):
    """Energy (B,), atomic energies (N,) and dE/d positions (N, 3), dE/d strain (B, 3, 3) (zeros
    without stress) and dE/dW for the radial weights W (given, held fixed in r)."""
    networks = [network for network, _ in model.radial_networks()]

    def total_energy(pos, eps, ws):
        graph = {K.POSITIONS: pos, K.EDGE_SHIFT: shift, K.EDGE_INDEX: edge_index, K.CELL: cell, K.BATCH: batch}
        if with_stress:
            graph = _apply_strain(graph, eps)
        geometry = model.geometry(graph, rows, dict(zip(networks, ws)))
        out = model.evaluate(species, geometry, graph)
        return out[K.ENERGY].sum(), (out[K.ENERGY], out[K.ATOMIC_ENERGIES])

    grads, (_, (energy, atomic)) = torch.func.grad_and_value(total_energy, argnums=(0, 1, 2), has_aux=True)(
        positions, strain, weights)
    return energy, atomic, grads[0], grads[1], grads[2]
