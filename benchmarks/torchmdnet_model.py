"""torchmd-net's TensorNet for the benchmark, at the same size as molsym's (see bench_tensornet.py)."""
from __future__ import annotations

import warnings

import numpy as np
import torch

class TorchMDNet:
    """torchmd-net's TensorNet through ``create_model``; both kernel back ends of torchmd-net 3.x."""

    def __init__(self):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:  # keep warp's banner and kernel-compilation log out of the Markdown output
                import warp

                warp.config.log_level = getattr(warp, "LOG_WARNING", 30)
            except ImportError:
                pass
            import torchmdnet
            import torchmdnet.models.tensornet as tn
            from torchmdnet.models.model import create_model
        self.tn = tn
        self.create_model = create_model
        self.version = getattr(torchmdnet, "__version__", None) or _dist_version("torchmd-net")
        self._warp = {name: getattr(tn, name) for name in
                      ("compose_tensor", "decompose_tensor", "tensor_matmul_o3", "tensor_matmul_so3")}
        self.has_warp = bool(tn.OPT)
        self.backends = ["warp", "torch"] if self.has_warp else ["torch"]

    def use(self, backend: str) -> None:
        """Select the module-level kernels TensorNet looks up at call time."""
        tn = self.tn
        if backend == "warp":
            tn.OPT = True
            for name, fn in self._warp.items():
                setattr(tn, name, fn)
        else:
            tn.OPT = False
            for name in self._warp:
                setattr(tn, name, getattr(tn, "_" + name))

    def model(self, dtype: torch.dtype, backend: str, size: tuple[int, int, float, int],
              static_shapes: bool = False):
        """TensorNet of ``size`` = (width, layers, cutoff Å, radial functions), random weights (seed 0)."""
        width, layers, cutoff, num_rbf = size
        self.use(backend)
        args = dict(
            model="tensornet", embedding_dimension=width, num_layers=layers, num_rbf=num_rbf,
            rbf_type="expnorm", trainable_rbf=False, activation="silu", cutoff_lower=0.0,
            cutoff_upper=cutoff, max_z=128, max_num_neighbors=64, equivariance_invariance_group="O(3)",
            static_shapes=static_shapes, precision=64 if dtype == torch.float64 else 32, derivative=True,
            atom_filter=-1, prior_model=None, output_model="Scalar", reduce_op="add",
        )
        torch.manual_seed(0)
        model = self.create_model(args).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        return model

    @staticmethod
    def setup_for_inference(net, z, batch, dtype) -> None:
        """torchmd-net's inference mode: a precomputed table of the element-pair embeddings.

        Its table is built in the default dtype; cast it to the model's so float64 stays float64.
        """
        rep = net.representation_model
        if hasattr(rep, "setup_for_inference"):
            rep.setup_for_inference(z, batch)
            emb = rep.tensor_embedding
            emb.Zij_map = emb.Zij_map.to(dtype)

    @staticmethod
    def inputs(structures, dtype):
        z = torch.tensor(np.concatenate([a.numbers for a in structures]), dtype=torch.long)
        pos = torch.tensor(np.concatenate([a.positions for a in structures]), dtype=dtype)
        batch = torch.cat([torch.full((len(a),), k, dtype=torch.long) for k, a in enumerate(structures)])
        periodic = [bool(a.pbc.all()) for a in structures]
        box = None
        if any(periodic):
            if len(structures) != 1:
                raise ValueError("this benchmark passes a box to torchmd-net for single periodic structures only")
            box = torch.tensor(structures[0].cell.array, dtype=dtype)
        return z, pos, batch, box


def _dist_version(name: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:  # noqa: BLE001
        return None
