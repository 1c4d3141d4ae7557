"""GRPO with tools on the tiny model: the config checked before anything loads, two steps with each built-in
environment, and the masks of one rollout (the model's tokens in the loss, the tool's answer out of it)."""

import json

import pytest
from trl import GRPOTrainer

from posttrain_dist import checks, planning, tools
from posttrain_dist.errors import ConfigError

from conftest import PRESETS, TINY_OVERRIDES, load_recipe

CALCULATOR = ["--config", str(PRESETS / "grpo_tools_calculator.yaml"), *TINY_OVERRIDES, "--reward_eval_size", "4",
              "--max_completion_length", "32", "--per_device_train_batch_size", "8"]


def parse(tmp_path, *extra, preset=CALCULATOR):
    return checks.parse("grpo", [*preset, "--output_dir", str(tmp_path / "out"), *extra])


def test_tool_configs_are_checked_before_loading(tmp_path, no_model_loading):
    with pytest.raises(ConfigError, match="cannot be shown to the model: .*docstring"):
        parse(tmp_path, "--tools", "tool_fixtures:undocumented")
    with pytest.raises(ConfigError, match="has no `reset` method"):
        parse(tmp_path, "--environment", "tool_fixtures:NoReset")
    with pytest.raises(ConfigError, match="neither a built-in environment \\(calculator, countdown\\)"):
        parse(tmp_path, "--environment", "calculater")
    with pytest.raises(ConfigError, match="does not render tool calls .* `chat_template: trl:qwen3`"):
        parse(tmp_path, "--chat_template", "chatml")  # the template trains fine, but shows no tools
    with pytest.raises(ConfigError, match="trl's RLOO trainer takes no tools: use GRPO"):
        checks.parse("rloo", ["--config", str(PRESETS / "rloo.yaml"), *TINY_OVERRIDES, "--environment", "calculator",
                              "--chat_template", "trl:qwen3", "--output_dir", str(tmp_path / "out")])
    assert parse(tmp_path).recipe.reward_funcs == []  # the environment's reward replaces the default math_answer
    # a GRPO preset without tools, given an environment: the rewards it names stay, a rollout is bounded
    args = parse(tmp_path, "--environment", "calculator", "--chat_template", "trl:qwen3", "--dataset_name",
                 "builtin:word-problems", "--tools", "tool_fixtures:add",
                 preset=["--config", str(PRESETS / "grpo_lora.yaml"), *TINY_OVERRIDES])
    assert args.recipe.reward_funcs == ["math_answer"] and args.training.max_tool_calling_iterations == 4
    assert args.sources["max_tool_calling_iterations"] == "4: a rollout with tools needs a bound"
    assert not (tmp_path / "out").exists()


def test_plan_counts_the_generation_passes_of_a_rollout(tmp_path):
    plan = planning.render(planning.make("grpo", str(PRESETS / "grpo_tools_calculator.yaml"),
                                         "accelerate_configs/cpu.yaml", recipe_args=["--output_dir", str(tmp_path)]))
    assert "with tools a rollout is up to 3 generation passes (max_tool_calling_iterations 2)" in plan
    assert "environment" in plan and "calculator" in plan


@pytest.mark.parametrize("environment", ["calculator", "countdown"])
def test_two_steps_with_each_built_in_environment(tmp_path, environment):
    out = tmp_path / environment
    load_recipe("grpo").main(["--config", str(PRESETS / f"grpo_tools_{environment}.yaml"), *CALCULATOR[2:],
                              "--output_dir", str(out)])
    history = json.loads((out / "metrics.json").read_text())["log_history"]
    logged = {key for entry in history for key in entry}
    assert {f"rewards/{environment}/mean", "tools/call_frequency", "tools/calls_per_rollout", "tools/malformed_share",
            "tools/turns_per_rollout"} <= logged
    report = (out / "report.md").read_text()
    assert "### Two rollouts before and after" in report and "**user**" in report
    summary = json.loads((out / "evaluation.json").read_text())["summary"]
    assert {"tool_malformed_share_before", "tool_calls_per_rollout_after"} <= set(summary)


