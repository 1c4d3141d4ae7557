"""Pushing a run to the Hugging Face Hub: once, at the end of a finished run; never a preempted or failed one.

With `push_to_hub: true` transformers' trainer would create the repository when it starts and push at every save,
so a preempted or diverged run lands on the hub half-trained. Here the trainer never pushes (`hold` takes the
setting out of the arguments it gets); after the report, the main process pushes the folder's final files in one
commit (`push_finished`):

    the model (model*.safetensors, config.json, generation_config.json) or the adapter (adapter_*), the tokenizer
    and its chat template, the model card README.md, report.md, curves.png, config.yaml, metrics.json,
    evaluation.json, and merged/ when `merge_adapter` made it.

Checkpoints, the run's marks, locks and data caches stay local. `hub_model_id` names the repository (default: the
output folder's name under your account), `hub_private_repo` and `hub_revision` are honoured; a `hub_strategy`
that pushes checkpoints (every_save, checkpoint, all_checkpoints) pushes nothing more here, and `plan` says so. A
push that fails leaves the finished run as it is; `posttrain-dist push OUTPUT_DIR` pushes it again.
"""

from __future__ import annotations

import fnmatch
import os

from .errors import ConfigError, warn

# The files of a finished run that go to the hub (patterns relative to the output folder); merged/ when asked.
PUSHED = ("*.safetensors", "*.safetensors.index.json", "config.json", "generation_config.json", "adapter_config.json",
          "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja", "vocab.json",
          "merges.txt", "tokenizer.model", "added_tokens.json", "README.md", "report.md", "curves.png", "config.yaml",
          "metrics.json", "evaluation.json")
CHECKPOINT_STRATEGIES = ("every_save", "checkpoint", "all_checkpoints")


def hold(training) -> dict | None:
    """Take `push_to_hub` away from the trainer's arguments; the settings of the push at the end, or None."""
    if not getattr(training, "push_to_hub", False):
        return None
    training.push_to_hub = False
    strategy = getattr(training, "hub_strategy", "every_save")
    return {"repo_id": getattr(training, "hub_model_id", None), "private": getattr(training, "hub_private_repo", None),
            "revision": getattr(training, "hub_revision", None), "strategy": getattr(strategy, "value", strategy)}


def repo_id(push: dict, output_dir: str) -> str:
    """`hub_model_id`, or the output folder's name (the hub puts it under the token's account)."""
    return push["repo_id"] or os.path.basename(os.path.normpath(output_dir))


def check(push: dict | None, output_dir: str) -> None:
    """Before anything loads: a repository name the hub accepts, and a token to push with."""
    if push is None:
        return
    from huggingface_hub import get_token
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    name = repo_id(push, output_dir)
    try:
        validate_repo_id(name)
    except HFValidationError as error:
        raise ConfigError(f"`hub_model_id` {name!r} is not a hub repository name ({str(error).splitlines()[0]}); "
                          "write it as `namespace/name`.") from None
    if get_token() is None:
        raise ConfigError("`push_to_hub: true` needs a hub token with write access: `hf auth login`, or HF_TOKEN in "
                          "the environment (or set push_to_hub false and run `posttrain-dist push OUTPUT_DIR` later).")


def plan_line(push: dict | None, output_dir: str) -> str | None:
    if push is None:
        return None
    line = (f"push: to {repo_id(push, output_dir)} once, when the run has finished (the final model, tokenizer, card, "
            "report and curves); a preempted or failed run pushes nothing")
    if push["strategy"] in CHECKPOINT_STRATEGIES:
        line += (f". hub_strategy {push['strategy']} pushes checkpoints in transformers' trainer; here checkpoints stay "
                 "in the output folder (resume from them there)")
    return line


def files(path: str) -> list[str]:
    """The run's files that are pushed, relative to its folder, sorted."""
    chosen = []
    for root, dirs, names in os.walk(path):
        relative = os.path.relpath(root, path)
        if relative != "." and relative.split(os.sep)[0] != "merged":
            dirs[:] = []
            continue
        dirs[:] = [d for d in dirs if relative != "." or d == "merged"]
        for name in names:
            if any(fnmatch.fnmatch(name, pattern) for pattern in PUSHED) and not os.path.islink(os.path.join(root, name)):
                chosen.append(os.path.normpath(os.path.join(relative, name)))
    return sorted(chosen)


def push(path: str, repo: str, private: bool | None = None, revision: str | None = None,
         message: str | None = None) -> str:
    """One commit of the run's files (`files`) to `repo` (created when missing); returns the commit's address."""
    from huggingface_hub import CommitOperationAdd, HfApi

    if not files(path):
        raise ConfigError(f"{path} holds no model files to push.")
    api = HfApi()
    repo = api.create_repo(repo, private=private, exist_ok=True).repo_id
    if revision:
        api.create_branch(repo, branch=revision, exist_ok=True)
    operations = [CommitOperationAdd(path_in_repo=name.replace(os.sep, "/"), path_or_fileobj=os.path.join(path, name))
                  for name in files(path)]
    commit = api.create_commit(repo, operations, commit_message=message or "posttrain-dist: finished run",
                               revision=revision)
    return commit.commit_url


def push_finished(run) -> None:
    """Main process, after the report: push a finished run once. A failed push is said, not raised: the run is
    finished and saved, and `posttrain-dist push` tries again."""
    settings = run.args.push
    if settings is None or run.finished() is None:
        return
    repo = repo_id(settings, run.path)
    print(f"pushing {run.path} to the hub: {repo}", flush=True)
    try:
        url = push(run.path, repo, settings["private"], settings["revision"],
                   f"posttrain-dist: {run.args.method} run finished at step {run.finished()['global_step']}")
    except Exception as error:  # noqa: BLE001  (network, permissions, quota: the run itself is done)
        warn(f"the push to {repo} failed ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); "
             f"the run is finished and saved in {run.path}: `posttrain-dist push {run.path} --repo {repo}` pushes it.")
        return
    print(f"pushed: {url}", flush=True)
