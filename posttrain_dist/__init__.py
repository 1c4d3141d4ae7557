"""posttrain-dist: readable post-training recipes (SFT, DPO, GRPO) from one CPU to a Slurm cluster."""

__version__ = "0.1.0"
