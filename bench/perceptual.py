"""What lowers the cost of a perceptual step on CPU: forward+backward of the VGG16 and LPIPS terms
on a batch of renders, each variant against the default measured in the same run.

Variants: the network input `resolution` (render and target resized, antialiased, before the
network), channels_last memory format, torch.compile of the feature extractor, and the thread
count. Rounds interleave the variants (A B C ... A B C ...) so drift of a shared machine hits all
of them alike; the median of each is reported with its ratio to `default`. Networks have random
weights (speed does not depend on the values; runs offline). Prints a Markdown table; --json
writes the figures with the date, machine, threads and commit (docs/configuration.md shows them).

    python bench/perceptual.py [--batch 8] [--rounds 5] [--skip-compile] [--json bench/results/perceptual.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from triangulate_ai.loss.perceptual import LpipsTermConfig, VggTermConfig  # noqa: E402
from triangulate_ai.loss.networks import clear_shared  # noqa: E402
from triangulate_ai.loss.perceptual import LPIPSTerm, VGGPerceptual, lpips_network  # noqa: E402
from triangulate_ai.provenance import provenance  # noqa: E402

HEIGHT, WIDTH = 171, 256  # a Kodak image at the study's 256-px long side


def make_step(resolution: int | None, channels_last: bool, compiled: bool, threads: int,
              batch: int) -> Callable[[], None]:
    """One forward+backward of VGG + LPIPS on a (batch, 3, H, W) render, set up as the variant says."""
    clear_shared()
    vgg = VGGPerceptual(VggTermConfig(weights="random", resolution=resolution))
    lp = LPIPSTerm(LpipsTermConfig(net="alex", weights="random", resolution=resolution))
    device, dtype = torch.device("cpu"), torch.float32
    vgg.prepare(device, dtype)
    lp.prepare(device, dtype)
    nets = [vgg.network(device, dtype), lpips_network(lp.cfg, lp.setting, device, dtype)]
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for net in nets:
        net.to(memory_format=fmt)
    if compiled:
        vgg.features = torch.compile(vgg.features)
    gen = torch.Generator().manual_seed(0)
    target = torch.rand(batch, 3, HEIGHT, WIDTH, generator=gen).contiguous(memory_format=fmt)
    render = torch.rand(batch, 3, HEIGHT, WIDTH, generator=gen).contiguous(memory_format=fmt)

    def step() -> None:
        torch.set_num_threads(threads)
        pred = render.clone().requires_grad_(True)
        (vgg(pred, target) + lp(pred, target)).sum().backward()
    return step


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--skip-compile", action="store_true", help="leave out torch.compile (slow to build)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    threads = torch.get_num_threads()
    variants = {"default": dict(resolution=None, channels_last=False, compiled=False, threads=threads),
                "resolution 128": dict(resolution=128, channels_last=False, compiled=False, threads=threads),
                "channels_last": dict(resolution=None, channels_last=True, compiled=False, threads=threads),
                "1 thread": dict(resolution=None, channels_last=False, compiled=False, threads=1)}
    if not args.skip_compile:
        variants["torch.compile"] = dict(resolution=None, channels_last=False, compiled=True, threads=threads)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for round_ in range(args.rounds + 1):  # round 0 warms up (and compiles) and is not counted
        for name, options in variants.items():
            step = make_step(**options, batch=args.batch)
            step()
            start = time.perf_counter()
            step()
            if round_:
                times[name].append(time.perf_counter() - start)
    torch.set_num_threads(threads)
    base = statistics.median(times["default"])
    print(f"VGG16 (relu1_2..relu4_3) + LPIPS-alex, random weights, forward+backward, batch {args.batch} of "
          f"{WIDTH}x{HEIGHT}, {threads} thread(s) unless named, median of {args.rounds} interleaved rounds\n")
    print("| variant | s/step | vs default |\n|---|---|---|")
    figures = {}
    for name, values in times.items():
        median = statistics.median(values)
        figures[name] = {"s_per_step": round(median, 4), "vs_default": round(median / base, 4), "rounds": values}
        print(f"| {name} | {median:.3f} | {median / base:.2f}x |")
    if args.json:
        summary = {**provenance(), "what": "VGG16 (relu1_2..relu4_3) + LPIPS-alex, random weights, forward+backward",
                   "batch": args.batch, "image": f"{WIDTH}x{HEIGHT}", "rounds": args.rounds, "variants": figures}
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
