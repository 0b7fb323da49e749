"""YAML -> typed, validated configuration.

Layers, later ones winning: the defaults below, a YAML file (and the files it `extends`), then
`--set a.b=c` overrides. Every mistake (unknown key, wrong type, value out of range) becomes one
UserError line naming the key, the value and the file it came from. `configs/base.yaml` documents
every key with these defaults; a test keeps the two in step.
"""

from __future__ import annotations

import difflib
import math
import re
from pathlib import Path
from typing import Any, ClassVar, Literal, Optional, Union

import yaml
from pydantic import BaseModel, Field, ValidationError, create_model, field_validator, model_validator

from .balance import REGISTRY as BALANCERS
from .errors import UserError
from .loss import TERMS
from .loss.modifiers import REGISTRY as MODIFIERS
from .loss.perceptual import LpipsConfig
from .loss.terms import TermConfig
from .raster import REGISTRY as RENDERERS
from .section import Section

DEFAULTS = "<defaults>"
CLI = "--set"


class _Loader(yaml.SafeLoader):
    """yaml.SafeLoader that also reads 1e-3 as a float (YAML 1.1 wants 1.0e-3), as users write it."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def safe_load(text: str) -> Any:
    """YAML as every config of this project is read (yaml.SafeLoader, plus 1e-3 as a float)."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def flat_options(registry: dict[str, type], what: str) -> dict[str, tuple[Any, Any]]:
    """The options of every class of a registry as flat fields of one section (a config writes
    them beside the key that names the class); an option two classes share (`lr`, `tile_size`,
    ...) must mean the same in both."""
    fields: dict[str, tuple[Any, Any]] = {}
    owners: dict[str, str] = {}
    for name, cls in registry.items():
        for key, info in cls.Options.model_fields.items():
            if key in fields and (fields[key][0], fields[key][1].default, fields[key][1].metadata) != \
                    (info.annotation, info.default, info.metadata):
                raise TypeError(f"{what} option '{key}' of {name} differs from that of {owners[key]}")
            fields.setdefault(key, (info.annotation, info))
            owners.setdefault(key, name)
    return fields


class ImageConfig(Section):
    path: Optional[str] = None
    max_size: int = Field(256, ge=0)


Colour = list[float]


class ProgressiveConfig(Section):
    """init: progressive: start with `start` x count triangles (a coarse structure triangulation),
    park the rest off the canvas, and bring them in at the largest errors, in batches every
    `every` steps, all placed by `until` (share of the budget)."""

    start: float = Field(0.1, gt=0, le=1)
    every: int = Field(20, ge=1)
    until: float = Field(0.4, gt=0, le=1)


class TrianglesConfig(Section):
    count: int = Field(200, ge=1)
    init: Literal["random", "grid", "structure", "progressive", "model"] = "random"
    model: Optional[str] = None  # init: model: a checkpoint of triangulate-train-model predicting the start
    size: float = Field(0.12, gt=0, le=2)
    colors: Literal["target", "random"] = "target"
    opacity: float = Field(0.7, gt=0, lt=1)
    background: Union[Literal["white", "black", "mean"], Colour] = "mean"
    learn_background: bool = True
    structure_uniform: float = Field(0.3, ge=0, le=1)  # structure init: share of points placed uniformly
    progressive: ProgressiveConfig = ProgressiveConfig()

    @field_validator("background")
    @classmethod
    def _colour(cls, bg: Any) -> Any:
        if isinstance(bg, list) and (len(bg) != 3 or not all(0 <= c <= 1 for c in bg)):
            raise ValueError("background must be white, black, mean or [r, g, b] with values in [0, 1]")
        return bg

    @model_validator(mode="after")
    def _model_path(self) -> "TrianglesConfig":
        if (self.init == "model") != (self.model is not None):
            raise ValueError("init: model needs model: PATH (a model checkpoint), and model: PATH needs init: model")
        return self


