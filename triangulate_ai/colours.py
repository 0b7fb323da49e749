"""Colours in closed form: the render is linear in the triangles' colours and the background,

    image(x) = sum_t w_t(x) c_t + w_bg(x) bg,   w_t = alpha_t prod_{s > t} (1 - alpha_s),   w_bg = prod_s (1 - alpha_s),

so for fixed shapes and opacities the colours that best match a target (least squares) solve one
small linear system per image, of the triangle count plus one. primitive computes each new
shape's colour directly; this solves all of them at once, occlusion included. Differentiable in
the shapes and opacities, so a network can learn shapes whose best colours fit best.
"""

from __future__ import annotations

import torch

from .raster.base import pixel_centres
from .raster.scene import Scene
from .raster.sdf import signed_distance


def compositing_weights(scene: Scene, height: int, width: int, sigma: float) -> torch.Tensor:
    """(B, T + 1, H * W): each triangle's weight in every pixel, the background's last, for soft
    coverage sigmoid(signed distance / sigma) as every renderer draws it."""
    verts = scene.to_pixels(height, width)  # (B, T, 3, 2)
    px, py = pixel_centres(height, width, verts.device, verts.dtype)
    alpha = scene.opacity[..., None] * torch.sigmoid(signed_distance(px, py, verts) / sigma)  # (B, T, P)
    clear = 1 - alpha
    above = torch.cat([torch.cumprod(clear.flip(1), dim=1).flip(1)[:, 1:], torch.ones_like(clear[:, :1])], dim=1)
    return torch.cat([alpha * above, above[:, :1] * clear[:, :1]], dim=1)


def solve_colours(scene: Scene, target: torch.Tensor, sigma: float, ridge: float = 1e-3) -> Scene:
    """`scene` with the colours and background that best draw `target` (B, 3, H, W) by least
    squares, clamped to [0, 1]. `ridge` (a share of the mean weight per pixel) pulls a triangle
    that covers almost nothing towards its present colour instead of to an arbitrary one."""
    batch, _, height, width = target.shape
    weights = compositing_weights(scene, height, width, sigma)  # (B, K, P), K = T + 1
    gram = weights @ weights.transpose(1, 2)  # (B, K, K)
    pixels = target.reshape(batch, 3, -1).transpose(1, 2)  # (B, P, 3)
    present = torch.cat([scene.colors, scene.background[:, None]], dim=1)  # (B, K, 3)
    strength = ridge * height * width / weights.shape[1]
    eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
    solved = torch.linalg.solve(gram + strength * eye, weights @ pixels + strength * present).clamp(0, 1)
    return scene._replace(colors=solved[:, :-1], background=solved[:, -1])
