"""`posttrain-dist push OUTPUT_DIR`: push a finished run to the hub (what `push_to_hub` pushes at the end)."""

from __future__ import annotations

import os


def add(sub) -> None:
    p = sub.add_parser("push", help="push a finished run's model, tokenizer, card and report to the hub")
    p.add_argument("output_dir", help="the output folder of a finished run")
    p.add_argument("--repo", help="hub repository (default: the run's hub_model_id, else the folder's name)")
    p.add_argument("--private", action="store_true", help="create the repository private")
    p.add_argument("--revision", help="branch to push to (default: main)")
    p.set_defaults(func=push)


def push(args) -> None:
    import yaml

    from .. import hub, run_folder, safety
    from ..errors import ConfigError

    path = args.output_dir.rstrip("/")
    mark = safety.read_mark(os.path.join(path, run_folder.FINISHED))
    if mark is None:
        why = "it stopped for preemption; resume it first" if os.path.exists(os.path.join(path, run_folder.PREEMPTED)) \
            else "no finished run is marked there (a run in progress, failed, or not one of ours)"
        raise ConfigError(f"{path} is not pushed: {why}.")
    config = {}
    if os.path.isfile(os.path.join(path, "config.yaml")):
        with open(os.path.join(path, "config.yaml"), encoding="utf-8") as f:
            config = yaml.safe_load(f) or {}
    settings = {"repo_id": args.repo or config.get("hub_model_id"), "private": args.private or None,
                "revision": args.revision, "strategy": None}
    hub.check(settings, path)
    repo = hub.repo_id(settings, path)
    url = hub.push(path, repo, settings["private"], settings["revision"],
                   f"posttrain-dist: run finished at step {mark.get('global_step')}")
    print(f"pushed {len(hub.files(path))} files of {path} to {repo}: {url}")
