"""Models that come with the package: NAME.pt (weights, loaded with weights_only) and NAME.json (its card)."""
