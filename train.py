#!/usr/bin/env python
"""Fit an image with learnable triangles: python train.py --config configs/quickstart.yaml --image IMG"""

import sys

from triangulate_ai.cli import main

if __name__ == "__main__":
    sys.exit(main())