class _RenderSection(Section):
    """The backend (`auto` or a registered one, raster/) with every backend's options flat beside
    it: with `auto` the backend is known only on the device, so none is refused here."""

    backend: Literal[("auto", *RENDERERS)] = "auto"
    sigma: float = Field(0.3, gt=0)  # pixels of the working resolution
    scale: float = Field(1.0, gt=0, le=1)  # working resolution of a fit: a share of the image's sides (a pyramid
    #                                        when scheduled: coarse steps first, each costing a fraction)
    samples: int = Field(1, ge=1, le=4)  # k: a fit's steps draw k x k samples per pixel and average them


RenderConfig = create_model("RenderConfig", __base__=_RenderSection, __module__=__name__,
                            **flat_options(RENDERERS, "renderer"))


class LearningRates(Section):
    positions: float = Field(0.008, ge=0)
    colors: float = Field(0.02, ge=0)
    opacity: float = Field(0.03, ge=0)
    background: float = Field(0.01, ge=0)
    # `positions` is the rate for this many triangles: with N it is scaled by sqrt(positions_count / N),
    # so a step stays the same share of a triangle's size (None: the rate as given, for any N)
    positions_count: Optional[int] = Field(None, ge=1)

    def position_factor(self, count: int) -> float:
        """What the positions' rate (and a schedule of it) is multiplied by for `count` triangles."""
        return 1.0 if self.positions_count is None else math.sqrt(self.positions_count / count)


def adam_betas(betas: list[float]) -> list[float]:
    """Adam's (beta1, beta2), each in [0, 1): shared by the fit's and the model's optimiser."""
    if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
        raise ValueError("betas must be two numbers in [0, 1)")
    return betas


class OptimConfig(Section):
    iterations: Optional[int] = Field(1000, ge=0)  # None: no step limit (then time_limit ends the run)
    time_limit: Optional[float] = Field(None, gt=0)  # seconds of the optimisation loop
    target_psnr: Optional[float] = Field(None, gt=0)  # dB of the hard-edged export, checked at each evaluation
    lr: LearningRates = LearningRates()
    betas: list[float] = [0.9, 0.999]

    @model_validator(mode="after")
    def _some_budget(self) -> "OptimConfig":
        if self.iterations is None and self.time_limit is None:
            raise ValueError("a run needs a budget: set iterations, time_limit or both")
        return self

    @field_validator("betas")
    @classmethod
    def _betas(cls, betas: list[float]) -> list[float]:
        return adam_betas(betas)


LossTerms = create_model(  # every registered term (loss/), in the order registered; l1 on unless configured
    "LossTerms", __base__=Section, __module__=__name__,
    **{name: (Optional[cls.Options], cls.Options() if cls.on_by_default else None) for name, cls in TERMS.items()})


BALANCER_OPTIONS = {name: tuple(cls.Options.model_fields) for name, cls in BALANCERS.items()}


class _LossSection(Section):
    """The balancer (`type`) with its options flat beside it, as in seed 002's
    `loss: {type: geometric_mean, epsilon: ...}`; an option of another method is an error. The
    options are declared by each method next to its class (balance/, `Options`)."""

    type: Literal[tuple(BALANCERS)] = "fixed"
    terms: LossTerms = LossTerms()

    @model_validator(mode="after")
    def _some_term(self) -> "_LossSection":
        if not self.active_terms():
            raise ValueError("at least one loss term must be enabled")
        allowed = set(BALANCER_OPTIONS[self.type]) | {"type", "terms"}
        foreign = sorted(self.model_fields_set - allowed)
        if foreign:
            owners = sorted({t for t, keys in BALANCER_OPTIONS.items() if foreign[0] in keys})
            raise ValueError(f"'{foreign[0]}' is an option of {', '.join(owners)}, not of type {self.type}")
        try:  # the method's own checks across its options
            BALANCERS[self.type].Options(**self.options())
        except ValidationError as exc:
            raise ValueError(exc.errors()[0]["msg"].removeprefix("Value error, ")) from None
        return self

    def options(self) -> dict:
        """The options of the chosen balancer, by name."""
        return {key: getattr(self, key) for key in BALANCER_OPTIONS[self.type]}

    def active_terms(self) -> dict[str, TermConfig]:
        return {name: cfg for name, cfg in self.terms if cfg is not None}


LossConfig = create_model("LossConfig", __base__=_LossSection, __module__=__name__,
                          **flat_options(BALANCERS, "balancer"))


