"""Fuzzing what users bring (seeded, so a failure repeats): 200 configs mutated from the shipped presets through
`plan`, 30 through a recipe on the tiny model, and 40 bad data files through both. Each one is either accepted (and a
recipe then trains to finite weights), or refused before any model loads with one line that names the field or the
file and line; never a traceback, never a hang (each case well under 30 s), never an output folder left behind."""

import json
import math
import random
import time
from pathlib import Path

import pytest
import yaml

from posttrain_dist import cli, signals

from conftest import PRESETS, TINY, load_recipe

SEED = 2312
BASES = ["sft_full", "sft_lora", "sft_qlora", "dpo_full", "dpo_lora", "grpo_full", "grpo_lora"]
WORDS = ["learning_rate", "per_device_train_batch_size", "max_steps", "beta", "num_generations", "lora_r",
         "dataset_name", "max_length", "temperature", "eval_prompts", "reward_funcs", "warmup_steps"]
ODD_VALUES = [-1, 0, 1, -1e18, 1e18, 10**18, 0.5, float("nan"), float("inf"), -float("inf"), "fast", "", "🦙",
              None, True, [], [1, 2], {"a": 1}, "../../etc/passwd", "/dev/zero", "x" * 300, "1e-5", "-3"]


def base_config(name: str) -> dict:
    values = yaml.safe_load((PRESETS / f"{name}.yaml").read_text())
    values.update(model_name_or_path=TINY, max_steps=1, logging_steps=1, report_to="none", save_strategy="no")
    values.pop("eval_prompts", None)
    if name.startswith("grpo"):
        values.update(per_device_train_batch_size=4, num_generations=4, max_completion_length=8, reward_eval_size=4)
    else:
        values.update(per_device_train_batch_size=2)
    return values


def mutate(values: dict, rng: random.Random) -> tuple[dict | bytes, str]:
    """One mutation of a config: (the new config, or raw bytes of a broken file; what was done)."""
    values = dict(values)
    kind = rng.choice(["drop", "unknown", "misspell", "odd value", "odd value", "odd value", "number", "number",
                       "yaml", "unicode", "keys", "env", "reward", "mixture", "list for scalar"])
    key = rng.choice(sorted(values))
    if kind == "drop":
        values.pop(key)
    elif kind == "unknown":
        values["".join(rng.choice("abcdefgh_") for _ in range(rng.randint(3, 12)))] = rng.choice(ODD_VALUES)
    elif kind == "misspell":
        word = rng.choice(WORDS)
        i = rng.randrange(len(word))
        values[word[:i] + word[i + 1:]] = values.pop(word, 1)
    elif kind == "odd value":
        values[key] = rng.choice(ODD_VALUES)
    elif kind == "number":
        word = rng.choice(WORDS[:9])
        values[word] = rng.choice([-5, 0, 10**15, 1e-30, 7.5, 3, float("nan"), 2**31, -0.0])
    elif kind == "yaml":
        text = yaml.safe_dump(values)
        return rng.choice([text + "\nbroken: [1, 2\n", text.replace(":", "", 1), "\t" + text,
                           text.encode("utf-8") + b"\nname: caf\xe9\n", "- just\n- a list\n", "", "~\n"]), kind
    elif kind == "unicode":
        values[rng.choice(["dataset_name", "output_dir", "chat_template", "run_name"])] = "données/✓/🦙"
    elif kind == "keys":
        return yaml.safe_dump(values) + rng.choice(["123: 4\n", "~: 1\n", "true: 1\n", "1.5: x\n"]), kind
    elif kind == "env":
        values["env"] = rng.choice([["A=1"], {"PYTHONPATH": "/tmp"}, {"LD_PRELOAD": "x.so"}, {"OMP_NUM_THREADS": 1},
                                    {"NCCL_NET_PLUGIN": "evil"}, "OMP_NUM_THREADS=2", {"HF_TOKEN": "hf_x"}])
    elif kind == "reward":
        values["reward_funcs"] = rng.choice([[":"], ["os:system"], ["builtins:eval"], ["math_answr"], [],
                                             ["no.such:thing"], "math_answer", [None], [1]])
    elif kind == "mixture":
        values.pop("dataset_name", None)
        values["dataset_mixture"] = rng.choice([[{"path": "builtin:sft-basics", "weight": rng.choice([1e9, -1, 0,
                                                                                                      0.5, "x"])}],
                                                {"datasets": "x"}, [], [{"weight": 1}], "builtin:sft-basics"])
    else:
        values[key] = [values.get(key)]
    return values, kind


