#!/usr/bin/env python
"""Train a model that triangulates any image in one pass: python train_model.py --config configs/model/l1.yaml"""

import sys

from triangulate_ai.errors import run_command

if __name__ == "__main__":
    sys.exit(run_command("triangulate_ai.model.cli"))
