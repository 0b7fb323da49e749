"""The public API's docstring examples run, from the repository's root (their paths are relative
to it), as a user would type them."""

from __future__ import annotations

import doctest
from pathlib import Path

import pytest

import triangulate_ai.api as api
import triangulate_ai.config as config
import triangulate_ai.instant as instant
import triangulate_ai.raster.scene as scene

ROOT = Path(__file__).parent.parent
PUBLIC = [(api, "fit"), (api, "render"), (api, "load_triangles"), (api, "Run"), (config, "load_config"),
          (instant, "predict"), (scene, "Scene")]


@pytest.mark.parametrize("module, name", PUBLIC, ids=[name for _, name in PUBLIC])
def test_the_docstring_has_its_sections_and_its_example_runs(module, name, monkeypatch):
    obj = getattr(module, name)
    text = obj.__doc__
    assert "Example:" in text and ">>>" in text
    if callable(obj) and name not in ("Scene",):
        assert "Args:" in text
    monkeypatch.chdir(ROOT)
    tests = doctest.DocTestFinder(recurse=False).find(obj, name, globs=vars(module).copy())
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in tests:
        runner.run(test)
    assert runner.summarize(verbose=False).failed == 0 and runner.summarize(verbose=False).attempted > 0