def write(path: Path, config) -> Path:
    if isinstance(config, bytes):
        path.write_bytes(config)
    elif isinstance(config, str):
        path.write_text(config)
    else:
        path.write_text(yaml.safe_dump(config, allow_unicode=True))
    return path


def method_of(base: str) -> str:
    return base.split("_")[0]


def one_line_refusal(err: str) -> bool:
    lines = [line for line in err.strip().splitlines() if line.startswith("posttrain-dist: ")]
    return bool(lines) and ("ConfigError" in lines[-1] or "DataError" in lines[-1]) and "Traceback" not in err


def outcome(run, capsys) -> tuple[str, str, float]:
    """(accepted / refused / crashed, what was said, seconds) of one call."""
    start = time.time()
    try:
        run()
        code = 0
    except SystemExit as stopped:
        code = stopped.code
    except Exception as error:  # a traceback: the one outcome that is never right
        return "crashed", f"{type(error).__name__}: {error}", time.time() - start
    finally:
        signals._requested["signal"] = None
    captured = capsys.readouterr()
    if code == 0:
        return "accepted", captured.out[-300:], time.time() - start
    return ("refused" if code == 2 and one_line_refusal(captured.err) else f"exit {code}"), captured.err[-600:], \
        time.time() - start


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative odd paths land here


def test_200_mutated_configs_through_plan(tmp_path, capsys):
    rng = random.Random(SEED)
    seen, bad = {"accepted": 0, "refused": 0}, []
    for i in range(200):
        base = BASES[i % len(BASES)]
        config, kind = mutate(base_config(base), rng)
        out = tmp_path / f"out{i}"
        if isinstance(config, dict):
            config["output_dir"] = str(out)
        path = write(tmp_path / f"config{i}.yaml", config)
        result, said, seconds = outcome(lambda: cli.main(["plan", str(path), "--method", method_of(base)]), capsys)
        if result not in seen or seconds > 30 or out.exists():
            bad.append((i, base, kind, result, round(seconds, 1), out.exists(), said[-300:]))
        else:
            seen[result] += 1
    assert not bad, bad
    assert seen["accepted"] >= 20 and seen["refused"] >= 100, seen  # the mutations reach both outcomes


@pytest.fixture
def count_model_loads(monkeypatch):
    import transformers

    loads = []
    real = transformers.AutoModelForCausalLM.from_pretrained.__func__

    def counted(cls, *args, **kwargs):
        loads.append(args[0] if args else kwargs)
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", classmethod(counted))
    return loads


