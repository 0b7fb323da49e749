"""TriangulateAI: fit images with learnable, differentiably rendered triangles.

    import triangulate_ai as tai
    result = tai.fit("photo.jpg", config="configs/quickstart.yaml", triangles=300)
    result.save_svg("photo.svg")

The names below load on first use (PEP 562), so that importing the package, as every command
does first, costs nothing until torch is needed.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_HOMES = {
    "FitFailed": "api", "FitResult": "api", "Run": "api", "fit": "api", "load_triangles": "api", "render": "api",
    "predict": "instant",
    "Config": "config", "load_config": "config",
    "UserError": "errors",
    "Fitter": "loop", "StepResult": "loop",
    "Scene": "raster",
    "TriangleSet": "triangles",
}

__all__ = sorted(_HOMES) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))
