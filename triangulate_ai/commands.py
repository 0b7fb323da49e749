"""Console commands (pyproject's [project.scripts]): each imports its module only when run, under
errors.run_command, so that Ctrl-C while torch loads ends in one line, not a traceback."""

from .errors import run_command


def fit() -> int:
    return run_command("triangulate_ai.cli")


def ablate() -> int:
    return run_command("triangulate_ai.experiments.ablate")


def train_model() -> int:
    return run_command("triangulate_ai.model.cli")
