"""Keep freed memory in the process for reuse (glibc malloc).

One energy + forces evaluation allocates and frees tens of temporary tensors of
0.1-10 MB. With glibc's default (dynamic) thresholds many of them are mapped
from and returned to the kernel on every call, and every first touch of a fresh
page is a page fault: on a virtual machine that cost 4-5 ms of a 14 ms call of a
27-atom molecule (median; 10 ms with the memory kept). :func:`keep_freed_memory`
sets fixed thresholds so that blocks up to 32 MiB come from the heap and up to
``trim_threshold`` bytes of freed heap stay mapped. It is process-wide and has no
effect on allocators other than glibc's (e.g. jemalloc, macOS, Windows).
"""
from __future__ import annotations

import ctypes
import ctypes.util

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MAX_MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's upper limit on 64-bit systems


def keep_freed_memory(trim_threshold: int = 1 << 30) -> bool:
    """Set glibc's mmap threshold to 32 MiB and its trim threshold to ``trim_threshold`` bytes.

    Returns True when the thresholds were set, False when the C library is not glibc.
    """
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, _MAX_MMAP_THRESHOLD) == 1
    return bool(mallopt(_M_TRIM_THRESHOLD, int(trim_threshold)) == 1 and ok)
