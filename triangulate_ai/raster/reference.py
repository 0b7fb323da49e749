"""Dense reference renderer: every triangle against every pixel, one triangle at a time.

Slow and memory-hungry on purpose: it is the oracle the fast backends are tested against, so it
does the compositing literally as written in the definition, with no culling and no log-space.
"""

from __future__ import annotations

import torch

from .base import Renderer, pixel_centres
from .scene import Scene
from .sdf import signed_distance


# Autograd keeps about this much per (pixel, triangle): 7.8 GB at 256x256 with 500 triangles.
BYTES_PER_PIXEL_TRIANGLE = 240


class ReferenceRenderer(Renderer):
    name = "reference"

    def step_bytes(self, count, batch, height, width, tiles_per_triangle):
        return count * height * width * BYTES_PER_PIXEL_TRIANGLE

    def render(self, scene: Scene, height: int, width: int, return_alpha: bool = False):
        verts = scene.to_pixels(height, width)  # (B, T, 3, 2)
        batch, count = verts.shape[:2]
        px, py = pixel_centres(height, width, verts.device, verts.dtype)
        image = scene.background[:, :, None].expand(batch, 3, height * width)
        transmittance = torch.ones_like(image[:, :1])
        for i in range(count):
            sd = signed_distance(px, py, verts[:, i])  # (B, H*W)
            alpha = (scene.opacity[:, i, None] * torch.sigmoid(sd / self.sigma))[:, None]
            image = alpha * scene.colors[:, i, :, None] + (1 - alpha) * image
            transmittance = (1 - alpha) * transmittance
        image = image.reshape(batch, 3, height, width)
        if return_alpha:
            return image, (1 - transmittance).reshape(batch, 1, height, width)
        return image