def test_30_mutated_configs_through_a_recipe(tmp_path, capsys, count_model_loads):
    rng = random.Random(SEED + 1)
    bad, seen = [], {"accepted": 0, "refused": 0}
    for i in range(30):
        base = ["sft_full", "sft_lora", "dpo_lora", "grpo_full"][i % 4]
        config, kind = mutate(base_config(base), rng)
        out = tmp_path / f"out{i}"
        if isinstance(config, dict):
            config["output_dir"] = str(out)
        path = write(tmp_path / f"config{i}.yaml", config)
        argv = ["--config", str(path)] + ([] if isinstance(config, dict) else ["--output_dir", str(out)])
        loads_before = len(count_model_loads)
        result, said, seconds = outcome(lambda: load_recipe(method_of(base)).main(argv), capsys)
        loaded = len(count_model_loads) > loads_before
        if result == "accepted":
            weights = list(out.glob("*.safetensors"))
            sane = weights and all(_finite(w) for w in weights) and (out / "finished.json").exists()
            ok = bool(sane) and seconds < 30
        elif result == "refused":  # before the model loads, and nothing left behind (or, once training ran, the
            # guard's refusal of a non-finite loss: a learning rate the mutation made absurd but not out of range)
            ok = (not loaded and not out.exists()) or "was not finite" in said
        else:
            ok = False
        if ok:
            seen[result] += 1
        else:
            bad.append((i, base, kind, result, round(seconds, 1), loaded, out.exists(), said[-400:]))
    assert not bad, bad
    assert seen["accepted"] >= 3 and seen["refused"] >= 10, seen


def _finite(path) -> bool:
    from safetensors.torch import load_file

    import torch

    return all(torch.isfinite(t).all() for t in load_file(str(path)).values() if t.is_floating_point())


def bad_data_files(folder: Path, rng: random.Random) -> list[tuple[Path, str]]:
    """40 broken data files of every kind a user meets, with the method that reads them."""
    good = [{"prompt": f"Question {i}?", "completion": f"Answer {i}."} for i in range(6)]
    lines = [json.dumps(r) for r in good]
    cases = {
        "truncated.jsonl": ("\n".join(lines) + '\n{"prompt": "cut', "sft"),
        "not_json.jsonl": ("\n".join(lines[:2] + ["prompt: yaml?"] + lines[2:]), "sft"),
        "latin1.jsonl": (("\n".join(lines) + '\n{"prompt": "caf\xe9", "completion": "x"}').encode("latin-1"), "sft"),
        "bom.jsonl": (b"\xef\xbb\xbf" + "\n".join(lines).encode(), "sft"),
        "deep.jsonl": (lines[0] + "\n" + '{"prompt": ' + "[" * 5000 + "]" * 5000 + ', "completion": "x"}', "sft"),
        "null_completion.jsonl": ("\n".join(lines + [json.dumps({"prompt": "p", "completion": None})]), "sft"),
        "number_completion.jsonl": ("\n".join(lines + [json.dumps({"prompt": "p", "completion": 4})]), "sft"),
        "empty_strings.jsonl": ("\n".join([json.dumps({"prompt": "", "completion": ""})] * 3), "sft"),
        "wrong_columns.jsonl": ("\n".join(json.dumps({"q": "a", "a": "b"}) for _ in range(3)), "sft"),
        "mixed_columns.jsonl": ("\n".join(lines[:3] + [json.dumps({"text": "x"})]), "sft"),
        "array_not_closed.json": ("[" + ",".join(lines), "sft"),
        "object.json": (json.dumps({"prompt": "a", "completion": "b"}), "sft"),
        "scalar.json": ("42", "sft"),
        "messages_bad_role.jsonl": (json.dumps({"messages": [{"role": "wizard", "content": "x"}]}), "sft"),
        "messages_no_content.jsonl": (json.dumps({"messages": [{"role": "user"}]}), "sft"),
        "messages_string.jsonl": (json.dumps({"messages": "hello"}), "sft"),
        "messages_only_user.jsonl": (json.dumps({"messages": [{"role": "user", "content": "x"}]}), "sft"),
        "sharegpt_bad.jsonl": (json.dumps({"conversations": [{"from": "martian", "value": "x"}]}), "sft"),
        "binary.jsonl": (bytes(rng.randrange(256) for _ in range(2000)), "sft"),
        "nul_bytes.jsonl": (b"\x00" * 100, "sft"),
        "huge_line.jsonl": (json.dumps({"prompt": "x" * 200_000, "completion": "y"}), "sft"),
        "csv_ragged.csv": ("prompt,completion\na,b,c,d\ne\n", "sft"),
        "csv_header_only.csv": ("prompt,completion\n", "sft"),
        "csv_latin1.csv": ("prompt,completion\ncaf\xe9,b\n".encode("latin-1"), "sft"),
        "csv_wrong_header.csv": ("question,answer\na,b\n", "sft"),
        "csv_quotes.csv": ('prompt,completion\n"unclosed,b\n', "sft"),
        "fake.parquet": (b"PAR1 not really", "sft"),
        "empty.jsonl": ("", "sft"),
        "spaces.jsonl": ("   \n\n  \n", "sft"),
        "dpo_same.jsonl": ("\n".join(json.dumps({"prompt": "p", "chosen": "a", "rejected": "a"}) for _ in range(3)), "dpo"),
        "dpo_no_rejected.jsonl": ("\n".join(json.dumps({"prompt": "p", "chosen": "a"}) for _ in range(3)), "dpo"),
        "dpo_numbers.jsonl": (json.dumps({"prompt": 1, "chosen": 2, "rejected": 3}), "dpo"),
        "dpo_hh_no_markers.jsonl": (json.dumps({"chosen": "just text", "rejected": "other text"}), "dpo"),
        "dpo_conversation_no_prompt.jsonl": (json.dumps({"chosen": [{"role": "assistant", "content": "a"}],
                                                         "rejected": [{"role": "assistant", "content": "b"}]}), "dpo"),
        "dpo_deep.jsonl": (json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}) + "\n" + "{" * 3000, "dpo"),
        "grpo_no_prompt.jsonl": (json.dumps({"question": "1+1?", "answer": "2"}), "grpo"),
        "grpo_no_answer.jsonl": ("\n".join(json.dumps({"prompt": f"{i}+1?"}) for i in range(4)), "grpo"),
        "grpo_prose_answers.jsonl": ("\n".join(json.dumps({"prompt": f"{i}?", "answer": "many"}) for i in range(4)), "grpo"),
        "grpo_empty_prompt.jsonl": ("\n".join(json.dumps({"prompt": "", "answer": "1"}) for _ in range(4)), "grpo"),
        "grpo_latin1.jsonl": ('{"prompt": "caf\xe9 + 1?", "answer": "2"}'.encode("latin-1"), "grpo"),
    }
    assert len(cases) == 40
    made = []
    for name, (content, method) in cases.items():
        path = folder / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        made.append((path, method))
    return made


