"""Configuration: defaults documented in base.yaml, layering, and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from triangulate_ai.cli import main
from triangulate_ai.balance import REGISTRY as BALANCERS
from triangulate_ai.config import Config, load_config
from triangulate_ai.loss.perceptual import LpipsTermConfig, VggTermConfig
from triangulate_ai.loss.structural import MsSsimTermConfig
from triangulate_ai.errors import UserError

CONFIGS = Path(__file__).parent.parent / "configs"


def test_base_yaml_documents_every_default():
    text = (CONFIGS / "base.yaml").read_text()
    assert yaml.safe_load(text) == Config().dump()
    # the options of the other balancers and of the optional terms are documented as comments
    documented = {}
    for line in text.splitlines():
        stripped = line.strip()
        key, _, rest = stripped[3:].partition(":")
        if stripped.startswith("#  ") and key.strip().isidentifier():
            try:
                documented.setdefault(key.strip(), yaml.safe_load(rest.split(" #")[0]))
            except yaml.YAMLError:
                continue  # a fragment of a multi-line example
    defaults = {**VggTermConfig().model_dump(), **LpipsTermConfig().model_dump(), **MsSsimTermConfig().model_dump()}
    for key, value in defaults.items():
        assert documented.get(key, "missing") == value, key
    # a balancing method's options: here, or in its own config file (configs/<its name>.yaml)
    for name, method in BALANCERS.items():
        own = CONFIGS / f"{name}.yaml"
        for key, field in method.Options.model_fields.items():
            if key not in Config().dump()["loss"] and documented.get(key, "missing") != field.default:
                assert own.is_file() and f"{key}:" in own.read_text(), f"{name}: {key}"


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_shipped_configs_load(name):
    load_config(CONFIGS / name)


def test_extends_layers_and_overrides(tmp_path):
    (tmp_path / "parent.yaml").write_text("triangles: {count: 50, size: 0.2}\nrender: {sigma: 0.7}\n")
    (tmp_path / "child.yaml").write_text("extends: parent.yaml\ntriangles: {count: 60}\n")
    cfg = load_config(tmp_path / "child.yaml", ["render.sigma=0.25", "optim.lr.positions=1e-3",
                                                "optim.betas=[0.8, 0.9]", "triangles.background=[0, 0.5, 1.0]"])
    assert cfg.triangles.count == 60 and cfg.triangles.size == 0.2  # merged, not replaced
    assert cfg.render.sigma == 0.25 and cfg.optim.lr.positions == 1e-3
    assert cfg.optim.betas == [0.8, 0.9] and cfg.triangles.background == [0, 0.5, 1.0]
    assert cfg.triangles.init == "random"  # untouched default


def test_override_can_drop_a_term_only_if_another_remains():
    with pytest.raises(UserError, match=r"--set: loss.*at least one loss term"):
        load_config(None, ["loss.terms.l1=null"])


@pytest.mark.parametrize("text, expected", [
    ("triangles: {cuont: 3}\n", r"^{f}: unknown key 'triangles.cuont'; did you mean 'count'\?$"),
    ("render: {sigma: -1}\n", r"^{f}: render.sigma = -1: Input should be greater than 0$"),
    ("render: {sigma: '0.5'}\n", r"^{f}: render.sigma = '0.5': Input should be a valid number"),
    ("optim: {iterations: 2.5}\n", r"^{f}: optim.iterations = 2.5: Input should be a valid integer"),
    ("render: {backend: cairo}\n",
     r"^{f}: render.backend = 'cairo': Input should be 'auto', 'torch', 'fused', 'reference', 'triton' "
     r"or 'nvdiffrast'$"),
    ("triangles: {background: [1, 2]}\n", r"^{f}: triangles.background = \[1, 2\]: background must be"),
    ("log: {progress_bar: 1}\n", r"^{f}: log.progress_bar = 1: Input should be a valid boolean"),
    ("optim: {betas: [0.9, 1.5]}\n", r"^{f}: optim.betas = \[0.9, 1.5\]: betas must be two numbers"),
    ("- a\n- b\n", r"^{f}: the top level must be a mapping"),
    ("render: {sigma: [\n", r"^{f}: not valid YAML"),
    ("loss: {terms: {l2: {start_iter: 10, target_iter: 5}}}\n",
     r"^{f}: loss.terms.l2.target_iter = 5: target_iter must be 0 \(no ramp\) or >= start_iter$"),
    ("loss: {terms: {lpips: {start_iter: 10, target_iter: 5}}}\n",
     r"^{f}: loss.terms.lpips.target_iter = 5: target_iter must be 0 \(no ramp\) or >= start_iter$"),
])
def test_bad_config_names_file_key_and_value(tmp_path, text, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message
    assert __import__("re").search(expected.replace("{f}", __import__("re").escape(str(path))), message), message


def test_error_names_the_file_in_the_extends_chain_that_set_the_value(tmp_path):
    (tmp_path / "parent.yaml").write_text("render: {tile_size: 0}\n")
    (tmp_path / "child.yaml").write_text("extends: parent.yaml\nrender: {sigma: 0.5}\n")
    with pytest.raises(UserError, match=r"parent.yaml: render.tile_size = 0"):
        load_config(tmp_path / "child.yaml")


def test_unknown_override_key_and_malformed_override():
    with pytest.raises(UserError, match=r"^--set: unknown key 'render.sigmaa'; did you mean 'sigma'\?"):
        load_config(None, ["render.sigmaa=1"])
    with pytest.raises(UserError, match="expected key.path=value"):
        load_config(None, ["render.sigma"])


def test_extends_cycle_and_missing_files(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(UserError, match="extends itself"):
        load_config(tmp_path / "a.yaml")
    with pytest.raises(UserError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_cli_config_error_exits_2_with_one_line(tmp_path, image_path, capsys):
    out = tmp_path / "run"
    code = main(["--image", str(image_path), "--out", str(out), "--set", "triangles.count=0"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip() == "error: --set: triangles.count = 0: Input should be greater than or equal to 1"
    assert not out.exists()


def test_partial_override_of_a_section_keeps_that_section_defaults():
    """A nested default must be its class's default, or `--set a.b=x` would reset a's other keys."""
    from pydantic import BaseModel

    def check(model: type[BaseModel], path: str) -> None:
        for name, field in model.model_fields.items():
            default = field.default
            if isinstance(default, BaseModel):
                assert default == type(default)(), f"{path}{name}"
                check(type(default), f"{path}{name}.")

    check(Config, "")
    cfg = load_config(None, ["eval.lpips.weights=random"])
    assert cfg.eval.lpips.net == "alex"
