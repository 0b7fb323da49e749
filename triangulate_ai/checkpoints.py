"""Reading checkpoints without trusting them.

A checkpoint is loaded with `weights_only` (no code from the file runs), and then every value is
checked against what this program would have written for this run, before anything is built from
it or written beside it: a template (a live state of this config: same keys, tensor shapes and
dtypes) or a spec (a function for the parts whose size varies, such as GIF frames or warnings).
Tensors must be finite; numbers must be numbers. A value that fails is named by its dotted path.
"""

from __future__ import annotations

import math
import pickle
import textwrap
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable

import torch

from .errors import UserError

Spec = Callable[[Any, str], None]  # raises Mismatch when the value at `where` is not as required
LARGEST_INT = 2**53  # integers past this are not exact as floats, and no step count or index gets there


class Mismatch(Exception):
    """A checkpoint value that is not what this run needs. `damaged`: no version of this program
    writes it (a wrong type or dtype, NaN); otherwise it was written for another config (another
    shape, other keys)."""

    def __init__(self, where: str, why: str, damaged: bool = True) -> None:
        super().__init__(f"{where or '<top level>'} {why}")
        self.damaged = damaged


def refusal(path: Path, exc: Mismatch) -> UserError:
    """The one line that refuses checkpoint `path` for `exc`."""
    if exc.damaged:
        return UserError(f"{path}: refused: {exc} (a damaged checkpoint, or not written by TriangulateAI)")
    return UserError(f"{path}: checkpoint does not fit this run's config: {exc}")


def shorten(text: str, width: int = 200) -> str:
    """One line of at most `width` characters, cut between words (library messages can be long)."""
    return textwrap.shorten(" ".join(str(text).split()), width, placeholder=" ...")


def read_checkpoint(path: Path, device: torch.device | str, kind: str, sections: tuple[str, ...]) -> dict:
    """A checkpoint's state, loaded without running any code from the file (weights_only), and
    checked to be one of ours: format `kind`, with dict `sections`. Anything else is a UserError
    naming the file. The sections' contents are checked by the caller, who knows the run."""
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of files it then refuses anyway
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: no checkpoint there") from None
    except pickle.UnpicklingError:
        raise UserError(f"{path}: refused: it is not a checkpoint of tensors and plain values (loading its "
                        "Python objects could run code from the file)") from None
    except Exception as exc:  # corrupt or truncated: torch's messages are long, name only the kind
        raise UserError(f"{path}: not a readable checkpoint: corrupt or truncated ({type(exc).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != kind:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise UserError(f"{path}: not a TriangulateAI checkpoint of format {kind} (found {shorten(repr(found), 60)})")
    for key in sections:
        if not isinstance(state.get(key), dict):
            raise UserError(f"{path}: checkpoint has no '{key}' section")
    return state


def _kind(value: Any) -> str:
    name = f"{value.dtype} tensor" if torch.is_tensor(value) else type(value).__name__
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def _join(where: str, key: Any) -> str:
    return f"{where}.{key}" if where else str(key)


def conform(value: Any, template: Any, where: str = "") -> None:
    """Raise Mismatch unless `value` has the structure of `template`: a tensor of its dtype and
    shape (finite, if floating), a mapping with its keys, a list or tuple of its length, a value
    of its type (finite, if a number), or whatever a spec (a function) accepts."""
    if callable(template):
        template(value, where)
    elif torch.is_tensor(template):
        tensor(template.dtype, tuple(template.shape))(value, where)
    elif isinstance(template, Mapping):
        if not isinstance(value, Mapping):
            raise Mismatch(where, f"is {_kind(value)}, not a mapping")
        missing, extra = set(template) - set(value), set(value) - set(template)
        if missing or extra:
            names = ", ".join(repr(k) for k in sorted(missing | extra, key=str)[:3])
            raise Mismatch(where, f"has other keys than this run's ({'missing' if missing else 'unknown'}: {names})",
                           damaged=False)
        for key, sub in template.items():
            conform(value[key], sub, _join(where, key))
    elif isinstance(template, (list, tuple)):
        if type(value) is not type(template):
            raise Mismatch(where, f"is {_kind(value)}, not a {type(template).__name__}")
        if len(value) != len(template):
            raise Mismatch(where, f"has {len(value)} entries, this run has {len(template)}", damaged=False)
        for i, (item, sub) in enumerate(zip(value, template)):
            conform(item, sub, _join(where, i))
    elif isinstance(template, bool):
        if not isinstance(value, bool):
            raise Mismatch(where, f"is {_kind(value)}, not a bool")
    elif isinstance(template, (int, float)):
        number(integer=isinstance(template, int))(value, where)
    elif isinstance(template, str):
        if not isinstance(value, str):
            raise Mismatch(where, f"is {_kind(value)}, not a string")
    elif template is None:
        if value is not None:
            raise Mismatch(where, f"is {_kind(value)}, not None")
    else:
        raise TypeError(f"no rule for a template of type {type(template).__name__} at {where}")


def tensor(dtype: torch.dtype, shape: tuple[int | None, ...]) -> Spec:
    """A tensor of `dtype` and `shape` (None: any size on that axis), finite if floating."""
    def check(value: Any, where: str) -> None:
        if not torch.is_tensor(value) or value.dtype != dtype:
            raise Mismatch(where, f"is {_kind(value)}, not a {dtype} tensor")
        if value.dim() != len(shape) or any(n is not None and n != m for n, m in zip(shape, value.shape)):
            wanted = "(" + ", ".join("*" if n is None else str(n) for n in shape) + ("," if len(shape) == 1 else "") + ")"
            raise Mismatch(where, f"has shape {tuple(value.shape)}, this run needs {wanted}", damaged=False)
        if (value.is_floating_point() or value.is_complex()) and not bool(torch.isfinite(value).all()):
            raise Mismatch(where, "holds NaN or infinite values")
    return check


def number(minimum: float | None = None, integer: bool = False, allow_inf: bool = False) -> Spec:
    """An int (or, unless `integer`, a float), not a bool, finite (or +inf with `allow_inf`), and
    at least `minimum`."""
    def check(value: Any, where: str) -> None:
        types = int if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, types):
            raise Mismatch(where, f"is {_kind(value)}, not {'an integer' if integer else 'a number'}")
        if isinstance(value, int):
            if abs(value) > LARGEST_INT:  # pickle holds integers of any size; no count of ours is past 2^53
                raise Mismatch(where, f"is an integer of {value.bit_length()} bits, not a count")
        elif math.isnan(value) or (math.isinf(value) and not (allow_inf and value > 0)):
            raise Mismatch(where, f"is {value}, not a finite number")
        if minimum is not None and value < minimum:
            raise Mismatch(where, f"is {value}, below {minimum:g}")
    return check


