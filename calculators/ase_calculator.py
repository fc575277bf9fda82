"""ASE calculator for molsym potentials: energy, atomic energies, forces, stress, Hessians.

Units follow ASE: energies eV, forces eV/Å, stress eV/Å³ (Voigt order xx, yy,
zz, yz, xz, xy; ASE's sign convention), Hessian eV/Å².

Usage::

    from molsym.calculators import MolSymCalculator
    atoms.calc = MolSymCalculator(model, device="cpu", dtype="float64")
    atoms.get_potential_energy(); atoms.get_forces()
    atoms.calc.get_hessian(atoms)          # (3N, 3N) eV/Å², exact (autograd)
    atoms.calc.get_hessian(atoms, method="head")   # predicted by the model's Hessian head

Caching follows ASE's contract: :meth:`calculate` is reached only through
``BaseCalculator.get_property``, which compares the atoms with those of the
last calculation (``check_state``) and reuses ``self.results`` when nothing
changed. One call computes energy, free energy, atomic energies and forces
together (and the stress of fully periodic systems), so asking for any of
them afterwards costs nothing.
"""
from __future__ import annotations

import os

import numpy as np
import torch
from ase.calculators.calculator import (
    Calculator,
    PropertyNotImplementedError,
    all_changes,
    compare_atoms,
)

from molsym.data import keys as K
from molsym.data.graph import from_ase, to_device
from molsym.models.allocator import keep_freed_memory
from molsym.models.compiled import CompiledPotential
from molsym.models.derivatives import energy_forces_stress, hessian as exact_hessian
from molsym.models.dtypes import resolve_dtype
from molsym.models.predict import HESSIAN_METHODS
from molsym.models.snapshot import frozen_copy
from molsym.models.threads import policy_threads


def _full_voigt(stress: np.ndarray) -> np.ndarray:
    """(3, 3) -> Voigt (6,): xx, yy, zz, yz, xz, xy (ASE order)."""
    return stress.flat[[0, 4, 8, 5, 2, 1]].copy()