def test_40_bad_data_files_through_plan_and_a_recipe(tmp_path, capsys, count_model_loads):
    rng = random.Random(SEED + 2)
    bad = []
    for i, (path, method) in enumerate(bad_data_files(tmp_path, rng)):
        config = base_config({"sft": "sft_full", "dpo": "dpo_lora", "grpo": "grpo_full"}[method])
        config.update(dataset_name=str(path), dataset_test_split=None, output_dir=str(tmp_path / f"out{i}"))
        preset = write(tmp_path / f"config{i}.yaml", config)
        for via in ("plan", "recipe"):
            loads = len(count_model_loads)
            run = (lambda: cli.main(["plan", str(preset), "--method", method])) if via == "plan" else \
                (lambda: load_recipe(method).main(["--config", str(preset)]))
            result, said, seconds = outcome(run, capsys)
            names_it = path.name in said
            refused_early = result == "refused" and names_it and len(count_model_loads) == loads
            accepted = result == "accepted"
            if not (refused_early or accepted) or seconds > 30 or (result == "refused" and
                                                                  (tmp_path / f"out{i}").exists()):
                bad.append((path.name, via, result, round(seconds, 1), names_it, said[-300:]))
            if via == "recipe" and accepted:
                assert math.isfinite(json.loads((tmp_path / f"out{i}" / "metrics.json").read_text())["log_history"][0]
                                     .get("loss", 0.0))
    assert not bad, bad
