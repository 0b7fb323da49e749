"""Summaries of an ablation, read from its run folders: results.csv, results.md and plots."""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from ..monitor import WARNING_KINDS  # noqa: E402
from ..run import metric_series  # noqa: E402
from .plan import PlannedRun, read_json_object  # noqa: E402
from .statistics import COMPARED, Comparison, compare, per_image  # noqa: E402

COLUMNS = ["method", "image", "seed", "status", "psnr", "ssim", "colour_shift", "lpips", "lpips_meaningful",
           "random_networks",
           "wall_time_s", "iterations", "warnings", "collapse", "error", "folder"]
RANDOM_LPIPS = "random network: not meaningful"
RANDOM_FITS = "fits driven by random-network losses"
METRICS = [("psnr", "PSNR (dB)", max), ("ssim", "SSIM", max), ("colour_shift", "colour shift (ΔE00)", min),
           ("lpips", "LPIPS", min)]


def collect(runs: list[PlannedRun]) -> list[dict]:
    """One row per planned run, from its folder (summary.json, or failed.json)."""
    rows = []
    for run in runs:
        folder = run.folder
        row = {"method": run.method, "family": run.family, "grid": run.grid, "image": run.image,
               "seed": run.seed, "folder": str(folder)}
        failed, s = read_json_object(folder / "failed.json"), read_json_object(folder / "summary.json")
        if failed is not None:
            row.update(status="failed", error=failed.get("error", ""))
        elif s is not None and all(key in s for key in ("psnr", "ssim", "wall_time_s", "iterations")):
            kinds = [w["kind"] for w in s.get("warnings", [])]
            row.update(status="ok" if s.get("completed") else "incomplete", psnr=_psnr(s["psnr"]), ssim=s["ssim"],
                       colour_shift=s.get("colour_shift"),
                       lpips=s.get("lpips"), lpips_meaningful=s.get("lpips_meaningful"),
                       random_networks=";".join(k for k, v in s.get("network_weights", {}).items() if v == "random"),
                       wall_time_s=s["wall_time_s"], iterations=s["iterations"], warnings=";".join(kinds),
                       collapse="collapsed" if "flat_collapse" in kinds else "ok", error=s.get("error") or "")
        elif (folder / "summary.json").is_file() or (folder / "failed.json").is_file():
            row.update(status="unreadable", error="summary.json or failed.json is damaged (not the JSON a run writes)")
        else:
            row.update(status="missing")
        rows.append(row)
    return rows


def _psnr(value: float | None) -> float:
    """A PSNR from summary.json, where null stands for infinity (an exact copy; io.finite_json)."""
    return math.inf if value is None else value


def write_csv(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k, "")) for k in COLUMNS})


