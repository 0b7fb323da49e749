"""Colours in closed form: the render is linear in the triangles' colours and the background,

    image(x) = sum_t w_t(x) c_t + w_bg(x) bg,   w_t = alpha_t prod_{s > t} (1 - alpha_s),   w_bg = prod_s (1 - alpha_s),

so for fixed shapes and opacities the colours that best match a target (least squares) solve one
small linear system per image, of the triangle count plus one. primitive computes each new
shape's colour directly; this solves all of them at once, occlusion included. Differentiable in
the shapes and opacities, so a network can learn shapes whose best colours fit best.
"""

from __future__ import annotations

import torch

from .raster.base import pixel_centres, support_radius
from .raster.kernels import KernelUnavailable, fused_raster
from .raster.scene import Scene
from .raster.sdf import signed_distance

CUTOFF = 1e-6  # coverage below this is left out by the sparse kernel, as the renderers leave it out


def compositing_weights(scene: Scene, height: int, width: int, sigma: float) -> torch.Tensor:
    """(B, T + 1, H * W): each triangle's weight in every pixel, the background's last, for soft
    coverage sigmoid(signed distance / sigma) as every renderer draws it."""
    verts = scene.to_pixels(height, width)  # (B, T, 3, 2)
    px, py = pixel_centres(height, width, verts.device, verts.dtype)
    alpha = scene.opacity[..., None] * torch.sigmoid(signed_distance(px, py, verts) / sigma)  # (B, T, P)
    clear = 1 - alpha
    above = torch.cat([torch.cumprod(clear.flip(1), dim=1).flip(1)[:, 1:], torch.ones_like(clear[:, :1])], dim=1)
    return torch.cat([alpha * above, above[:, :1] * clear[:, :1]], dim=1)


def normal_equations(scene: Scene, target: torch.Tensor, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, K, K) gram = A A^T and (B, K, 3) rhs = A y, A the compositing weights of every pixel
    and y the target (B, 3, H, W). On CPU, when no gradient is wanted, the C++ kernel evaluates
    each triangle only near itself (about 10x faster at 128 px); else the dense weights above."""
    batch, _, height, width = target.shape
    wants_grad = torch.is_grad_enabled() and (scene.vertices.requires_grad or scene.opacity.requires_grad)
    if target.device.type == "cpu" and not wants_grad:
        try:
            kernel = fused_raster()
        except KernelUnavailable:
            kernel = None
        if kernel is not None:
            verts = scene.to_pixels(height, width).contiguous()
            gram, rhs = kernel.colour_system(verts, scene.opacity.to(verts.dtype).contiguous(), target.contiguous(),
                                             sigma, support_radius(sigma, CUTOFF))
            return gram.to(target.dtype), rhs.to(target.dtype)
    weights = compositing_weights(scene, height, width, sigma)  # (B, K, P), K = T + 1
    pixels = target.reshape(batch, 3, -1).transpose(1, 2)  # (B, P, 3)
    return weights @ weights.transpose(1, 2), weights @ pixels


def solve_colours(scene: Scene, target: torch.Tensor, sigma: float, ridge: float = 1e-3,
                  keep_background: bool = False) -> Scene:
    """`scene` with the colours and background that best draw `target` (B, 3, H, W) by least
    squares, clamped to [0, 1]; with `keep_background`, the triangles' colours that best draw it
    over the scene's own background. `ridge` (a share of the mean weight per pixel) pulls a
    triangle that covers almost nothing towards its present colour instead of to an arbitrary one."""
    return solve_and_score(scene, target, sigma, ridge, keep_background)[0]


def solve_and_score(scene: Scene, target: torch.Tensor, sigma: float, ridge: float = 1e-3,
                    keep_background: bool = False) -> tuple[Scene, torch.Tensor]:
    """solve_colours, and the (B,) mean squared error of each solved soft drawing against the
    target, from the same normal equations: |A^T c - y|^2 = y.y - 2 c.(A y) + c.(A A^T c)."""
    height, width = target.shape[-2:]
    gram, rhs = normal_equations(scene, target, sigma)
    present = torch.cat([scene.colors, scene.background[:, None]], dim=1).to(gram.dtype)  # (B, K, 3)
    strength = ridge * height * width / gram.shape[-1]
    system, known, prior = gram, rhs, present
    if keep_background:  # the background's part moves to the right-hand side
        system, known, prior = gram[:, :-1, :-1], rhs[:, :-1] - gram[:, :-1, -1:] @ present[:, -1:], present[:, :-1]
    eye = torch.eye(system.shape[-1], dtype=gram.dtype, device=gram.device)
    solved = torch.linalg.solve(system + strength * eye, known + strength * prior).clamp(0, 1)
    if keep_background:
        solved = torch.cat([solved, present[:, -1:]], dim=1)
    squares = (target.to(gram.dtype) ** 2).sum((1, 2, 3)) - 2 * (solved * rhs).sum((1, 2)) + \
        torch.einsum("bki,bkl,bli->b", solved, gram, solved)
    error = squares.clamp_min(0) / (3 * height * width)
    return scene._replace(colors=solved[:, :-1], background=solved[:, -1]), error
