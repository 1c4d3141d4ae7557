"""The package outside a checkout: a wheel built from this tree, installed into a fresh virtual environment,
finds its shipped presets, accelerate configs and recipe scripts (`posttrain-dist plan` on a shipped preset)."""

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

from conftest import ROOT


def test_the_built_wheel_plans_a_shipped_preset_outside_the_checkout(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels),
                    str(ROOT)], check=True, capture_output=True, timeout=300)
    wheel = next(wheels.glob("posttrain_dist-*.whl"))
    fresh = tmp_path / "venv"
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(fresh)], check=True, timeout=120)
    python = fresh / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
                   check=True, capture_output=True, timeout=300)
    # the dependencies come from the test venv's site-packages, listed after the fresh one (its .pth files, among
    # them the editable install of this checkout, are not read from there)
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = subprocess.run([str(python), "-c", "import posttrain_dist; print(posttrain_dist.__file__)"], cwd=elsewhere,
                           capture_output=True, text=True, env=env, check=True).stdout
    assert where.startswith(site), f"the installed wheel should be imported, not the checkout: {where}"
    proc = subprocess.run([str(fresh / "bin" / "posttrain-dist"), "plan", "smollm2-135m/sft_lora", "--accelerate",
                           "cpu_ddp"], cwd=elsewhere, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    shipped = Path(site) / "posttrain_dist"
    assert f"accelerate launch --config_file {shipped / 'accelerate_configs' / 'cpu_ddp.yaml'}" in proc.stdout
    assert str(shipped / "recipes" / "sft.py") in proc.stdout and "processes: 2" in proc.stdout
    for name in ("zero3.yaml", "fsdp2.yaml", "cpu.yaml"):
        assert (shipped / "accelerate_configs" / name).is_file()
    assert (shipped / "recipes" / "qwen3-8b" / "sft_full.yaml").is_file() and (shipped / "recipes" / "grpo.py").is_file()