def _mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation; None for the spread of a single value."""
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else None


def _cell(value: tuple[float, float | None] | None, digits: int, signed: bool = False) -> str:
    if value is None:
        return "–"
    mean = f"{value[0]:+.{digits}f}" if signed else f"{value[0]:.{digits}f}"
    return f"{mean} (n = 1, no spread)" if value[1] is None else f"{mean} ± {value[1]:.{digits}f}"


def random_networks(rows: list[dict]) -> dict[str, list[str]]:
    """Settings whose network ran on random weights in some run: {'metric': [...], 'terms': [...]}."""
    keys = sorted({k for r in rows for k in (r.get("random_networks") or "").split(";") if k})
    return {"metric": [k for k in keys if k.startswith("eval.")],
            "terms": [k.split(".")[2] for k in keys if k.startswith("loss.terms.")]}


def random_terms_note(rows: list[dict]) -> str | None:
    terms = random_networks(rows)["terms"]
    if not terms:
        return None
    return (f"loss terms {', '.join(terms)} ran on randomly initialised networks: their values, and the weights "
            "balancing them, say nothing about real perceptual losses")


def aggregate(rows: list[dict]) -> dict[str, dict]:
    """Per method: mean and std over seeds and images of each metric, and the run counts."""
    by_method: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_method[row["method"]].append(row)
    table = {}
    for method, group in by_method.items():
        ok = [r for r in group if r["status"] == "ok"]
        entry = {"runs": len(group), "ok": len(ok), "collapsed": sum(r.get("collapse") == "collapsed" for r in ok)}
        for key, _, _ in METRICS + [("wall_time_s", "", None)]:
            values = [r[key] for r in ok if r.get(key) is not None]
            entry[key] = _mean_std(values) if values else None
        table[method] = entry
    return table


def markdown(rows: list[dict], baseline: str) -> str:
    table = aggregate(rows)
    random_lpips = bool(random_networks(rows)["metric"])
    best = {}
    for key, _, pick in METRICS:
        candidates = {m: e[key][0] for m, e in table.items() if e[key] is not None}
        if candidates and not (key == "lpips" and random_lpips):
            best[key] = pick(candidates, key=candidates.get)
    lpips_header = f"LPIPS ({RANDOM_LPIPS})" if random_lpips else "LPIPS"
    lines = ["Mean ± std over every run (seeds and images); best in bold. Colour shift: mean CIEDE2000 of the "
             "8x-downsampled drawing against the target's (lower is better; about 1 is just noticeable).", ""]
    if random_lpips:
        lines += ["**LPIPS here comes from a randomly initialised backbone: not meaningful, and not ranked.**", ""]
    if (note := random_terms_note(rows)) is not None:
        lines += [f"**Note: {note}.**", ""]
    lines += [f"| method | runs ok | PSNR (dB) | SSIM | colour shift | {lpips_header} | time (s) | collapsed |",
              "|---|---|---|---|---|---|---|---|"]
    for method, entry in table.items():
        cells = []
        for key, _, _ in METRICS + [("wall_time_s", "", None)]:
            text = _cell(entry[key], 2 if key in ("psnr", "wall_time_s", "colour_shift") else 4)
            cells.append(f"**{text}**" if best.get(key) == method else text)
        lines.append(f"| {method} | {entry['ok']}/{entry['runs']} | " + " | ".join(cells) + f" | {entry['collapsed']} |")
    lines += ["", paired_markdown(rows, baseline), per_image_markdown(rows)]
    failed = [r for r in rows if r["status"] not in ("ok",)]
    if failed:
        lines += ["", "Runs without a result:", ""]
        lines += [f"- {r['method']} / {r['image']} / seed {r['seed']}: {r['status']} {r.get('error', '')}".rstrip()
                  for r in failed]
    return "\n".join(lines) + "\n"


def comparisons(rows: list[dict], baseline: str) -> dict[str, list[Comparison]]:
    """Per compared metric, every method against the baseline (statistics.compare)."""
    return {key: compare(rows, baseline, key, higher) for key, _, higher in COMPARED}


def _difference(c: Comparison | None, digits: int) -> str:
    if c is None:
        return "–"
    interval = "" if math.isnan(c.low) else f" [{c.low:+.{digits}f}, {c.high:+.{digits}f}]"
    return f"{c.mean:+.{digits}f}{interval}"


def _p(c: Comparison | None) -> str:
    return "–" if c is None or math.isnan(c.p_holm) else f"{c.p_holm:.3f}"


def paired_markdown(rows: list[dict], baseline: str) -> str:
    """The differences against the baseline with the image as the unit, their 95% CIs and
    Holm-corrected p-values, one column group per compared metric."""
    found = comparisons(rows, baseline)
    methods = list(dict.fromkeys(c.method for cs in found.values() for c in cs))
    if not methods:
        return ""
    head = " | ".join(f"Δ {label} [95% CI] | better | p (Holm)" for _, label, _ in COMPARED)
    lines = [f"Against `{baseline}`, **the image as the unit**: each image's value is the mean over its seeds, "
             "the difference is paired over the images both methods have; 95% confidence interval (t), images "
             "where the method is better, paired t-test p-value Holm-corrected over the methods compared.", "",
             f"| method | images | {head} |", "|---|---|" + "---|---|---|" * len(COMPARED)]
    for method in methods:
        cells = []
        images = 0
        for key, _, _ in COMPARED:
            c = next((c for c in found[key] if c.method == method), None)
            images = max(images, c.images if c else 0)
            digits = 4 if key == "ssim" else 2
            cells += [_difference(c, digits), "–" if c is None else f"{c.wins}/{c.images}", _p(c)]
        lines.append(f"| {method} | {images} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def per_image_markdown(rows: list[dict]) -> str:
    """PSNR per method and image (mean over seeds): where a method wins or loses."""
    images, table = per_image(rows, "psnr")
    if not images:
        return ""
    lines = ["PSNR (dB) per image, mean over seeds:", "", "| method | " + " | ".join(images) + " |",
             "|---|" + "---|" * len(images)]
    for method, values in table.items():
        lines.append(f"| {method} | " + " | ".join(f"{values[i]:.2f}" if i in values else "–" for i in images) + " |")
    return "\n".join(lines) + "\n"


def plot_differences(rows: list[dict], baseline: str, path: Path) -> None:
    """Forest plot: each method's mean difference against the baseline with its 95% CI, one
    panel per compared metric (the image as the unit)."""
    found = comparisons(rows, baseline)
    methods = list(dict.fromkeys(c.method for cs in found.values() for c in cs))
    if not methods:
        return
    fig, axes = plt.subplots(1, len(COMPARED), figsize=(4.2 * len(COMPARED), 0.45 * len(methods) + 1.6))
    for ax, (key, label, higher) in zip(axes, COMPARED):
        for y, method in enumerate(methods):
            c = next((c for c in found[key] if c.method == method), None)
            if c is None:
                continue
            if not math.isnan(c.low):
                ax.plot([c.low, c.high], [y, y], color="tab:blue")
            ax.plot([c.mean], [y], "o", color="tab:red" if c.p_holm < 0.05 else "tab:blue")
        ax.axvline(0, color="grey", linestyle="--", linewidth=0.8)
        ax.set_yticks(range(len(methods)), methods if ax is axes[0] else [""] * len(methods))
        ax.invert_yaxis()
        ax.set_xlabel(f"Δ {label} vs {baseline} ({'higher' if higher else 'lower'} is better)", fontsize=8)
    fig.suptitle("mean difference over images with 95% CI; red: Holm-corrected p < 0.05"
                 + (f"\n{note}" if (note := random_terms_note(rows)) else ""), fontsize=9,
                 color="tab:red" if random_terms_note(rows) else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_metrics(rows: list[dict], path: Path) -> None:
    table = aggregate(rows)
    methods = list(table)
    random_lpips = bool(random_networks(rows)["metric"])
    driven = random_terms_note(rows)  # every panel's numbers come from fits a random network drove
    fig, axes = plt.subplots(1, len(METRICS), figsize=(4 * len(METRICS), 3.5 if not driven else 4.2))
    for ax, (key, label, _) in zip(axes, METRICS):
        means = [table[m][key][0] if table[m][key] else np.nan for m in methods]
        errors = [(table[m][key][1] or 0) if table[m][key] else 0 for m in methods]
        random = key == "lpips" and random_lpips
        ax.bar(range(len(methods)), means, yerr=errors, capsize=4, color="tab:grey" if random else "tab:blue")
        ax.set_xticks(range(len(methods)), methods, rotation=30, ha="right")
        ax.set_ylabel(label)
        marks = [RANDOM_LPIPS] if random else []
        marks += [RANDOM_FITS] if driven else []
        ax.set_title("\n".join([f"{label}, mean ± std", *marks]), color="tab:red" if marks else "black",
                     fontsize=8 if marks else None)
    if driven:
        fig.suptitle(driven, color="tab:red", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_curves(rows: list[dict], path: Path, prefix: str, ylabel: str) -> None:
    """One panel per term: `prefix<term>` over steps, mean over a method's runs."""
    ok = [r for r in rows if r["status"] == "ok"]
    series = {r["folder"]: metric_series(Path(r["folder"])) for r in ok}  # each file read once
    terms = sorted({k[len(prefix):] for r in ok[:1] for k in series[r["folder"]] if k.startswith(prefix)
                    and "/" not in k[len(prefix):]})
    if not terms:
        return
    fig, axes = plt.subplots(1, len(terms), figsize=(4.5 * len(terms), 3.5), squeeze=False)
    for ax, term in zip(axes[0], terms):
        for method in dict.fromkeys(r["method"] for r in ok):
            curves = [series[r["folder"]].get(prefix + term, ([], [])) for r in ok if r["method"] == method]
            length = min(len(s) for s, _ in curves)
            if length:
                mean = np.mean([v[:length] for _, v in curves], axis=0)
                ax.plot(curves[0][0][:length], mean, label=method)
        ax.set_xlabel("step")
        ax.set_ylabel(f"{ylabel} {term}")
        if prefix == "loss/":
            ax.set_yscale("log")
        ax.legend(fontsize=7)
    if (note := random_terms_note(rows)) is not None:
        fig.suptitle(note, color="tab:red", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def contact_sheet(rows: list[dict], path: Path) -> None:
    """Final renders: a row per method, a column per image (the first seed)."""
    ok = [r for r in rows if r["status"] == "ok"]
    if not ok:
        return
    methods = list(dict.fromkeys(r["method"] for r in ok))
    images = list(dict.fromkeys(r["image"] for r in ok))
    first_seed = min(r["seed"] for r in ok)
    fig, axes = plt.subplots(len(methods), len(images), figsize=(3 * len(images), 2.4 * len(methods)),
                             squeeze=False)
    for i, method in enumerate(methods):
        for j, image in enumerate(images):
            ax = axes[i][j]
            ax.axis("off")
            match = [r for r in ok if r["method"] == method and r["image"] == image and r["seed"] == first_seed]
            if match and (Path(match[0]["folder"]) / "final.png").is_file():
                ax.imshow(Image.open(Path(match[0]["folder"]) / "final.png"))
                ax.set_title(f"{method} / {image}\nPSNR {match[0]['psnr']:.2f}", fontsize=8)
    if (note := random_terms_note(rows)) is not None:
        fig.suptitle(f"{RANDOM_FITS}: {note}", color="tab:red", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _final(series: dict, prefix: str) -> dict[str, float]:
    """The last logged value of every `prefix<term>` series (terms only, no '<kind>/<term>')."""
    return {key[len(prefix):]: values[-1] for key, (_, values) in series.items()
            if key.startswith(prefix) and "/" not in key[len(prefix):] and values}


def balance(rows: list[dict]) -> dict[str, dict]:
    """Per method, each term's share at the end of the fits, mean over runs: of the weighted loss
    (w_i L_i / sum_j w_j L_j) and, where gradient norms were logged (log.grad_norm_every), of the
    effective gradient (w_i ||grad L_i|| / sum_j w_j ||grad L_j||); and warning-sign counts."""
    out: dict[str, dict] = {}
    for row in rows:
        entry = out.setdefault(row["method"], {"loss": [], "grad": [], "warnings": defaultdict(int), "nan": 0})
        if row["status"] == "failed" and "nan" in (row.get("error") or "").lower():
            entry["nan"] += 1
        if row["status"] != "ok":
            continue
        for kind in (row.get("warnings") or "").split(";"):
            if kind:
                entry["warnings"][kind] += 1
        if "nan" in (row.get("error") or "").lower():
            entry["nan"] += 1
        series = metric_series(Path(row["folder"]))
        weights, losses, norms = _final(series, "weight/"), _final(series, "loss/"), _final(series, "grad_norm/")
        terms = [t for t in losses if t in weights]
        for kind, values in (("loss", losses), ("grad", norms)):
            parts = {t: abs(weights[t] * values[t]) for t in terms if t in values}
            total = sum(parts.values())
            if parts and total > 0 and len(parts) == len(terms):
                entry[kind].append({t: v / total for t, v in parts.items()})
    return out


def balance_markdown(rows: list[dict]) -> str:
    """The balance table: shares per term (mean over runs) and warning counts per method."""
    table = balance(rows)
    terms = sorted({t for e in table.values() for shares in e["loss"] for t in shares})
    if not terms:
        return ""
    has_grad = any(e["grad"] for e in table.values())
    head = [f"{t} share of w·L" for t in terms] + ([f"{t} share of w·‖∇L‖" for t in terms] if has_grad else [])
    kinds = list(WARNING_KINDS.values())
    lines = ["Balance at the end of the fits (mean over runs): each term's share of the weighted loss"
             + (" and of the effective gradient (weight x gradient norm on the triangles)" if has_grad else "")
             + "; warning signs: runs that raised each (NaN: runs stopped by a non-finite loss).", "",
             "| method | " + " | ".join(head + kinds + ["NaN"]) + " |", "|---|" + "---|" * (len(head) + len(kinds) + 1)]
    for method, e in table.items():
        def share(kind: str, term: str) -> str:
            values = [s[term] for s in e[kind] if term in s]
            return f"{np.mean(values):.2f}" if values else "–"
        cells = [share("loss", t) for t in terms] + ([share("grad", t) for t in terms] if has_grad else [])
        cells += [str(e["warnings"].get(kind, 0)) for kind in WARNING_KINDS] + [str(e["nan"])]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    note = random_terms_note(rows)
    if note:
        lines += ["", f"**Note: {note}.**"]
    return "\n".join(lines) + "\n"


def plot_weight_trajectories(rows: list[dict], path: Path) -> None:
    """One panel per method: each term's effective weight over steps (mean over the method's runs)."""
    ok = [r for r in rows if r["status"] == "ok"]
    methods = list(dict.fromkeys(r["method"] for r in ok))
    if not methods:
        return
    cols = min(3, len(methods))
    fig, axes = plt.subplots(-(-len(methods) // cols), cols, figsize=(4.5 * cols, 3.2 * -(-len(methods) // cols)),
                             squeeze=False)
    for ax, method in zip(axes.flat, methods):
        series = [metric_series(Path(r["folder"])) for r in ok if r["method"] == method]
        terms = sorted({k[len("weight/"):] for s in series for k in s if k.startswith("weight/")
                        and "/" not in k[len("weight/"):]})
        for term in terms:
            curves = [s["weight/" + term] for s in series if "weight/" + term in s]
            length = min(len(v) for _, v in curves)
            ax.plot(curves[0][0][:length], np.mean([v[:length] for _, v in curves], axis=0), label=term)
        ax.set_yscale("log")
        ax.set_title(method, fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel("effective weight d total / d L")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(methods):]:
        ax.axis("off")
    note = random_terms_note(rows)
    if note:
        fig.suptitle(note, color="tab:red", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(runs: list[PlannedRun], output: Path, baseline: str) -> str:
    """results.csv, results.md and the plots in `output`; returns the Markdown text."""
    rows = collect(runs)
    write_csv(rows, output / "results.csv")
    text = markdown(rows, baseline)
    extra = balance_markdown(rows)
    if extra:
        text += "\n" + extra
    (output / "results.md").write_text(text)
    plot_metrics(rows, output / "metrics.png")
    plot_differences(rows, baseline, output / "differences.png")
    plot_curves(rows, output / "loss_curves.png", "loss/", "loss")
    plot_curves(rows, output / "weights.png", "weight/", "weight")
    plot_weight_trajectories(rows, output / "weight_trajectories.png")
    contact_sheet(rows, output / "contact_sheet.png")
    return text
