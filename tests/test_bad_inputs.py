"""The bad-input corpus (tests/bad_inputs/cases.yaml): every mistake refused with a message naming the problem
and the fix, before a model loads and before the output folder is touched; warnings let the run go on."""

import os
from pathlib import Path

import pytest
import yaml

from posttrain_dist import checks, cli
from posttrain_dist.run_folder import RunFolder

from conftest import load_recipe

CORPUS = Path(__file__).parent / "bad_inputs"
CASES = yaml.safe_load((CORPUS / "cases.yaml").read_text())


def _other_run(output_dir: Path) -> None:
    """A finished SFT run (learning rate 1e-5) left in the folder: its config and a checkpoint."""
    args = checks.parse("sft", ["--model_name_or_path", "tiny-random-llama", "--dataset_name", "builtin:sft-basics",
                                "--max_steps", "1", "--learning_rate", "1e-5", "--output_dir", str(output_dir)])
    RunFolder(args).write_config()
    (output_dir / "checkpoint-1").mkdir()


def _foreign_model(output_dir: Path) -> None:
    output_dir.mkdir(parents=True)
    (output_dir / "model.safetensors").write_bytes(b"weights of something else")


def _outside_link(output_dir: Path) -> None:
    """A group-writable folder where someone left a link named report.md pointing at a file of the user's."""
    output_dir.mkdir(parents=True)
    (output_dir.parent / "thesis.tex").write_text("years of work")
    (output_dir / "report.md").symlink_to(output_dir.parent / "thesis.tex")


def _snapshot(folder: Path) -> dict:
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() and not p.is_symlink() else None
            for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_bad_input_is_refused_with_the_fix(case, tmp_path, capsys, no_model_loading, monkeypatch):
    monkeypatch.chdir(CORPUS)  # relative paths in the corpus are relative to it
    output_dir = tmp_path / "out"
    {"other_run": _other_run, "foreign_model": _foreign_model, "outside_link": _outside_link,
     None: lambda _: None}[case.get("setup")](output_dir)
    before = _snapshot(output_dir)
    args = ["--config", case["config"], *case.get("args", []), "--output_dir", str(output_dir)]
    if "data" in case:
        args += ["--dataset_name", str(CORPUS / case["data"])]
    via = case.get("via", "recipe")
    if via == "recipe":
        run = lambda: load_recipe(case["method"]).main(args)  # noqa: E731
    elif via == "launch":
        run = lambda: cli.main(["launch", case["method"], case["config"], "--accelerate", case["accelerate"],  # noqa: E731
                                "--", *args[2:]])
    else:
        run = lambda: cli.main(["plan", case["config"], "--method", case["method"],  # noqa: E731
                                "--accelerate", case.get("accelerate", "cpu"), "--", *args[2:]])

    if case.get("warning"):
        run()  # the run goes on
        captured = capsys.readouterr()
        assert "optimizer steps:" in captured.out
    else:
        with pytest.raises(SystemExit) as exit_info:
            run()
        assert exit_info.value.code == 2
        captured = capsys.readouterr()
        assert "Traceback" not in captured.err
    message = " ".join(captured.err.split())
    for phrase in case["expect"]:
        assert phrase in message, f"{phrase!r} not in: {message}"
    assert _snapshot(output_dir) == before, "the output folder was changed"


def test_every_corpus_file_is_used():
    used = {c["config"] for c in CASES} | {c["data"] for c in CASES if "data" in c} | {"cases.yaml"}
    assert sorted(os.listdir(CORPUS)) == sorted(used)


def test_the_same_run_resumes_and_overwrite_replaces(tmp_path, capsys):
    """The other side of the output-folder check: the same config is let through (to resume), and
    `overwrite_output_dir` clears the other run when training starts."""
    output_dir = tmp_path / "out"
    _other_run(output_dir)
    same = ["--model_name_or_path", "tiny-random-llama", "--dataset_name", "builtin:sft-basics",
            "--learning_rate", "1e-5", "--output_dir", str(output_dir)]
    assert RunFolder(checks.parse("sft", [*same, "--max_steps", "1"])).differences() is None
    assert RunFolder(checks.parse("sft", [*same, "--max_steps", "50"])).differences() is None  # a longer run resumes
    other = RunFolder(checks.parse("sft", [*same, "--learning_rate", "3e-5", "--overwrite_output_dir", "true"]))
    assert "learning_rate" in other.differences()
    assert other.claim() == ["checkpoint-1", "config.yaml"]
    assert sorted(os.listdir(output_dir)) == ["config.yaml"]
    assert other.differences() is None  # the folder is now this run's
