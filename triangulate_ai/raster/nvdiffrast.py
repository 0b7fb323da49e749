"""nvdiffrast backend (CUDA only, optional): hard-edged rasterisation with analytic antialiasing.

Triangles go to clip space with w = 1 and one depth per triangle (later triangles nearer, so the
depth test reproduces painter's order); y is mapped so that nvdiffrast's row 0 (its bottom row)
is our top row, which spares a flip of the output. Translucent triangles are composited front to
back over depth-peeled layers (`DepthPeeler`, one full rasterisation pass per layer): exact while
no pixel is covered by more than `max_layers` triangles; deeper ones are dropped there. With
opaque triangles one layer is exact. Position gradients come only from `antialias` (silhouette
edges), unlike the soft renderer, where every pixel within a few sigma of an edge contributes:
nvdiffrast's edge is the true hard edge blended analytically over one pixel, and `render.sigma`
does not apply.

Install (NVIDIA Source Code License, non-commercial use): `pip install -e '.[nvdiffrast]'` installs
diffrp-nvdiffrast (a PyPI repackaging of nvdiffrast 0.3.3 that compiles its CUDA code with nvcc
and ninja on first use), or build the official package from source against the installed torch
with `pip install --no-build-isolation git+https://github.com/NVlabs/nvdiffrast`.
"""

from __future__ import annotations

import importlib
import importlib.util

import torch

from pydantic import Field

from ..errors import UserError
from ..section import Section
from .base import Renderer
from .scene import Scene

INSTALL_HINT = "pip install -e '.[nvdiffrast]' (see the README's nvdiffrast section)"


def available() -> bool:
    """True when CUDA and an importable nvdiffrast are both present (what `auto` asks)."""
    return torch.cuda.is_available() and importlib.util.find_spec("nvdiffrast") is not None


def clip_space(vertices: torch.Tensor) -> torch.Tensor:
    """(B, T, 3, 2) normalised vertices -> (B, 3T, 4) clip-space positions.

    x: 0..1 -> -1..1; y: 0 (our top row) -> -1 (nvdiffrast's row 0); z: triangle t of T gets
    1 - 2 (t + 1) / (T + 1), decreasing with t so later triangles are nearer; w = 1."""
    batch, count = vertices.shape[:2]
    xy = vertices * 2 - 1
    depth = 1 - 2 * torch.arange(1, count + 1, device=vertices.device, dtype=vertices.dtype) / (count + 1)
    z = depth[None, :, None, None].expand(batch, count, 3, 1)
    w = torch.ones_like(z)
    return torch.cat([xy, z, w], dim=-1).reshape(batch, count * 3, 4)


def vertex_attributes(scene: Scene) -> torch.Tensor:
    """(B, 3T, 4) rgb + opacity, each triangle's values on its three vertices."""
    per_triangle = torch.cat([scene.colors, scene.opacity[..., None]], dim=-1)  # (B, T, 4)
    return per_triangle.repeat_interleave(3, dim=1)


class NvdiffrastOptions(Section):
    max_layers: int = Field(8, ge=1)  # depth-peeling passes: overlaps deeper than this are not drawn


class NvdiffrastRenderer(Renderer):
    name = "nvdiffrast"
    Options = NvdiffrastOptions
    auto_on = ("cuda",)
    preference = 15
    description = "nvdiffrast"

    @classmethod
    def from_config(cls, cfg, device_type: str) -> "NvdiffrastRenderer":
        return cls(cfg.max_layers)

    @classmethod
    def unavailable(cls, device_type: str) -> str | None:
        return None if available() else "the nvdiffrast package or CUDA is missing"

    def __init__(self, max_layers: int = 8) -> None:
        super().__init__(sigma=1.0)  # unused: nvdiffrast's edges are analytic, not sigmoid
        if max_layers < 1:
            raise ValueError(f"max_layers must be >= 1, got {max_layers}")
        self.max_layers = int(max_layers)
        try:
            self.dr = importlib.import_module("nvdiffrast.torch")
        except ImportError as exc:
            raise UserError(f"render.backend = nvdiffrast needs the nvdiffrast package ({exc}); "
                            f"install it with {INSTALL_HINT}, or use render.backend=torch") from None
        if not torch.cuda.is_available():
            raise UserError("render.backend = nvdiffrast needs a CUDA device and none is available; "
                            "use render.backend=torch (or auto)")
        self._contexts: dict[str, object] = {}

    def step_bytes(self, count, batch, height, width, tiles_per_triangle):
        """Per peeled layer: rasterizer output, attributes and the antialiased layer (float32)."""
        return batch * height * width * self.max_layers * 16 * 4 + count * 3 * 4 * 4

    def _context(self, device: torch.device):
        key = str(device)
        if key not in self._contexts:
            self._contexts[key] = self.dr.RasterizeCudaContext(device=device)
        return self._contexts[key]

    def render(self, scene: Scene, height: int, width: int, return_alpha: bool = False):
        device = scene.vertices.device
        if device.type != "cuda":
            raise UserError("the nvdiffrast renderer needs CUDA tensors; run with device=cuda")
        batch, count = scene.vertices.shape[:2]
        pos = clip_space(scene.vertices.float()).contiguous()
        tri = torch.arange(count * 3, device=device, dtype=torch.int32).reshape(count, 3)
        attrs = vertex_attributes(Scene(*(t.float() for t in scene))).contiguous()
        colour = torch.zeros(batch, height, width, 3, device=device)
        transmittance = torch.ones(batch, height, width, 1, device=device)
        with self.dr.DepthPeeler(self._context(device), pos, tri, (height, width)) as peeler:
            for _ in range(self.max_layers):
                rast, _ = peeler.rasterize_next_layer()
                covered = (rast[..., 3:4] > 0).float()
                if not bool(covered.any()):
                    break
                rgba, _ = self.dr.interpolate(attrs, rast, tri)
                alpha = rgba[..., 3:4] * covered
                layer = torch.cat([rgba[..., :3] * alpha, alpha], dim=-1)  # premultiplied
                layer = self.dr.antialias(layer.contiguous(), rast, pos, tri)
                colour = colour + transmittance * layer[..., :3]
                transmittance = transmittance * (1 - layer[..., 3:4])
        image = colour + transmittance * scene.background.float()[:, None, None, :]
        image = image.permute(0, 3, 1, 2).to(scene.vertices.dtype)
        if return_alpha:
            return image, (1 - transmittance).permute(0, 3, 1, 2).to(scene.vertices.dtype)
        return image
