"""What a config, a data file or a folder prepared by someone else can do: run no code, leak no token, delete nothing
of the user's, write nowhere outside the output folder, and never have a planted pickle loaded on resume."""

import json
import os
import pickle
import subprocess
import sys

import pytest

from posttrain_dist import cli, demo, parsing, run_folder, signals
from posttrain_dist.errors import ConfigError

from conftest import PRESETS, ROOT, TINY_OVERRIDES, load_recipe

SIDE_EFFECT = '''
import pathlib
pathlib.Path({marker!r}).write_text("imported")  # what a module of someone else's could do when imported

def score(completions, **kwargs):
    return [float(len(c) > 0) for c in completions]

from transformers import TrainerCallback

class Noted(TrainerCallback):
    pass
'''


@pytest.fixture(autouse=True)
def fresh_signals():
    yield
    signals._requested["signal"] = None


def test_plan_checks_rewards_and_callbacks_without_running_their_code(tmp_path, monkeypatch, capsys):
    marker = tmp_path / "imported.txt"
    (tmp_path / "their_module.py").write_text(SIDE_EFFECT.format(marker=str(marker)))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    config = tmp_path / "grpo.yaml"
    config.write_text("model_name_or_path: tiny-random-llama\ndataset_name: builtin:arithmetic\nnum_generations: 4\n"
                      "per_device_train_batch_size: 4\nreward_funcs: [their_module:score]\n"
                      "callbacks: [their_module:Noted]\n")
    cli.main(["plan", str(config), "--method", "grpo"])
    assert "optimizer steps" in capsys.readouterr().out
    assert not marker.exists(), "plan imported the config's module"
    # a name the module does not define is refused, still without importing it
    config.write_text(config.read_text().replace("their_module:score", "their_module:missing"))
    with pytest.raises(SystemExit):
        cli.main(["plan", str(config), "--method", "grpo"])
    assert "defines no 'missing'" in capsys.readouterr().err and not marker.exists()


@pytest.mark.parametrize("bad", ["os:system", "builtins:eval", "subprocess:run", "shutil:rmtree", ":", "a b:c"])
def test_a_reward_from_the_standard_library_or_malformed_is_refused(bad):
    from posttrain_dist import rewards

    with pytest.raises(ConfigError):
        rewards.resolve(bad, checked_only=True)


def test_a_hub_token_never_reaches_the_folder_or_a_printed_command(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    out = tmp_path / "out"
    token = "hf_SECRETtoken1234567890"
    cli.main(["plan", str(PRESETS / "sft_full.yaml"), "--", "--model_name_or_path", "tiny-random-llama",
              "--hub_token", token, "--output_dir", str(out)])
    cli.main(["launch", "sft", str(PRESETS / "sft_full.yaml"), "--print", "--", "--hub_token", token])
    printed = capsys.readouterr()
    assert token not in printed.out + printed.err
    load_recipe("sft").main(["--config", str(PRESETS / "sft_full.yaml"), *TINY_OVERRIDES, "--save_strategy", "steps",
                             "--save_steps", "1", "--hub_token", token, "--output_dir", str(out)])
    assert os.environ["HF_TOKEN"] == token  # where the hub client reads it
    for path in out.rglob("*"):
        if path.is_file():
            assert token.encode() not in path.read_bytes(), path
    assert not (out / "training_args.bin").exists()


def test_demo_output_refuses_a_folder_it_did_not_write(tmp_path):
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    (thesis / "chapter1.tex").write_text("years of work")
    with pytest.raises(ConfigError, match="holds what the demo did not write"):
        demo.run("recipes/smollm2-135m/dpo_identity.yaml", str(thesis))
    assert (thesis / "chapter1.tex").read_text() == "years of work"
    earlier = tmp_path / "demo"
    (earlier / "final").mkdir(parents=True)
    (earlier / "final" / "config.yaml").write_text("method: dpo\n")
    (earlier / "summary.json").write_text("{}")
    demo.check_demo_output(earlier)  # its own earlier output: replaced


def test_files_are_replaced_not_written_through_a_link(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("mine")
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "report.md").symlink_to(outside)
    run_folder.write_atomically(str(folder / "report.md"), "the report")
    assert outside.read_text() == "mine" and (folder / "report.md").read_text() == "the report"
    assert not (folder / "report.md").is_symlink()


def test_a_planted_pickle_is_never_loaded_on_resume(tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    argv = ["--config", str(PRESETS / "sft_full.yaml"), *TINY_OVERRIDES, "--max_steps", "1", "--save_strategy", "steps",
            "--save_steps", "1", "--output_dir", str(out)]
    load_recipe("sft").main(argv)
    checkpoint = out / "checkpoint-1"
    assert run_folder.untrusted(str(checkpoint)) is None

    class Payload:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    (checkpoint / "rng_state.pth").write_bytes(pickle.dumps(Payload()))  # swapped in after the run wrote it
    (out / run_folder.FINISHED).unlink()  # and the run made to look unfinished, so that it would resume
    assert "are not the ones the run wrote" in run_folder.untrusted(str(checkpoint))
    with pytest.raises(SystemExit) as refused:
        load_recipe("sft").main([*argv, "--max_steps", "2"])
    assert refused.value.code == 2
    message = capsys.readouterr().err
    assert "cannot be resumed from" in message and "posttrain-dist trust" in message
    assert not (tmp_path / "pwned").exists()
    # a mark someone wrote without the user's key is refused the same way
    (checkpoint / run_folder.COMPLETE).write_text(json.dumps({"global_step": 1, "files": {}}))
    assert "not signed" in run_folder.untrusted(str(checkpoint))
    cli.main(["trust", str(checkpoint)])  # the owner decides to trust it
    assert run_folder.untrusted(str(checkpoint)) is None


def test_the_vllm_server_listens_on_the_jobs_address_not_every_interface(monkeypatch, capsys):
    monkeypatch.setenv("SERVER_ADDR", "10.1.2.3")
    cli.main(["vllm-server", str(ROOT / "recipes/qwen3-8b/grpo_countdown_vllm_server.yaml"), "--print"])
    line = capsys.readouterr().out
    assert "--host 10.1.2.3" in line and "0.0.0.0" not in line


def test_a_config_env_block_cannot_reach_a_child_process(tmp_path):
    """The refusal happens before anything starts: a sitecustomize.py in the folder a config names never runs."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(f"open({str(tmp_path / 'ran')!r}, 'w').close()\n")
    config = tmp_path / "c.yaml"
    config.write_text(f"model_name_or_path: tiny-random-llama\ndataset_name: builtin:sft-basics\n"
                      f"env: {{PYTHONPATH: {site}}}\n")
    proc = subprocess.run([sys.executable, "-m", "posttrain_dist.cli", "launch", "sft", str(config), "--single-node"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "sets PYTHONPATH, which a config may not set" in proc.stderr
    assert not (tmp_path / "ran").exists()
    assert parsing.env_allowed("OMP_NUM_THREADS") and parsing.env_allowed("NCCL_SOCKET_IFNAME")
    assert not any(parsing.env_allowed(n) for n in ("LD_LIBRARY_PATH", "NCCL_NET_PLUGIN", "HF_TOKEN", "PYTHONHOME"))
