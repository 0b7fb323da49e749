"""Amortized triangulation."""