class ScheduleConfig(Section):
    """A value over the run. `unit: steps` counts optimisation steps; `unit: fraction` counts the
    share of the budget spent (0 to 1: steps / iterations or seconds / time_limit, whichever is
    further), so the schedule ends with the run however the run ends."""

    type: Literal["piecewise", "linear", "cosine", "exponential"]
    unit: Literal["steps", "fraction"] = "steps"
    milestones: list[float] = []
    values: list[float] = []
    start_value: Optional[float] = None
    end_value: Optional[float] = None
    start_step: float = Field(0.0, ge=0)
    end_step: Optional[float] = None

    @model_validator(mode="after")
    def _complete(self) -> "ScheduleConfig":
        if self.type == "piecewise":
            if len(self.values) != len(self.milestones) + 1 or self.milestones != sorted(self.milestones):
                raise ValueError("piecewise needs increasing milestones and one more value than milestones")
        elif self.start_value is None or self.end_value is None or self.end_step is None:
            raise ValueError(f"{self.type} needs start_value, end_value and end_step (start_step defaults to 0)")
        elif self.end_step < self.start_step:
            raise ValueError("end_step must be >= start_step")
        elif self.type == "exponential" and not (self.start_value > 0 and self.end_value > 0):
            raise ValueError("exponential needs start_value and end_value > 0")
        if self.unit == "fraction":
            points = [*self.milestones, self.start_step] + ([self.end_step] if self.end_step is not None else [])
            if any(p > 1 for p in points):
                raise ValueError("with unit: fraction, milestones, start_step and end_step are shares of the "
                                 "budget in [0, 1]")
        return self


class RespawnConfig(Section):
    """Move triangles that add nothing to where the error is largest."""

    enabled: bool = False
    every: int = Field(50, ge=1)  # steps between respawn events
    until: float = Field(0.8, ge=0, le=1)  # no events after this share of the budget: the end refines
    min_contribution: float = Field(1.0, ge=0)  # pixel-equivalents a triangle's colour must reach to live
    min_share: float = Field(0.0, ge=0, le=1)  # ... or this share of the mean area per triangle, if larger
    min_area: float = Field(0.5, ge=0)  # square pixels: smaller triangles are degenerate, respawned
    max_share: float = Field(0.1, gt=0, le=1)  # at most this share of the triangles per event
    size: float = Field(1.0, gt=0)  # new triangles' side, x sqrt(image area / triangle count)
    error_blur: int = Field(2, ge=0)  # box-filter radius (px) of the error map positions are drawn from
    error_power: float = Field(2.0, ge=0)  # sampling density ~ blurred error ^ power
    candidates: int = Field(32, ge=1)  # random triangles tried per placement; the one removing most error wins
    placement_side: int = Field(768, ge=16)  # px: larger images are placed on a copy area-averaged to this longer side


class RegularizerConfig(Section):
    weight: float = Field(0.0, ge=0)
    min_area: float = Field(1.0, gt=0)
    min_quality: float = Field(0.1, gt=0, le=1)
    margin: float = Field(0.05, ge=0)


ModifiersConfig = create_model(  # every registered modifier (loss/modifiers/), opt-in, applied in this order
    "ModifiersConfig", __base__=Section, __module__=__name__,
    **{key: (cls.Options, cls.Options()) for key, cls in MODIFIERS.items()})


class TensorBoardConfig(Section):
    enabled: bool = True
    log_freq: int = Field(10, ge=1)
    prefix: str = ""
    log_train: bool = True
    log_eval: bool = True
    image_every: int = Field(100, ge=0)


class WarningsConfig(Section):
    enabled: bool = True
    weight_min: float = Field(1e-6, ge=0)
    weight_max: float = Field(1e4, gt=0)
    oscillation_window: int = Field(10, ge=4)
    oscillation_amplitude: float = Field(0.05, ge=0)
    dominance: float = Field(0.9, gt=0, le=1)
    loss_floor: float = Field(1e-6, ge=0)
    regularizer_share: float = Field(1.0, gt=0)
    jump_factor: float = Field(20.0, gt=1)
    collapse_ratio: float = Field(0.1, gt=0, lt=1)
    collapse_after: int = Field(50, ge=0)


