#!/usr/bin/env python
"""Loss-landscape figures: analytic objectives, empirical slices around a fit, run curves.

Examples:
  python visualize_geometric_loss.py analytic --out figures/
  python visualize_geometric_loss.py empirical --run runs/demo --out figures/ --points 41
  python visualize_geometric_loss.py empirical --config configs/quickstart.yaml --image examples/kodim23.png \\
      --set image.max_size=64 --out figures/
  python visualize_geometric_loss.py curves runs/ablation/balancers/*/kodim23_seed0 --out figures/
"""

import sys

from triangulate_ai.errors import run_command

if __name__ == "__main__":
    sys.exit(run_command("triangulate_ai.experiments.visualize"))