def list_of(item: Any) -> Spec:
    """A list of any length whose entries conform to `item`."""
    def check(value: Any, where: str) -> None:
        if not isinstance(value, list):
            raise Mismatch(where, f"is {_kind(value)}, not a list")
        for i, entry in enumerate(value):
            conform(entry, item, _join(where, i))
    return check


def record(required: dict[str, Any], optional: dict[str, Any] | None = None, rest: Any = None) -> Spec:
    """A mapping with string keys: every key of `required`, any of `optional`, and (when `rest` is
    given) other keys whose values conform to `rest`."""
    optional = optional or {}

    def check(value: Any, where: str) -> None:
        if not isinstance(value, Mapping):
            raise Mismatch(where, f"is {_kind(value)}, not a mapping")
        missing = [key for key in required if key not in value]
        if missing:
            raise Mismatch(where, f"lacks '{missing[0]}'")
        for key, item in value.items():
            if not isinstance(key, str):
                raise Mismatch(where, f"has a key of type {type(key).__name__}")
            spec = required.get(key, optional.get(key, rest))
            if spec is None:
                raise Mismatch(where, f"has an unknown key '{shorten(key, 40)}'")
            conform(item, spec, _join(where, key))
    return check


def scalar(value: Any, where: str) -> None:
    """A JSON scalar: a string, a bool, None or a finite number."""
    if value is None or isinstance(value, (str, bool)):
        return
    number()(value, where)


# a warning sign as monitor.WarningMonitor records it
WARNING = record({"kind": str(), "step": number(minimum=0, integer=True), "message": str()}, rest=scalar)


def adam_state(params: list[torch.Tensor]) -> Spec:
    """torch.optim.Adam(W)'s `state` for `params` (in the order of the optimiser's param groups):
    entries only for parameters stepped so far, each a step count and two moments of the
    parameter's shape."""
    def check(value: Any, where: str) -> None:
        if not isinstance(value, Mapping):
            raise Mismatch(where, f"is {_kind(value)}, not a mapping")
        for index, entry in value.items():
            if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(params):
                raise Mismatch(where, f"has an entry for parameter {shorten(repr(index), 40)}; this run has "
                               f"{len(params)}", damaged=False)
            param = params[index]
            conform(entry, {"step": tensor(torch.float32, ()), "exp_avg": param, "exp_avg_sq": param},
                    _join(where, index))
            if float(entry["step"]) < 0:
                raise Mismatch(_join(where, f"{index}.step"), "is negative")
    return check


def optimizer_state(optimizer: torch.optim.Optimizer, params: list[torch.Tensor]) -> dict:
    """Template of an Adam(W) state dict whose parameters have the shapes of `params`: per group
    the same parameter indexes, and settings of the same types (a key torch added since the file
    was written may be missing: torch fills it in)."""
    groups = [_group_spec(group) for group in optimizer.state_dict()["param_groups"]]
    return {"state": adam_state(params), "param_groups": groups}


def _group_spec(template: dict) -> Spec:
    def check(value: Any, where: str) -> None:
        if not isinstance(value, Mapping):
            raise Mismatch(where, f"is {_kind(value)}, not a mapping")
        indexes = value.get("params")
        if not (isinstance(indexes, list) and all(type(i) is int for i in indexes) and indexes == template["params"]):
            raise Mismatch(_join(where, "params"), "are not this run's parameter indexes", damaged=False)
        for key, sub in template.items():
            if key in value and key != "params":
                conform(value[key], number(minimum=0) if key in ("lr", "eps", "weight_decay") else sub,
                        _join(where, key))
        betas = value.get("betas", (0.0, 0.0))
        if not all(0 <= beta < 1 for beta in betas):
            raise Mismatch(_join(where, "betas"), f"are {betas}, not in [0, 1)")
    return check