class LogConfig(Section):
    every: int = Field(10, ge=1)
    gif_every: int = Field(10, ge=1)
    progress_bar: bool = True
    grad_norm_every: int = Field(0, ge=0)
    tensorboard: TensorBoardConfig = TensorBoardConfig()
    warnings: WarningsConfig = WarningsConfig()


class LpipsMetricConfig(LpipsConfig):
    net: Literal["vgg", "alex", "squeeze"] = "alex"  # the usual choice for LPIPS as a metric


class EvalConfig(Section):
    every: int = Field(100, ge=1)
    lpips: Optional[LpipsMetricConfig] = LpipsMetricConfig()


class CheckpointConfig(Section):
    every: int = Field(100, ge=1)


class Config(Section):
    REFUSED: ClassVar[dict[str, str]] = {}  # dotted keys a subclass refuses when given, with why

    seed: int = Field(0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    image: ImageConfig = ImageConfig()
    triangles: TrianglesConfig = TrianglesConfig()
    render: RenderConfig = RenderConfig()
    optim: OptimConfig = OptimConfig()
    loss: LossConfig = LossConfig()
    regularizer: RegularizerConfig = RegularizerConfig()
    respawn: RespawnConfig = RespawnConfig()
    modifiers: ModifiersConfig = ModifiersConfig()
    schedules: dict[str, ScheduleConfig] = {}
    log: LogConfig = LogConfig()
    eval: EvalConfig = EvalConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()

    def network_weights(self) -> dict[str, str]:
        """Weights setting of every pretrained network in use, by config key."""
        found = {f"loss.terms.{name}.weights": term.weights
                 for name, term in self.loss.active_terms().items() if hasattr(term, "weights")}
        if self.eval.lpips is not None:
            found["eval.lpips.weights"] = self.eval.lpips.weights
        return found

    def dump(self) -> dict:
        """Every value, except the options of balancers other than the chosen one."""
        data = self.model_dump()
        keep = {"type", "terms", *BALANCER_OPTIONS[self.loss.type]}
        data["loss"] = {key: value for key, value in data["loss"].items() if key in keep}
        return data

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.dump(), sort_keys=False)


def load_config(path: str | Path | Config | None = None, overrides: list[str] | tuple[str, ...] = (),
                values: dict[str, Any] | None = None, values_source: str = "command line",
                schema: type[Config] = Config) -> Config:
    """A validated config from layers, later ones winning: the defaults, a YAML file (with its
    `extends` chain) or a Config, `--set key=value` overrides, then `values`.

    Args:
        path: a YAML file, a Config, or None for the defaults.
        overrides: "dotted.key=value" strings, values read as YAML (like --set).
        values: dotted keys to values (what other options set, such as --image).
        values_source: how errors name `values`.
        schema: the Config class to validate against (a subclass adds sections).

    Returns:
        The Config.

    Raises:
        UserError: one line naming the file (or --set), the key, the value and what is wrong.

    Example:
        >>> cfg = load_config("configs/quickstart.yaml", ["render.sigma=0.5"], {"triangles.count": 50})
        >>> cfg.render.sigma, cfg.triangles.count
        (0.5, 50)
        >>> load_config(None, ["triangles.cuont=5"])
        Traceback (most recent call last):
        ...
        triangulate_ai.errors.UserError: --set: unknown key 'triangles.cuont'; did you mean 'count'?
    """
    if isinstance(path, Config):
        layers = [(path.dump(), "<Config object>")]
    else:
        layers = _read_chain(Path(path), ()) if path is not None else []
    layers += [(_nest(*parse_override(item)), CLI) for item in overrides]
    layers += [(_nest(key, value), values_source) for key, value in (values or {}).items()]
    return _validate(layers, schema)


def config_from_mapping(data: Any, source: str, schema: type[Config] = Config) -> Config:
    """A config from a mapping that was not read from YAML (a checkpoint's), validated exactly as
    a YAML file is: the same one-line errors, naming `source`."""
    if not isinstance(data, dict):
        raise UserError(f"{source}: the config must be a mapping of keys, got {type(data).__name__}")
    return _validate([(data, source)], schema)


