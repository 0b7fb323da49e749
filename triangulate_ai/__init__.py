"""TriangulateAI: fit images with learnable, differentiably rendered triangles."""

__version__ = "0.1.0"
