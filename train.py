#!/usr/bin/env python
"""Fit an image with learnable triangles: python train.py --config configs/quickstart.yaml --image IMG"""

import sys

from triangulate_ai.errors import run_command

if __name__ == "__main__":
    sys.exit(run_command("triangulate_ai.cli"))
