"""TriangulateAI: fit images with learnable, differentiably rendered triangles.

    import triangulate_ai as tai
    result = tai.fit("photo.jpg", config="configs/quickstart.yaml", triangles=300)
    result.save_svg("photo.svg")
"""

__version__ = "0.1.0"

from .api import FitFailed, FitResult, Run, fit, load_triangles, render  # noqa: E402
from .config import Config, load_config  # noqa: E402
from .errors import UserError  # noqa: E402
from .loop import Fitter, StepResult  # noqa: E402
from .raster import Scene  # noqa: E402
from .triangles import TriangleSet  # noqa: E402

__all__ = ["Config", "FitFailed", "FitResult", "Fitter", "Run", "Scene", "StepResult", "TriangleSet", "UserError",
           "fit", "load_config", "load_triangles", "render", "__version__"]
