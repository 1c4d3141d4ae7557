"""The recipe scripts and presets, shipped inside the package as `posttrain_dist.recipes` (see resources.py)."""