class MolSymCalculator(Calculator):
    """ASE calculator wrapping a :class:`molsym.Potential`.

    Args:
        model: a ``molsym.Potential``. The calculator works on its own copy of
            it, cast to ``dtype``, moved to ``device``, in eval mode with
            parameters frozen; the model passed in is never modified.
        device: torch device for the computation ("cpu", "cuda", "cuda:1", ...).
        dtype: "float64" (default; use it for MD, phonons and Hessians) or
            "float32". Positions, cell and lattice shifts are built in this
            dtype and the model runs in it; results are returned as float64
            numpy arrays, as ASE expects.
        hessian_chunk_size: rows of the Hessian computed per batched backward
            pass in :meth:`get_hessian` (memory grows with it).
        compile: evaluate energy, forces and stress through one graph compiled
            by ``torch.compile`` (``molsym.models.compiled.CompiledPotential``):
            1.5-2x faster for small molecules on CPU after a first call that
            compiles (one to two minutes; needs a C++ compiler). Hessians use
            the eager model either way.
        **kwargs: passed to ``ase.calculators.calculator.Calculator``.

    Properties (``implemented_properties``, fixed for the class):
        energy, free_energy: float, eV (equal: the model has no electronic entropy).
        energies: (N,) eV, per-atom contributions summing to the energy.
        forces: (N, 3) eV/Å.
        stress: (6,) eV/Å³, Voigt form; only for fully periodic cells
            (``pbc`` all True, non-zero volume). Asking for it otherwise
            raises ``PropertyNotImplementedError`` with the reason.
        hessian: (3N, 3N) eV/Å², the exact Hessian (``get_property("hessian")``); the
            Hessian head's prediction through ``get_hessian(atoms, method="head")``.

    The neighbour list is rebuilt from the atoms on every calculation, so
    atoms may move arbitrarily far between calls. Constructing a calculator sets
    glibc's malloc to keep freed memory for reuse
    (``molsym.models.allocator.keep_freed_memory``): it saves the page faults of
    reallocating temporaries on every MD step.
    """

    implemented_properties = ("energy", "free_energy", "energies", "forces", "stress", "hessian")

    def __init__(self, model, device="cpu", dtype="float64", *, hessian_chunk_size: int = 8, compile: bool = False,
                 **kwargs):
        super().__init__(**kwargs)
        if not isinstance(model, torch.nn.Module) or not hasattr(model, "cutoff") or not hasattr(model, "elements"):
            raise TypeError(f"model must be a molsym.Potential, got {type(model).__name__}")
        if int(hessian_chunk_size) < 1:
            raise ValueError(f"hessian_chunk_size must be >= 1, got {hessian_chunk_size}")
        self.dtype = resolve_dtype(dtype)
        self.device = torch.device(device)
        if compile:  # one frozen copy, shared by the compiled graph and the eager Hessian
            self.compiled = CompiledPotential(model, device=self.device, dtype=self.dtype)
            self.model = self.compiled.model
        else:
            self.compiled = None
            self.model = frozen_copy(model, self.device, self.dtype)
        keep_freed_memory()
        self.hessian_chunk_size = int(hessian_chunk_size)
        self._hessians: dict[str, tuple] = {}  # method -> (atoms copy, (3N, 3N) float64 array)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device="cpu", dtype="float64", **kwargs) -> "MolSymCalculator":
        """Calculator for a checkpoint written by ``molsym.save`` (read safely, see ``molsym.load``)."""
        from molsym.checkpoint import load

        return cls(load(path, map_location="cpu"), device=device, dtype=dtype, **kwargs)

    # --- ASE interface ------------------------------------------------------------

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        """Compute energy, free energy, atomic energies and forces (and stress when periodic), and
        the exact Hessian when ``properties`` asks for "hessian".

        Called by ``get_property`` only when ``check_state`` reports changes or a
        requested property is missing from ``self.results``.
        """
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        periodic = bool(np.all(atoms.get_pbc()))
        if "stress" in properties and not periodic:
            raise PropertyNotImplementedError(
                f"stress is only defined for fully periodic systems, but these atoms have pbc={atoms.get_pbc().tolist()}; "
                "set a cell and pbc=True to compute it"
            )
        graph = self._graph(atoms)
        if len(atoms) == 0:  # energy of no atoms: 0
            out = {K.ENERGY: torch.zeros(1), K.ATOMIC_ENERGIES: torch.zeros(0), K.FORCES: torch.zeros(0, 3),
                   K.STRESS: torch.zeros(1, 3, 3)}
        elif self.compiled is not None:
            out = self.compiled(graph, stress=periodic)
        else:
            with policy_threads(graph):
                out = energy_forces_stress(self.model, graph, forces=True, stress=periodic)
        energy = float(out[K.ENERGY].detach().sum().cpu())
        results = {
            "energy": energy,
            "free_energy": energy,
            "energies": out[K.ATOMIC_ENERGIES].detach().cpu().double().numpy(),
            "forces": out[K.FORCES].detach().cpu().double().numpy(),
        }
        if periodic:
            results["stress"] = _full_voigt(out[K.STRESS][0].detach().cpu().double().numpy())
        if "hessian" in properties:
            results["hessian"] = self._hessian(atoms, "autograd")
        self.results = results

    def reset(self) -> None:
        """Forget the atoms and all results, including a cached Hessian."""
        super().reset()
        self._hessians = {}

    # --- Hessian ------------------------------------------------------------------

    def get_hessian(self, atoms=None, method: str = "autograd") -> np.ndarray:
        """Hessian d²E/dx², (3N, 3N) float64 numpy array, eV/Å².

        Rows and columns run over atoms then Cartesian components (index 3 * atom + axis).
        ``method``: "autograd" (exact, by a second autograd pass in the calculator's dtype;
        float64 recommended) or "head" (predicted by the model's Hessian head in one forward
        pass; ``ValueError`` for a model without one). Cached per method until the atoms
        change. ``atoms=None`` uses the atoms of the last calculation.
        """
        if method not in HESSIAN_METHODS:
            raise ValueError(f"method must be one of {list(HESSIAN_METHODS)}, got {method!r}")
        if method == "head":
            self.model.check_heads(("hessian",))
        if atoms is None:
            atoms = self.atoms
            if atoms is None:
                raise ValueError("get_hessian() needs atoms: pass them, or compute another property first")
        elif self.check_state(atoms):
            self.reset()
        matrix = self._hessian(atoms, method)
        if self.atoms is None:  # after check_state/reset, self.atoms is None or equal to atoms
            self.atoms = atoms.copy()
        return matrix.copy()

    def _hessian(self, atoms, method: str) -> np.ndarray:
        """The cached or newly computed Hessian of ``atoms`` by ``method`` (the cache's own array)."""
        cached = self._hessians.get(method)
        if cached is not None and not compare_atoms(cached[0], atoms):
            return cached[1]
        if not len(atoms):
            matrix = np.zeros((0, 0))
            self._hessians[method] = (atoms.copy(), matrix)
            return matrix
        graph = self._graph(atoms)
        with policy_threads(graph):
            if method == "autograd":
                matrix = exact_hessian(self.model, graph, chunk_size=self.hessian_chunk_size)
            else:
                with torch.no_grad():
                    matrix = self.model(graph, heads=("hessian",))[K.HESSIAN]
        matrix = matrix.cpu().double().numpy()
        self._hessians[method] = (atoms.copy(), matrix)
        return matrix

    # --- internals --------------------------------------------------------------------

    def _graph(self, atoms) -> dict[str, torch.Tensor]:
        """Atoms -> graph dict in the calculator's dtype, on its device. ``from_ase`` refuses bad structures
        (invalid atomic numbers by atom index, NaN, coincident atoms, degenerate cells); the model checks
        its elements."""
        graph = from_ase(atoms, self.model.cutoff, dtype=self.dtype)
        self.model.species(graph[K.ATOMIC_NUMBERS])
        return to_device(graph, self.device)
