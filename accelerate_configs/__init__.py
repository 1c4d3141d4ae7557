"""The accelerate configs, shipped inside the package as `posttrain_dist.accelerate_configs` (see resources.py)."""
