"""The benchmark harness on the tiny model: both sides of the overhead comparison do the same work, and the
measurements it reads are there. (The figures themselves live in benchmarks/results/, never in tests.)"""

import json
import subprocess
import sys

from conftest import ROOT, TINY

sys.path.insert(0, str(ROOT / "benchmarks"))
import run as bench  # noqa: E402


def measure(*argv):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "measure.py"), *argv], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("BENCHMARK ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return json.loads(lines[-1][len("BENCHMARK "):])


def test_recipe_and_plain_trl_do_identical_work(tmp_path, tiny_model_path):
    data_file = bench._prompt_completion_file(str(tmp_path))
    settings = ["--max_steps", "2", "--per_device_train_batch_size", "4", "--max_length", "64",
                "--learning_rate", "1e-4", "--lr_scheduler_type", "linear", "--warmup_steps", "0", *bench.QUIET]
    ours = measure("recipe", "sft", "--model_name_or_path", TINY, "--dataset_name", data_file,
                   "--output_dir", str(tmp_path / "ours"), *settings)
    plain = measure("plain-sft", tiny_model_path, data_file, str(tmp_path / "plain"), *settings)
    assert ours["steps"] == plain["steps"] == 2
    assert ours["tokens"] == plain["tokens"] > 0
    assert abs(ours["train_loss"] - plain["train_loss"]) < 1e-6
    for result in (ours, plain):
        assert result["training_peak_rss"] > result["baseline_rss"] > 0
        assert result["rss_at_training_start"] > result["baseline_rss"]


def test_skewed_data_is_mostly_short(tmp_path):
    rows = [json.loads(line) for line in open(bench._skewed_file(str(tmp_path)))]
    words = sorted(len(r["completion"].split()) for r in rows)
    long = [w for w in words if w >= 250]
    assert 0.05 < len(long) / len(rows) < 0.15 and words[len(words) // 2] <= 30
