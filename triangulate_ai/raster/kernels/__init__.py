"""Builds and loads the C++ kernels with torch's JIT extension loader, once per source version.

The build directory is keyed by a hash of the source, the compiler flags, the torch version and
the CPU (the code is compiled for the CPU it builds on), so a changed source or another machine
sharing the cache builds afresh instead of loading a stale or foreign binary. It lives under
$TORCH_EXTENSIONS_DIR when set, else the user's cache directory.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import platform
import shutil
import sys
from pathlib import Path
from types import ModuleType

import torch

SOURCE = Path(__file__).with_name("fused_raster.cpp")
# 512-bit vectors where the CPU has them (GCC prefers 256 by default): the pixel blocks are 16 floats
FLAGS = ["-O3", "-march=native", "-mprefer-vector-width=512", "-fopenmp", "-fno-math-errno", "-fno-trapping-math",
         "-ffp-contract=off"]


class KernelUnavailable(RuntimeError):
    """The kernel could not be built or loaded; the message says why in one line."""


def _cpu_identity() -> str:
    """What -march=native depends on: the CPU model and its feature flags."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    wanted = [line for line in lines if line.startswith(("model name", "flags"))]
    return "\n".join(wanted[:2])


def build_directory() -> Path:
    key = hashlib.sha256()
    # the source's path too: ninja's build file records it, so two checkouts sharing one folder
    # would rebuild each other's kernel on every first use
    for part in (SOURCE.read_bytes(), str(SOURCE.resolve()).encode(), " ".join(FLAGS).encode(),
                 torch.__version__.encode(), sys.version.encode(), _cpu_identity().encode()):
        key.update(part)
    root = os.environ.get("TORCH_EXTENSIONS_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "triangulate_ai")
    return Path(root) / f"fused_raster_{key.hexdigest()[:16]}"


def _one_line(exc: BaseException) -> str:
    """The line of a build failure that names its cause: the compiler's or shell's first complaint,
    not the echoed command lines around it."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    said = [line for line in lines if " -o " not in line and not line.startswith(("FAILED:", "ninja:"))]
    causes = [line for line in said if any(m in line for m in ("error", "not found", "No such file", "fatal"))]
    return ((causes or said or lines or [type(exc).__name__])[0])[:300]


def fused_raster() -> ModuleType:
    """The compiled fused rasterizer, built on first use; raises KernelUnavailable (every call, from
    one attempt per process)."""
    result = _load()
    if isinstance(result, KernelUnavailable):
        raise result
    return result


@functools.cache
def _load() -> ModuleType | KernelUnavailable:
    # its import-time notice about CUDA_HOME concerns CUDA builds, not this CPU-only kernel
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    from torch.utils import cpp_extension

    if shutil.which("ninja") is None:  # the pip-installed ninja sits beside the venv's python
        os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    directory = build_directory()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        return cpp_extension.load(name=directory.name, sources=[str(SOURCE)], extra_cflags=FLAGS,
                                  extra_ldflags=["-fopenmp"], build_directory=str(directory), verbose=False)
    except Exception as exc:  # compiler, ninja, linker or loader: all mean "not available here"
        return KernelUnavailable(_one_line(exc))