def _validate(layers: list[tuple[dict, str]], schema: type[Config]) -> Config:
    """The layers merged in order (later ones win) and validated against `schema`."""
    merged: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for data, source in layers:
        _merge(merged, sources, data, source)
    for dotted, why in schema.REFUSED.items():
        if _lookup(merged, tuple(dotted.split("."))) is not None:
            raise UserError(f"{_source_of(dotted.split('.'), sources)}: '{dotted}' {why}")
    try:
        return schema.model_validate(merged)
    except ValidationError as exc:
        raise UserError(_explain(exc, merged, sources, schema)) from None


def _read_chain(path: Path, seen: tuple[Path, ...]) -> list[tuple[dict, str]]:
    """The file's mapping and those of the files it `extends`, the farthest ancestor first."""
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    resolved = path.resolve()
    if resolved in seen:
        raise UserError(f"{path}: extends itself through {' -> '.join(str(p) for p in seen)}")
    try:
        data = safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: the top level must be a mapping of keys, got {type(data).__name__}")
    parent = data.pop("extends", None)
    if parent is None:
        return [(data, str(path))]
    if not isinstance(parent, str):
        raise UserError(f"{path}: extends = {parent!r}: must be a file name")
    return _read_chain(path.parent / parent, seen + (resolved,)) + [(data, str(path))]


def _merge(into: dict, sources: dict[str, str], new: dict, source: str, prefix: str = "") -> None:
    """Deep-merge `new` into `into` (mappings merge, everything else replaces) and record sources."""
    for key, value in new.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], sources, value, source, dotted + ".")
        else:
            into[key] = _copy(value)
            sources[dotted] = source


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def parse_override(item: str) -> tuple[str, Any]:
    """`key.path=value` -> (key.path, the value read as YAML; text that is not YAML stays text)."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise UserError(f"{CLI} {item!r}: expected key.path=value, e.g. render.sigma=0.3")
    try:
        value = safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    return key, value


def _nest(dotted: str, value: Any) -> dict:
    out: Any = value
    for part in reversed(dotted.split(".")):
        out = {part: out}
    return out


def _explain(exc: ValidationError, data: dict, sources: dict[str, str], schema: type[Config] = Config) -> str:
    """One line for the first problem: file, key, value, and what is wrong."""
    err = exc.errors()[0]
    path = [p for p in err["loc"] if not _is_union_tag(p)]
    loc = [str(p) for p in path]
    key = ".".join(loc) or "<top level>"
    source = _source_of(loc, sources)
    if err["type"] == "extra_forbidden":
        known = _known_keys(loc[:-1], schema)
        hint = difflib.get_close_matches(loc[-1], known, n=1)
        suggestion = f"; did you mean '{hint[0]}'?" if hint else f"; known keys: {', '.join(known)}"
        return f"{source}: unknown key '{key}'{suggestion}"
    value = _lookup(data, path)
    message = err["msg"].removeprefix("Value error, ")
    return f"{source}: {key} = {value!r}: {message}"


def _is_union_tag(part: Any) -> bool:
    """pydantic adds the tried union member (e.g. 'list[float]') to error locations."""
    return isinstance(part, str) and ("[" in part or part.startswith("literal"))


def _source_of(loc: list[str], sources: dict[str, str]) -> str:
    for end in range(len(loc), 0, -1):
        found = sources.get(".".join(loc[:end]))
        if found:
            return found
    deeper = [s for k, s in sources.items() if k.startswith(".".join(loc) + ".")] if loc else []
    return deeper[0] if deeper else DEFAULTS


def _known_keys(loc: list[str], schema: type[Config] = Config) -> list[str]:
    model: Any = schema
    for part in loc:
        field = model.model_fields.get(part) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if field is None:
            return []
        model = _model_in(field.annotation)
    return list(model.model_fields) if isinstance(model, type) and issubclass(model, BaseModel) else []


def _model_in(annotation: Any) -> Any:
    """The BaseModel inside Optional[...] or a plain annotation."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return annotation


def _lookup(data: Any, loc: tuple) -> Any:
    for part in loc:
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and isinstance(part, int) and part < len(data):
            data = data[part]
        else:
            return None
    return data
