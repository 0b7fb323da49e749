"""Where a new triangle goes: the best of K random candidates around the largest errors.

Each candidate is a random triangle (random turn, size and shape) centred on a point drawn from
the error density. For each, the colour that best fills it (least squares over the pixel centres
it covers, painted "over" the current picture with the given opacity) and the squared error this
removes are computed in closed form; the candidate that removes most is kept and painted into
the picture, so the next new triangle of the same event sees it. This is one greedy step of a
shape-adding method (as primitive does with hill climbing), made cheap by drawing candidates
where the error is; gradient descent then refines every triangle.
"""

from __future__ import annotations

import math

import torch


def candidate_triangles(centres: torch.Tensor, side: float, generator: torch.Generator) -> torch.Tensor:
    """(K, 3, 2) pixel-space triangles around `centres` (K, 2): a random turn, vertices a third
    of a turn apart (+-0.5 rad), radii 0.5-1 x a size drawn between 0.5 and 1.5 x `side`."""
    count = centres.shape[0]
    rand = lambda *shape: torch.rand(*shape, generator=generator, dtype=torch.float64, device="cpu")  # noqa: E731
    turn = rand(count, 1) * (2 * math.pi)
    angles = turn + torch.arange(3, dtype=torch.float64, device="cpu") * (2 * math.pi / 3) + (rand(count, 3) - 0.5)
    size = side / math.sqrt(3) * (0.5 + rand(count, 1))
    radius = size * (0.5 + 0.5 * rand(count, 3))
    return centres[:, None, :] + torch.stack([angles.cos(), angles.sin()], dim=-1) * radius[..., None]


def coverage(triangles: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """(K, h, w) bool: which pixel centres (xs (K, 1, w), ys (K, h, 1)) lie inside each
    pixel-space triangle (K, 3, 2), either winding."""
    signs = []
    for k in range(3):
        a, b = triangles[:, k], triangles[:, (k + 1) % 3]
        ax, ay = a[:, 0, None, None], a[:, 1, None, None]
        ex, ey = (b[:, 0] - a[:, 0])[:, None, None], (b[:, 1] - a[:, 1])[:, None, None]
        signs.append(ex * (ys - ay) - ey * (xs - ax))
    positive = (signs[0] >= 0) & (signs[1] >= 0) & (signs[2] >= 0)
    negative = (signs[0] <= 0) & (signs[1] <= 0) & (signs[2] <= 0)
    return positive | negative


def best_triangles(current: torch.Tensor, target: torch.Tensor, density: torch.Tensor, count: int, side: float,
                   opacity: float, candidates: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` new triangles for one image, greedily: (count, 3, 2) pixel vertices and (count, 3)
    colours. current, target: (3, H, W) float64 CPU; density: (H, W) >= 0, where centres are drawn.
    Each candidate is scored on the window of pixels around its centre that it can reach."""
    height, width = target.shape[-2:]
    picture = current.clone()
    weights = density.flatten().clamp_min(0) + 1e-12
    reach = int(math.ceil(1.5 * side / math.sqrt(3))) + 1  # the largest candidate's circumradius
    offsets = torch.arange(-reach, reach + 1, device="cpu")
    chosen_vertices, chosen_colours = [], []
    for _ in range(count):
        pick = torch.multinomial(weights, candidates, replacement=True, generator=generator)
        jitter = torch.rand(candidates, 2, generator=generator, dtype=torch.float64, device="cpu")
        centres = torch.stack([pick % width, pick // width], dim=1).double() + jitter
        tris = candidate_triangles(centres, side, generator)
        cols = (pick % width)[:, None] + offsets  # (K, w) pixel indices of each window
        rows = (pick // width)[:, None] + offsets
        inside_x, inside_y = (cols >= 0) & (cols < width), (rows >= 0) & (rows < height)
        cols, rows = cols.clamp(0, width - 1), rows.clamp(0, height - 1)
        mask = coverage(tris, cols[:, None, :].double() + 0.5, rows[:, :, None].double() + 0.5)
        mask = (mask & inside_y[:, :, None] & inside_x[:, None, :]).to(torch.float64)  # (K, h, w)
        pixels = mask.flatten(1).sum(dim=1)
        flat = rows[:, :, None] * width + cols[:, None, :]  # (K, h, w) flat pixel index
        p = picture.flatten(1)[:, flat]  # (3, K, h, w)
        t = target.flatten(1)[:, flat]
        # painting colour c over the picture p with opacity a: a c + (1 - a) p; the best c per channel
        # is the mean over the covered pixels of (t - (1 - a) p) / a, clamped to [0, 1]
        wanted = (t - (1 - opacity) * p) / opacity
        colours = ((wanted * mask).flatten(2).sum(dim=2) / pixels.clamp_min(1)).clamp(0, 1).T  # (K, 3)
        before = (((p - t).square() * mask).flatten(2).sum(dim=2)).sum(dim=0)
        after = (((opacity * colours.T[:, :, None, None] + (1 - opacity) * p - t).square() * mask)
                 .flatten(2).sum(dim=2)).sum(dim=0)
        best = int(torch.argmax(before - after))
        chosen_vertices.append(tris[best])
        chosen_colours.append(colours[best])
        where = flat[best][mask[best].bool()]
        painted = picture.view(3, -1)  # a view: painting it paints the picture
        painted[:, where] = opacity * colours[best][:, None] + (1 - opacity) * painted[:, where]
    return torch.stack(chosen_vertices), torch.stack(chosen_colours)
