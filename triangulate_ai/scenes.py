"""One scene's part of a batch's state, and a batch's state from one-scene parts: each scene of a
batched fit saves an ordinary one-scene checkpoint in its own run folder (as a fit of it alone
would), and B such checkpoints resume as one batch. The Fitter only gives and takes whole states."""

from __future__ import annotations

import torch

from .checkpoints import number, optimizer_state
from .loop import Fitter


def scene_state(fitter: Fitter, scene: int) -> dict:
    """Scene `scene`'s state as a fit of it alone would save it: its rows of every per-scene
    tensor, and the steps that updated it (those before it stopped, if it did)."""
    done = fitter.steps_done(scene)
    one = take_scene(fitter.state_dict(), scene)
    for param_state in one["optimizer"]["state"].values():  # Adam stepped it `done` times
        if "step" in param_state:
            param_state["step"] = torch.tensor(float(done), device="cpu")
    return {**one, "step": done}


def scene_template(fitter: Fitter) -> dict:
    """What a one-scene state of this config holds (keys, tensor shapes and dtypes), for checking
    a checkpoint before loading it (checkpoints.conform)."""
    template = scene_state(fitter, 0)
    template["optimizer"] = optimizer_state(fitter.optimizer, [p.detach()[:1] for p in fitter.scene_params()])
    template["step"] = number(minimum=0, integer=True)
    template["elapsed"] = number(minimum=0)
    return template


def load_scenes(fitter: Fitter, states: list[dict]) -> None:
    """Resume B scenes from B one-scene states (saved at the same step)."""
    steps = {int(s["step"]) for s in states}
    if len(steps) != 1:
        raise ValueError(f"scenes saved at different steps ({sorted(steps)}) cannot resume as one batch")
    fitter.load_state_dict(join_scenes(states))


SCENE_SECTIONS = ("triangles", "optimizer", "balancer", "densifier")


def _map_scene_tensors(state, fn):
    """Apply fn to every tensor with a scene dimension (dim >= 1) in a nested state; 0-d tensors
    (step counters) and plain values are shared by the scenes and kept as they are."""
    if torch.is_tensor(state):
        return fn(state) if state.dim() >= 1 else state
    if isinstance(state, dict):  # dict or OrderedDict (module state dicts)
        return type(state)((k, _map_scene_tensors(v, fn)) for k, v in state.items())
    if isinstance(state, list):
        return [_map_scene_tensors(v, fn) for v in state]
    return state


def take_scene(state: dict, scene: int) -> dict:
    """The one-scene state of scene `scene` from a batch state (param_groups are shared)."""
    out = dict(state)
    for key in SCENE_SECTIONS:
        section = state[key]
        if key == "optimizer":
            out[key] = {"state": _map_scene_tensors(section["state"], lambda t: t[scene:scene + 1].clone()),
                        "param_groups": section["param_groups"]}
        else:
            out[key] = _map_scene_tensors(section, lambda t: t[scene:scene + 1].clone())
    return out


def join_scenes(states: list[dict]) -> dict:
    """A batch state from one-scene states, scene b from states[b]."""
    def cat(path_values):
        first = path_values[0]
        if torch.is_tensor(first):
            return torch.cat(path_values) if first.dim() >= 1 else first
        if isinstance(first, dict):
            return type(first)((k, cat([v[k] for v in path_values])) for k in first)
        if isinstance(first, list):
            return [cat([v[i] for v in path_values]) for i in range(len(first))]
        return first

    out = dict(states[0])
    for key in SCENE_SECTIONS:
        if key == "optimizer":
            out[key] = {"state": cat([s[key]["state"] for s in states]), "param_groups": states[0][key]["param_groups"]}
        else:
            out[key] = cat([s[key] for s in states])
    return out
