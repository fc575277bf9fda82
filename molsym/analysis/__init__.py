"""Analyses built on a model's energy surface: harmonic vibrations (``vibrations``)."""
from molsym.analysis.vibrations import (
    VIBRATION_METHODS,
    Vibrations,
    finite_difference_hessian,
    rigid_body_basis,
    vibrations,
    vibrations_from_hessian,
)

__all__ = ["vibrations", "vibrations_from_hessian", "Vibrations", "finite_difference_hessian", "rigid_body_basis",
           "VIBRATION_METHODS"]
