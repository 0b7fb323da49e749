"""The plan of an ablation: its YAML (methods x images x seeds x grid values), every run with its
folder and resolved config, what each run folder holds (finished, resumable, to do), and how runs
are packed into tasks that share one loop. Nothing here runs a fit.
"""

from __future__ import annotations

import functools
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import Field, ValidationError

from ..config import Config, Section, load_config, safe_load
from ..errors import UserError
from ..io import batches_by, expand_images

class ExecutorConfig(Section):
    type: Literal["local", "ray"] = "local"
    workers: int = Field(0, ge=0)  # parallel tasks; 0 = one per CPU core
    address: Optional[str] = None  # ray: "auto", a cluster address, or none for a local instance
    batch_size: int = Field(8, ge=1)  # runs of one method fitted together in one task (one loop)


class AblationConfig(Section):
    name: str
    base: str  # the fit config every run starts from (relative to this file)
    output: Optional[str] = None  # experiment folder; default runs/ablation/<name>
    images: list[str]  # image files or folders of images, relative to this file
    seeds: list[int] = [0, 1, 2]
    methods: dict[str, dict[str, Any]]  # name -> config overrides (dotted keys)
    baseline: Optional[str] = None  # the method others are compared with (default: the first)
    grid: dict[str, list[Any]] = {}  # any other config path -> values, crossed with everything
    set: dict[str, Any] = {}  # overrides for every run
    executor: ExecutorConfig = ExecutorConfig()


def load_ablation(path: Path) -> AblationConfig:
    try:
        data = safe_load(path.read_text())
    except OSError as exc:
        raise UserError(f"cannot read ablation config {path}: {exc.strerror}") from None
    try:
        cfg = AblationConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        raise UserError(f"{path}: {key}: {err['msg']}") from None
    if cfg.baseline is not None and cfg.baseline not in cfg.methods:
        raise UserError(f"{path}: baseline = {cfg.baseline!r} is not one of the methods {list(cfg.methods)}")
    return cfg


def _label(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text).strip("_")


@dataclass(frozen=True)
class PlannedRun:
    """One run of an ablation: a method (with its grid values) on one image and seed, its folder,
    and the config it fits, resolved when the ablation is planned."""

    method: str  # the variant's name: the method and its grid values
    family: str  # the method as the YAML names it
    grid: str  # its grid values as a folder-name suffix ("" without a grid)
    image: str  # the image's file name without its extension
    seed: int
    folder: Path
    base: Path  # the fit config every run extends
    sets: dict[str, Any]  # this run's overrides of it (dotted keys)
    config: dict[str, Any]  # the resolved config, as the run folder's config.yaml holds it

    def load_config(self) -> Config:
        return load_config(self.base, values=self.sets, values_source="ablation")

    @property
    def label(self) -> str:
        return f"{self.method} / {self.image} / seed {self.seed}"


def plan(cfg: AblationConfig, config_path: Path, output: Path) -> list[PlannedRun]:
    """Every run of the ablation with its folder and config values. All configs are validated
    here, before anything runs; each run carries its resolved config so a finished run can be
    checked against what is asked now."""
    root = config_path.parent
    base = (root / cfg.base).resolve()
    grid_items = list(cfg.grid.items())
    runs = []
    for method, overrides in cfg.methods.items():
        for values in itertools.product(*[v for _, v in grid_items]):
            extra = dict(zip([k for k, _ in grid_items], values))
            suffix = "".join(f"__{k}={v}" for k, v in extra.items())
            variant = method + suffix
            for image in image_files(cfg, root):
                for seed in cfg.seeds:
                    image_path = (root / image).resolve()
                    folder = output / _label(variant) / f"{_label(Path(image).stem)}_seed{seed}"
                    sets = {**cfg.set, **overrides, **extra, "seed": seed, "log.progress_bar": False,
                            "image.path": str(image_path)}
                    try:  # config mistakes stop the ablation before it starts, with the run named
                        resolved = load_config(base, values=sets, values_source="ablation").dump()
                    except UserError as exc:
                        raise UserError(f"run {variant}/{Path(image).stem}/seed {seed}: {exc}") from None
                    runs.append(PlannedRun(variant, method, suffix, Path(image).stem, seed, folder, base, sets,
                                           resolved))
    return runs


def image_files(cfg: AblationConfig, root: Path) -> list[str]:
    """The config's images with each folder replaced by the images it holds (sorted by name)."""
    files: list[str] = []
    for image in cfg.images:
        if (root / image).is_dir():
            files += [str(Path(image) / p.name) for p in expand_images([str(root / image)])]
        else:
            files.append(image)
    return list(dict.fromkeys(files))


def read_json_object(path: Path) -> dict | None:
    """A run folder's summary.json or failed.json as a dict; None when it is absent or damaged
    (not JSON, not an object): such a run is not finished, and is fitted or resumed again."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def status(folder: Path) -> str:
    """finished | resumable | todo, from what the run folder holds."""
    if (read_json_object(folder / "summary.json") or {}).get("completed"):
        return "finished"
    if (folder / "checkpoint.pt").is_file() and (folder / "config.yaml").is_file():
        return "resumable"
    return "todo"


def config_changes(run: PlannedRun) -> list[str]:
    """Keys whose value in the run folder's config.yaml differs from what the ablation asks now
    ("key: old -> new"); empty when they agree or the folder holds no run yet."""
    path = run.folder / "config.yaml"
    if status(run.folder) == "todo" or not path.is_file():
        return []
    old, new = _flat(safe_load(path.read_text()) or {}), _flat(run.config)
    defaults = _defaults()
    # a key added to the program after the run was made, left at its default, is what the run did
    return [f"{key}: {old.get(key, '<absent>')} -> {new.get(key, '<absent>')}"
            for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)
            and not (key not in old and key in defaults and new.get(key) == defaults[key])]


@functools.cache
def _defaults() -> dict[str, Any]:
    """Every config key at its default, flattened (built once: the check runs for every run)."""
    return _flat(Config().dump())


def _flat(data: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def pack(runs: list[PlannedRun], size: int) -> list[list[PlannedRun]]:
    """Tasks of up to `size` runs that can share one loop: the same method and grid values, the
    same state (fresh, or resuming: those go alone, their checkpoints may be at other steps),
    and images of one size."""
    def key(run: PlannedRun) -> tuple:
        resuming = status(run.folder) == "resumable"
        return run.method, _image_size(run.sets["image.path"], run.config["image"]["max_size"]), \
            str(run.folder) if resuming else ""
    return batches_by(runs, key, size)


def _image_size(path: str, limit: int) -> tuple[int, int] | None:
    """The size a fit of `path` works at (after image.max_size `limit`), from the file's header only."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            width, height = img.size
    except Exception:  # noqa: BLE001 - unreadable in any way (too many pixels too): it is fitted alone, and fails there
        return None
    scale = limit / max(width, height) if limit else 1.0
    return (max(1, round(width * scale)), max(1, round(height * scale))) if scale < 1 else (width, height)
