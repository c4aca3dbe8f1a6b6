"""Hydra config groups (YAML only)."""