def test_a_rollouts_masks_keep_the_tool_result_out_of_the_loss(tmp_path, monkeypatch):
    """The model (scripted here: the tiny model would not call a tool) calls add(12, 7), the user's environment
    answers 19, the model says so. trl's tool mask is 1 on the model's tokens and 0 on the tool's answer."""
    captured = {}
    real_generate, real_score = GRPOTrainer._generate_single_turn, GRPOTrainer._generate_and_score_completions
    call = '<tool_call>\n{"name": "add", "arguments": {"a": 12, "b": 7}}\n</tool_call><|im_end|>'

    def scripted(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        tokenizer = self.processing_class
        turns = []
        for ids in prompt_ids:
            text = "The sum is 19.<|im_end|>" if "<tool_response>" in tokenizer.decode(ids) else call
            turns.append(tokenizer(text, add_special_tokens=False)["input_ids"])  # one per rollout (transformers' path)
        return turns, None

    def capture(self, inputs):
        output = real_score(self, inputs)
        captured.setdefault("output", output)
        return output

    monkeypatch.setattr(GRPOTrainer, "_generate_single_turn", scripted)
    monkeypatch.setattr(GRPOTrainer, "_generate_and_score_completions", capture)
    out = tmp_path / "out"
    trainer = load_recipe("grpo").main([*CALCULATOR, "--environment", "tool_fixtures:Adder", "--reward_eval_size", "0",
                                        "--max_steps", "1", "--max_completion_length", "96", "--output_dir", str(out)])
    assert real_generate is not scripted
    output, tokenizer = captured["output"], trainer.processing_class
    ids, mask = output["completion_ids"][0].tolist(), output["tool_mask"][0].tolist()
    keep = [i for i, m in zip(ids, mask) if m == 1]
    masked = [i for i, m in zip(ids, mask) if m == 0]
    assert tokenizer.decode(keep).startswith("<tool_call>") and "The sum is 19." in tokenizer.decode(keep)
    assert "<tool_response>" in tokenizer.decode(masked) and "19" in tokenizer.decode(masked)
    assert "<tool_response>" not in tokenizer.decode(keep)
    history = json.loads((out / "metrics.json").read_text())["log_history"]
    assert history[0]["rewards/Adder/mean"] == 1.0 and history[0]["tools/call_frequency"] == 1.0


def test_the_environments_score_a_rollout_by_hand():
    """1 for a right final answer, 0.25 off per malformed call (unparsed text, or a call the tool refused)."""
    calc = tools.Calculator()
    assert calc.reset(prompt=[], answer="475") is None
    call = {"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": "calculator", "arguments": {"expression": "411 + 64"}}}]}
    assert calc.calculator("411 + 64") == "475" and calc.calculator("7 / 2") == "3.5"
    with pytest.raises(ValueError, match="cannot evaluate"):
        calc.calculator("411 plus 64")
    right = [call, {"role": "tool", "name": "calculator", "content": "475"},
             {"role": "assistant", "content": "The answer is 475."}]
    assert calc._outcome(right) == {"score": 1.0, "correct": True, "calls": 1, "malformed": 0, "turns": 2}
    refused = [call, {"role": "tool", "name": "calculator", "content": "{'error': 'cannot evaluate'}"}, right[-1]]
    assert calc._outcome(refused)["score"] == 0.75
    unparsed = [{"role": "assistant", "content": '<tool_call>\n{"name": "calculator", "arguments": {"expression": '
                                                 '"411 + 64"}}\n</tool_call> and then 12'}]
    assert calc._outcome(unparsed) == {"score": -0.25, "correct": False, "calls": 1, "malformed": 1, "turns": 1}
    assert tools.counts([calc._outcome(right), calc._outcome(unparsed)]) == {
        "calls_per_rollout": 1.0, "turns_per_rollout": 1.5, "malformed_share": 0.5, "correct": 0.5}

    countdown = tools.Countdown()
    assert "check tool" in countdown.reset(numbers=[3, 5, 2], target=16)
    assert countdown.check("(3 + 5) * 2") == "correct: (3 + 5) * 2 = 16"
    assert countdown.check("3 + 5 + 2") == "not yet: 3 + 5 + 2 = 10, the target is 16"
    assert countdown.check("(3 + 5) * 3").startswith("not yet: use each of [3, 5, 2] exactly once")
    assert countdown._outcome([{"role": "assistant", "content": "<answer>(3 + 5) * 2</answer>"}])["score"] == 1.0


def test_held_out_rollouts_parse_and_run_a_well_formed_call(tiny_model_path):
    """The report's rollouts parse a turn as trl does (transformers' parser needs the prompt as its prefix: without
    it every call counted as malformed): a scripted model calls the calculator, reads 19 and answers 19."""
    import torch

    from posttrain_dist import config, modeling, tasks

    tokenizer = modeling.load_tokenizer(config.ModelArgs(model_name_or_path=tiny_model_path), "trl:qwen3")
    turns = iter(['<tool_call>\n{"name": "calculator", "arguments": {"expression": "12 + 7"}}\n</tool_call><|im_end|>',
                  "The answer is 19.<|im_end|>"])

    class Scripted:
        device = "cpu"

        def generate(self, input_ids, attention_mask=None, **kwargs):
            reply = tokenizer(next(turns), add_special_tokens=False, return_tensors="pt")["input_ids"]
            return torch.cat([input_ids, reply.expand(len(input_ids), -1)], dim=1)

    row = {**tasks.word_problems("test", 0)[0], "answer": "19"}
    done = tools.rollouts(Scripted(), tokenizer, [row], tools.environment_class("calculator"), [], 2, 64)
    assert [m["role"] for m in done[0]["completion"]] == ["assistant", "tool", "assistant"]
    assert done[0]["completion"][1]["content"] == "19"
    assert tools.counts(done) == {"calls_per_rollout": 1.0, "turns_per_rollout": 2.0, "malformed_share": 0.0,
                                  "correct": 1.0}
