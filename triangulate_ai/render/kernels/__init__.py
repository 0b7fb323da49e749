"""Compute kernels of the renderers, imported only by the backend that launches them."""
