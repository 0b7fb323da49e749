"""Command line of `visualize_geometric_loss.py` (see its docstring for examples)."""

from __future__ import annotations

import argparse
import functools
from pathlib import Path
from typing import Callable

from ..config import Config, load_config
from ..api import check_folder
from ..errors import ArgumentParser, UserError, one_line_errors, program_name
from ..run import metric_series
from ..runfolder import METRICS
from . import landscape, plots

EXAMPLES = """examples:
  analytic:   python visualize_geometric_loss.py analytic --out figures/
  empirical:  python visualize_geometric_loss.py empirical --run runs/demo --out figures/ --points 41
              python visualize_geometric_loss.py empirical --config configs/quickstart.yaml \\
                  --image examples/kodim23.png --set image.max_size=64 --out figures/
  curves:     python visualize_geometric_loss.py curves runs/a runs/b --out figures/
"""


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog=program_name(), epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     description="Loss-landscape figures (PNG, and PDF with --pdf).")
    sub = parser.add_subparsers(dest="mode", required=True)
    analytic = sub.add_parser("analytic", help="objectives of two losses on a grid, with gradient fields",
                              epilog="example: python visualize_geometric_loss.py analytic --out figures/")
    analytic.add_argument("--low", type=float, default=0.01)
    analytic.add_argument("--high", type=float, default=2.0)
    empirical = sub.add_parser("empirical", help="loss terms and objectives along random directions around a fit",
                               epilog="example: python visualize_geometric_loss.py empirical --run runs/demo "
                                      "--out figures/")
    source = empirical.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", type=Path, help="a run folder (its config.yaml and checkpoint.pt)")
    source.add_argument("--config", type=Path, help="a config, with --image: around the initial triangles")
    empirical.add_argument("--image", type=Path)
    empirical.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    empirical.add_argument("--points", type=int, default=41, help="points per axis (41 -> a 41x41 slice)")
    empirical.add_argument("--span", type=float, default=1.0, help="coefficients run from -span to span")
    empirical.add_argument("--dims", type=int, nargs="+", default=[1, 2], choices=[1, 2])
    empirical.add_argument("--seed", type=int, default=0, help="seed of the random directions")
    curves = sub.add_parser("curves", help="raw losses, log losses and weights of runs over steps",
                            epilog="example: python visualize_geometric_loss.py curves runs/a runs/b --out figures/")
    curves.add_argument("runs", type=Path, nargs="+")
    for p in (analytic, empirical, curves):
        p.add_argument("--out", type=Path, default=Path("figures"))
        p.add_argument("--pdf", action="store_true", help="also write PDF")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return one_line_errors(lambda: _visualize(args))


def _visualize(args: argparse.Namespace) -> int:
    """Every input is checked and every figure computed before --out is made: an error leaves
    nothing behind."""
    check_folder(args.out)
    if args.mode == "analytic":
        draw = functools.partial(plots.plot_analytic, args.out, args.pdf, args.low, args.high)
    elif args.mode == "empirical":
        draw = _empirical(args)
    else:
        missing = [str(r) for r in args.runs if not (r / METRICS).is_file()]
        if missing:
            raise UserError(f"not a run folder (no metrics.jsonl): {missing[0]}")
        runs = list(dict.fromkeys(r.resolve() for r in args.runs))
        draw = functools.partial(plots.plot_curves,
                                 {label: metric_series(r) for label, r in zip(run_labels(runs), runs)},
                                 args.out, args.pdf, note=random_note([_run_config(r) for r in runs]))
    made = not args.out.exists()
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        written = draw()
    except OSError as exc:
        if made and args.out.is_dir() and not any(args.out.iterdir()):
            args.out.rmdir()
        raise UserError(f"--out {args.out}: cannot write the figures there ({exc.strerror or exc})") from None
    for path in written:
        print(path)
    return 0


def run_labels(folders: list[Path]) -> list[str]:
    """The shortest trailing paths that tell the folders apart: runs/ablation/x/gm/a_seed0 and
    .../equal/a_seed0 become gm/a_seed0 and equal/a_seed0 (never one label for two runs)."""
    parts = [f.parts for f in folders]
    for depth in range(1, max((len(p) for p in parts), default=1) + 1):
        labels = ["/".join(p[-depth:]) for p in parts]
        if len(set(labels)) == len(labels):
            return labels
    return [str(f) for f in folders]


def _run_config(folder: Path) -> Config | None:
    try:
        return load_config(folder / "config.yaml")
    except UserError:
        return None


def random_note(configs: list[Config | None]) -> str | None:
    """A line for figures that show numbers from randomly initialised networks, else None."""
    keys = sorted({k for c in configs if c is not None for k, v in c.network_weights().items() if v == "random"})
    terms = [k.split(".")[2] for k in keys if k.startswith("loss.terms.")]
    if not terms:
        return None
    return f"{', '.join(terms)}: randomly initialised networks (values not comparable with pretrained ones)"


def _empirical(args) -> Callable[[], list[Path]]:
    """Slices of the loss landscape, computed now; the returned function draws them."""
    if args.run is not None:
        if not (args.run / "checkpoint.pt").is_file():
            raise UserError(f"no checkpoint.pt in {args.run}")
        fitter = landscape.load_fitter(args.run / "config.yaml", None, tuple(args.overrides),
                                       args.run / "checkpoint.pt")
        run_weights, label = landscape.last_weights(args.run), fitter.cfg.loss.type
    else:
        if args.image is None:
            raise UserError("--config needs --image")
        fitter = landscape.load_fitter(args.config, args.image, tuple(args.overrides))
        run_weights, label = None, ""
    weights = {name: term.weight for name, term in fitter.cfg.loss.active_terms().items()}
    note = random_note([fitter.cfg])
    figures = []
    if 1 in args.dims:
        alphas, losses = landscape.slice_1d(fitter, args.points, args.span, args.seed)
        objectives = landscape.totals(losses, weights, run_weights=run_weights, run_label=label)
        figures.append(functools.partial(plots.plot_slice_1d, alphas, losses, objectives, args.out, args.pdf, note))
    if 2 in args.dims:
        axis, surfaces = landscape.slice_2d(fitter, args.points, args.span, args.seed)
        surfaces.update(landscape.totals(surfaces, weights, run_weights=run_weights, run_label=label))
        figures.append(functools.partial(plots.plot_slice_2d, axis, surfaces, args.out, args.pdf, note))
    return lambda: [path for figure in figures for path in figure()]
