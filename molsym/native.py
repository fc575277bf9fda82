"""Build and load the package's C++ kernels for the CPU, once per machine.

A kernel is one C++ source file of the package with an ``extern "C"`` entry point and no
dependency but the C++ standard library (and OpenMP where the compiler has it), and the
package's headers it includes by quotes from its own folder. On first use
it is compiled with the machine's C++ compiler (``$CXX``, else ``c++``, ``g++`` or ``clang++``)
for this CPU (``-O3 -march=native``; without the flags the compiler refuses) into a shared
library cached under ``$MOLSYM_CACHE_DIR`` (default ``$XDG_CACHE_HOME/molsym`` or
``~/.cache/molsym``). The file name carries a hash of the source, the compiler, the flags and
the CPU, so a changed source, compiler or machine builds anew; the library is written to a
temporary name and renamed, so concurrent processes never load half a file. A build takes a
second or two.

Where no compiler works, or with ``MOLSYM_NATIVE=0``, :func:`load` returns ``None`` and the
callers keep their PyTorch path: the same results, slower. :func:`status` says which and why.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

_FLAG_SETS = (
    ("-O3", "-march=native", "-fopenmp"),
    ("-O3", "-fopenmp"),
    ("-O3", "-march=native"),
    ("-O3",),
)
_BUILD_TIMEOUT_S = 300
_status: dict[str, str] = {}


def cache_dir() -> Path:
    """Where built kernels are kept."""
    explicit = os.environ.get("MOLSYM_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "molsym"


def enabled() -> bool:
    """False when ``MOLSYM_NATIVE`` is set to 0, false, no or off."""
    return os.environ.get("MOLSYM_NATIVE", "1").strip().lower() not in ("0", "false", "no", "off")


def status(source: str) -> str:
    """How the kernel ``source`` (a file name in the package) was loaded, or why it was not."""
    return _status.get(source, "not requested")


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _cpu_signature() -> str:
    """The CPU model and instruction-set flags (what -march=native compiles for)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            lines = [line for line in f if line.startswith(("model name", "flags", "Features", "CPU part"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return platform.processor() or platform.machine()


def _compile(compiler: str, source: Path, flags, target: Path) -> str:
    """Compile into ``target`` (atomically); '' on success, else the compiler's complaint."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, partial = tempfile.mkstemp(prefix=target.stem + ".", suffix=".tmp", dir=target.parent)
        os.close(fd)
    except OSError as error:
        return f"cannot write to {target.parent}: {error}"
    command = [compiler, *flags, "-std=c++17", "-shared", "-fPIC", str(source), "-o", partial]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=_BUILD_TIMEOUT_S)
        if result.returncode != 0:
            text = (result.stderr or result.stdout).strip()
            return text.splitlines()[-1] if text else f"exit status {result.returncode}"
        os.replace(partial, target)
        return ""
    except (OSError, subprocess.SubprocessError) as error:
        return str(error)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)


def _source_with_headers(path: Path) -> bytes:
    """The source's bytes followed by those of the headers it includes by quotes from its folder
    (so that a changed header builds anew)."""
    code = path.read_bytes()
    headers = re.findall(rb'^\s*#\s*include\s+"([^"]+)"', code, flags=re.MULTILINE)
    return code + b"".join(b"\0" + (path.parent / name.decode()).read_bytes() for name in headers)


@functools.lru_cache(maxsize=None)
def load(source: str) -> ctypes.CDLL | None:
    """The shared library built from ``molsym/<source>`` (e.g. ``"o3/grid_products.cpp"``), or None."""
    if not enabled():
        _status[source] = "disabled (MOLSYM_NATIVE=0)"
        return None
    path = Path(__file__).resolve().parent / source
    compiler = _compiler()
    if compiler is None:
        _status[source] = "no C++ compiler found ($CXX, c++, g++, clang++)"
        return None
    try:
        version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as error:
        _status[source] = f"the compiler {compiler} does not run: {error}"
        return None
    code = _source_with_headers(path)
    errors = []
    for flags in _FLAG_SETS:
        key = hashlib.sha256(b"\0".join([code, compiler.encode(), version.encode(), " ".join(flags).encode(),
                                         platform.machine().encode(), _cpu_signature().encode()])).hexdigest()[:20]
        target = cache_dir() / f"{path.stem}-{key}.so"
        if not target.exists():
            error = _compile(compiler, path, flags, target)
            if error:
                errors.append(f"{' '.join(flags)}: {error}")
                continue
        try:
            library = ctypes.CDLL(str(target))
        except OSError as error:
            errors.append(f"{' '.join(flags)}: {error}")
            continue
        _status[source] = f"built with {compiler} {' '.join(flags)} ({target})"
        return library
    _status[source] = "the build failed: " + "; ".join(errors)
    return None


def load_functions(source: str, signatures: dict[str, str]) -> ctypes.CDLL | None:
    """:func:`load`, with each named entry point's arguments typed and an int result.

    signatures: entry point -> its argument types, one letter each: ``i`` int, ``l`` int64,
    ``d`` double, ``p`` pointer.
    """
    library = load(source)
    if library is not None:
        kinds = {"i": ctypes.c_int, "l": ctypes.c_int64, "d": ctypes.c_double, "p": ctypes.c_void_p}
        for name, letters in signatures.items():
            function = getattr(library, name)
            function.argtypes, function.restype = [kinds[letter] for letter in letters], ctypes.c_int
    return library


def plain(t) -> bool:
    """A tensor with storage of its own: no torch.func wrapper, no batched gradient of autograd's
    ``is_grads_batched``, no active transform (what a kernel can read through its pointer)."""
    functorch = torch._C._functorch
    return not (functorch.is_functorch_wrapped_tensor(t) or functorch.is_batchedtensor(t)
                or functorch.is_legacy_batchedtensor(t) or torch._C._are_functorch_transforms_active())


def eager_cpu(*tensors) -> bool:
    """Whether ``tensors`` can be handed to a CPU kernel: an eager call (no trace, compile or
    torch.func transform) on plain CPU tensors of one dtype, float32 or float64."""
    if torch.jit.is_tracing() or torch.compiler.is_compiling():  # first: nothing below is traced
        return False
    dtype = tensors[0].dtype
    return dtype in (torch.float32, torch.float64) and all(
        t.device.type == "cpu" and t.dtype == dtype and plain(t) for t in tensors)
