"""`posttrain-dist trust CHECKPOINT`: sign a checkpoint someone else wrote, after deciding to trust it.

Resuming refuses checkpoints whose completion mark this user's key did not sign (their pickled files could
run code when loaded: `run_folder.untrusted`). A checkpoint copied from a colleague, or written before marks
were signed, can be resumed once its owner signs it here.
"""

from __future__ import annotations

import os

from ..errors import ConfigError


def add(sub) -> None:
    p = sub.add_parser("trust", help="sign a checkpoint folder so that runs of yours may resume from it")
    p.add_argument("checkpoint", help="a checkpoint-N folder")
    p.set_defaults(func=trust)


def trust(args) -> None:
    from .. import run_folder

    path = args.checkpoint.rstrip("/")
    step = run_folder.step_of(os.path.basename(path))
    if step is None or not os.path.isdir(path):
        raise ConfigError(f"{path} is not a checkpoint-N folder.")
    if os.path.islink(path):
        raise ConfigError(f"{path} is a link; sign the folder it points to, where it is.")
    run_folder.sign_checkpoint(path, step)
    print(f"signed {path} (step {step}): runs of yours may resume from it")
