"""Online RL, shared by GRPO and RLOO: sample answers to prompts, learn from rewards.

The fields such a run adds (`OnlineArgs`: the rewards, the prompt length limit, the held-out reward
check, open-r1's reward parameters), their checks before anything loads (each reward exists, one weight
per reward, vLLM only where there are GPUs), what `plan` counts (prompts after the rewards' data checks and
the length limit; the generation cache), the layout (prompts plus the columns rewards read) and the
held-out rewards evaluator.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field

from .. import data, evaluation, formats, generation, rewards, sources, tools, vllm_sync
from ..config import RecipeArgs, _field
from ..errors import ConfigError
from ..rewards_openr1 import DEFAULTS as OPEN_R1
from .base import on_the_hub


@dataclass
class OnlineArgs(RecipeArgs):
    """What online RL (GRPO, RLOO) adds: the rewards, the prompt length limit and the held-out reward check."""

    reward_funcs: list[str] = field(
        default_factory=lambda: ["math_answer"],
        metadata={
            "help": "Rewards by registry name (see posttrain_dist.rewards.REWARDS) or `package.module:function`; "
            "weigh them with trl's `reward_weights`."
        },
    )
    max_prompt_length: int | None = field(
        default=512, metadata={"help": "Prompts longer than this many tokens are dropped, and counted, before training."}
    )
    reward_eval_size: int = _field(100, "Held-out prompts (the test split) answered greedily and scored before and "
                                        "after training.")
    tools: list[str] | None = _field(None, "GRPO with tools: functions the model may call, as `package.module:function` "
                                           "(typed arguments, a Google-style docstring) or a built-in (`calculator`).")
    environment: str | None = _field(
        None, "GRPO with tools: a built-in environment (`calculator`: word problems; `countdown`: puzzles with an "
              "equation checker) or `package.module:Class` (trl's environment: `reset`, tool methods, `get_reward`). "
              "One instance per rollout; its tools join `tools`.")
    vllm_sync_check: int = _field(0, "Every N optimizer steps, compare the colocated vLLM's log-probabilities of one "
                                     "sampled completion with the trained model's, and stop the run when its weights "
                                     "differ (0: off). Needs `use_vllm: true`, `vllm_mode: colocate`.")
    # parameters of open-r1's rewards, under open-r1's names and with its defaults (posttrain_dist.rewards_openr1)
    cosine_min_value_wrong: float = _field(OPEN_R1["cosine_min_value_wrong"], "`cosine` reward: a wrong answer's value "
                                                                               "at length 0.")
    cosine_max_value_wrong: float = _field(OPEN_R1["cosine_max_value_wrong"], "`cosine` reward: a wrong answer's value "
                                                                               "at `cosine_max_len`.")
    cosine_min_value_correct: float = _field(OPEN_R1["cosine_min_value_correct"], "`cosine` reward: a right answer's "
                                                                                   "value at `cosine_max_len`.")
    cosine_max_value_correct: float = _field(OPEN_R1["cosine_max_value_correct"], "`cosine` reward: a right answer's "
                                                                                   "value at length 0.")
    cosine_max_len: int = _field(OPEN_R1["cosine_max_len"], "`cosine` reward: the length (characters) over which the "
                                                             "value moves.")
    repetition_n_grams: int = _field(OPEN_R1["repetition_n_grams"], "`repetition_penalty` reward: the size of the word "
                                                                     "n-grams counted.")
    repetition_max_penalty: float = _field(OPEN_R1["repetition_max_penalty"], "`repetition_penalty` reward: the penalty "
                                                                               "of an answer that only repeats (<= 0).")
    code_language: str = _field(OPEN_R1["code_language"], "`code_format` reward: the language of the code block.")
    max_completion_len: int = _field(OPEN_R1["max_completion_len"], "`soft_overlong_punishment` reward: the length "
                                                                     "(tokens) punished fully.")
    soft_punish_cache: int = _field(OPEN_R1["soft_punish_cache"], "`soft_overlong_punishment` reward: the tokens "
                                                                   "before it where the punishment grows.")

    def __post_init__(self):
        super().__post_init__()
        if not self.reward_funcs and not self.environment:
            raise ConfigError("`reward_funcs` is empty: online RL learns from at least one reward.")


def _divisors(n: int) -> list[int]:
    return [d for d in range(2, n + 1) if n % d == 0]


class GroupedBatches:
    """trl's check that each generation batch holds whole groups of `num_generations` answers, reworded with the
    values that would fit. trl counts the generation batch for the processes of this run (`world_size`); a plan for
    another number of processes checks it with `config.planned_for(cls, N)`."""

    def __post_init__(self):
        if self.num_generations < 2:
            raise ConfigError(f"`num_generations` must be at least 2 (the answers to one prompt are compared with each "
                              f"other); got {self.num_generations}.")
        try:
            super().__post_init__()
        except ConfigError:
            raise
        except ValueError as error:  # trl's batch check, reworded with the values that would fit
            try:
                advice = self._batch_advice()
            except AttributeError:  # failed before trl counted the processes: not a batch problem
                advice = None
            raise ConfigError(advice or str(error)) from None

    def _batch_advice(self) -> str | None:
        processes = self.world_size
        steps = self.steps_per_generation or self.gradient_accumulation_steps
        explicit = self.generation_batch_size if self.generation_batch_size != self.per_device_train_batch_size * processes * steps else None
        batch = self.generation_batch_size or self.per_device_train_batch_size * processes * steps
        if batch % self.num_generations == 0:
            return None
        how = (f"generation_batch_size {batch}" if explicit else
               f"per_device_train_batch_size {self.per_device_train_batch_size} x {processes} process(es) x "
               f"{steps} step(s) per generation = {batch} completions")
        good = [b for b in range(1, 9 * self.num_generations) if (b * processes * steps) % self.num_generations == 0][:4]
        return (f"each generation batch must hold whole groups of `num_generations` answers, but {how} does not divide "
                f"by num_generations {self.num_generations}. Use num_generations in {_divisors(batch)}, or "
                f"per_device_train_batch_size in {good} (keeping the rest).")


def check(args) -> None:
    if tools.used(args.recipe):
        check_tools(args)
    for name in args.recipe.reward_funcs:
        rewards.resolve(name, args.training, checked_only=True, recipe=args.recipe)
    weights = args.training.reward_weights
    names = args.recipe.reward_funcs + [f.__name__ for f in built_in_environment_reward(args.recipe)]
    if weights is not None and len(weights) != len(names):
        raise ConfigError(f"`reward_weights` has {len(weights)} values for {len(names)} rewards ({names}); give one "
                          "weight per reward.")
    if args.training.use_vllm and not args.env.for_gpus:
        check_vllm_on_cpu(args)
    vllm_sync.check_options(args)


def check_vllm_on_cpu(args) -> None:
    """vLLM's CPU build runs colocated on a CPU (the tests' second environment, `make vllm-env`); its server mode
    cannot take trained weights without CUDA (vLLM's weight transfer is NCCL or CUDA IPC)."""
    if args.env.planned:
        raise ConfigError(
            "`use_vllm: true` needs GPUs, and this plan is for CPU processes (the default `--accelerate cpu`): "
            "plan it for the cluster it is meant for, e.g. `posttrain-dist plan PRESET --accelerate zero3 "
            "--gpus-per-node 8` (add `--nodes N` for several nodes).")
    if args.training.vllm_mode != "colocate":
        raise ConfigError("`vllm_mode: server` needs GPUs (the trained weights reach the server over NCCL); on a CPU "
                          "use `vllm_mode: colocate` with vLLM's CPU build, or leave `use_vllm` off and trl "
                          "generates with transformers.")
    if importlib.util.find_spec("vllm") is None:
        raise ConfigError("`use_vllm: true` needs GPUs, or on a CPU vLLM's CPU build (`make vllm-env` makes "
                          ".venv-vllm with it): on a CPU leave it off and trl generates with transformers.")


def check_tools(args) -> None:
    """Tools and environment (`tools.check`); a built-in environment scores the rollouts itself: the default reward
    (math_answer) gives way to it; a rollout gets a bound."""
    recipe = args.recipe
    if not hasattr(args.training, "max_tool_calling_iterations"):
        raise ConfigError(f"`tools` and `environment` are trl's GRPO options; trl's {args.method.upper()} trainer takes "
                          "no tools: use GRPO (recipes/grpo.py).")
    if recipe.environment in tools.ENVIRONMENTS and args.sources.get("reward_funcs") == "default":
        recipe.reward_funcs = []
        args.sources["reward_funcs"] = f"none of the default's: the {recipe.environment} environment's reward"
    tools.bound(args)
    tools.check(args)


def tool_use(args) -> dict:
    """What GRPOTrainer takes for tool use: `tools` and `environment_factory` (one instance per rollout)."""
    recipe = args.recipe
    if not tools.used(recipe):
        return {}
    return {"tools": tools.tool_functions(recipe.tools), "environment_factory": tools.environment_class(recipe.environment)}


READS = data.Reads("online RL", formats.PROMPT)


def load(args, tokenizer=None, checked_only: bool = False, method=READS):
    """(train, eval, reward functions) of a run: prompts with the rewards' columns (gold answers parsed), prompts over
    `max_prompt_length` tokens dropped and counted. `checked_only` (plan): the user's rewards are not imported."""
    recipe = args.recipe
    functions = rewards.build(recipe.reward_funcs, args.training, checked_only=checked_only, recipe=recipe)
    functions += built_in_environment_reward(recipe)
    train, evaluation_data = data.load_for(method, recipe, seed=args.training.seed)
    rewards.check_data(recipe.reward_funcs, functions, train, recipe.dataset_name or "the data")
    if tokenizer is not None:
        train = data.drop_long_prompts(train, tokenizer, recipe.max_prompt_length, recipe.dataset_name or "train")
    return train, evaluation_data, functions


def built_in_environment_reward(recipe) -> list:
    return [tools.environment_reward(recipe.environment)] if recipe.environment in tools.ENVIRONMENTS else []


def trl_rewards(functions: list, args) -> tuple[list, list]:
    """What trl takes: (reward_funcs, reward_processing_classes), each reward model (`model:PATH`) loaded in the run's
    dtype with its own tokenizer (under ZeRO-3 partitioned as it loads; trl prepares it like the reference)."""
    from .. import reward_models

    return reward_models.for_trainer(functions, args.model, args.training, args.env)


def reward_models_of(args) -> list[tuple[str, str]]:
    """The reward models among the rewards (`model:PATH`), for `plan`'s memory rows."""
    from .. import reward_models

    return [("reward model", reward_models.reference(name)) for name in args.recipe.reward_funcs
            if reward_models.is_learned(name)]


def plan_rows(args) -> tuple:
    import os

    from .. import modeling

    hub = on_the_hub(args)
    if hub:
        return hub
    # the tokenizer of a hub model may not be here (a login node without the hub): read only the cache then, at
    # once (the hub client would retry for most of a minute), and leave the lengths unchecked if it is not there
    name = args.model.model_name_or_path
    cache_only = name not in modeling.SHORT_NAMES and not os.path.isdir(os.path.expanduser(name)) \
        and sources.hub_unreachable() is not None
    try:
        tokenizer = modeling.load_tokenizer(args.model, args.recipe.chat_template, args.training.trust_remote_code,
                                            local_files_only=cache_only)
    except (OSError, ValueError):
        train, _, _ = load(args, None, checked_only=True)
        return len(train), "prompts after the data checks (their lengths unchecked: the tokenizer is not here)", []
    train, _, _ = load(args, tokenizer, checked_only=True)
    return len(train), "prompts after the data checks and the length limit", []


def examples_per_step(args) -> float:
    return args.training.num_generations  # each prompt is answered num_generations times within the batch


def tokens(args) -> tuple[int, str]:
    t, rows = args.training, args.training.per_device_train_batch_size
    length = (args.recipe.max_prompt_length or 512) + t.max_completion_length
    how = f"{rows} completions x ({args.recipe.max_prompt_length} prompt + {t.max_completion_length} completion) tokens"
    if tools.used(args.recipe):  # trl holds a rollout (the model's turns and the tool results) to max_completion_length
        turns = t.max_tool_calling_iterations or 4
        how += (f"; with tools a rollout is up to {turns + 1} generation passes (max_tool_calling_iterations {turns}), "
                f"its turns and tool results together held to {t.max_completion_length} tokens, the tools' schemas in "
                "each prompt")
    return rows * length, how


def generation_cache(args) -> tuple[int, int] | None:
    """The key/value cache of one generation batch, when transformers generates (vLLM reserves its own)."""
    if getattr(args.training, "use_vllm", False):
        return None
    return args.training.per_device_train_batch_size, (args.recipe.max_prompt_length or 512) + \
        args.training.max_completion_length


def reference(args) -> bool:
    """A frozen reference copy for the KL term (beta > 0), in full training."""
    return not args.model.use_peft and getattr(args.training, "beta", 0.0) != 0.0


class HeldOutRewards(evaluation.Evaluator):
    """The run's own rewards on greedy answers to the held-out prompts (the test split), before and after."""

    name = "held_out_rewards"

    @staticmethod
    def applies(args) -> bool:
        recipe = args.recipe
        return bool(recipe.dataset_test_split and recipe.dataset_name) and recipe.reward_eval_size > 0

    def __init__(self, args, trainer=None):
        super().__init__(args)
        recipe = args.recipe
        # the run's own rewards; a reward model scores on this process, as trl scores with it during training
        self.functions = rewards.build(recipe.reward_funcs, args.training, recipe=recipe) + \
            built_in_environment_reward(recipe)
        held = sources.load_source(recipe.dataset_name, recipe.dataset_test_split, recipe.dataset_config,
                                split_option="dataset_test_split")
        held = held.select(range(min(recipe.reward_eval_size, len(held))))
        self.held = data.prepare(held, data.Reads("prompts", formats.PROMPT),
                                 f"{recipe.dataset_name} [{recipe.dataset_test_split}]", columns=recipe.dataset_columns,
                                 prompt_column=recipe.dataset_prompt_column, system_prompt=recipe.system_prompt)

    def measure(self, model, tokenizer) -> dict:
        if tools.used(self.args.recipe):
            return self.measure_rollouts(model, tokenizer)
        prompts = list(self.held["prompt"])
        texts, ids = generation.answer(model, tokenizer, prompts, self.args.training.max_completion_length,
                                       batch_size=16, return_ids=True)
        completions = [[{"role": "assistant", "content": t}] if isinstance(p, list) else t for p, t in zip(prompts, texts)]
        columns = {c: list(self.held[c]) for c in self.held.column_names if c != "prompt"}
        scored = rewards.score(self.functions, self.args.training.reward_weights, prompts, completions, ids, **columns)
        asked = [p[-1]["content"] if isinstance(p, list) else p for p in prompts[:8]]
        return {**scored, "prompts": len(prompts), "examples": texts[:8], "asked": asked}

    def measure_rollouts(self, model, tokenizer) -> dict:
        """Greedy multi-turn rollouts with the run's tools; scored by the run's rewards, the environment's among them."""
        recipe, training = self.args.recipe, self.args.training
        rows = [dict(zip(self.held.column_names, values)) for values in zip(*[self.held[c] for c in self.held.column_names])]
        functions = self.functions + tools.owned_reward(recipe.environment)
        done = tools.rollouts(model, tokenizer, rows, tools.environment_class(recipe.environment),
                              tools.tool_functions(recipe.tools), training.max_tool_calling_iterations,
                              training.max_completion_length, training.chat_template_kwargs)
        columns = {c: list(self.held[c]) for c in self.held.column_names if c != "prompt"}
        weights = training.reward_weights + [1.0] * (len(functions) - len(self.functions)) if training.reward_weights \
            else None
        scored = rewards.score(functions, weights, [r["prompt"] for r in rows],
                               [d["completion"] for d in done], [[] for _ in done],
                               environments=[d["environment"] for d in done], **columns)
        outcomes = [d for d in done if "score" in d]
        return {**scored, "prompts": len(rows), "tools": tools.counts(outcomes) if outcomes else {},
                "rollouts": [tools.render(d["messages"]) for d in done[:2]],
                "examples": [tools.render(d["completion"]) for d in done[:8]],
                "asked": [r["prompt"][-1]["content"] for r in rows[:8]]}

    def summary(self, before, after):
        figures = {"reward_before": before["mean"], "reward_after": after["mean"], "rewards_before": before["rewards"],
                   "rewards_after": after["rewards"], "reward_prompts": after["prompts"]}
        changes = [a - b for b, a in zip(before.get("per_completion", []), after.get("per_completion", []))]
        if changes:  # on how many held-out prompts the greedy answer scored higher after, and lower (scale-free);
            # 1e-6: the same answer scored in a differently padded batch
            figures["reward_rose_on"] = sum(c > 1e-6 for c in changes)
            figures["reward_fell_on"] = sum(c < -1e-6 for c in changes)
        for key in ("calls_per_rollout", "malformed_share", "turns_per_rollout"):
            if key in before.get("tools", {}):
                figures[f"tool_{key}_before"], figures[f"tool_{key}_after"] = before["tools"][key], after["tools"][key]
        return figures

    def section(self, before, after, summary):
        recipe = self.args.recipe
        per = ", ".join(f"{name} {summary['rewards_before'][name]:.3f} -> {value:.3f}"
                        for name, value in summary["rewards_after"].items())
        line = (f"Mean reward of greedy answers to {summary['reward_prompts']} held-out prompts "
                f"(`{recipe.dataset_name}` [{recipe.dataset_test_split}]): {summary['reward_before']:.3f} before, "
                f"{summary['reward_after']:.3f} after ({per})")
        if "reward_rose_on" in summary:
            line += (f"; higher on {summary['reward_rose_on']} prompts, lower on {summary['reward_fell_on']}, "
                     "the same on the rest")
        examples = [{"prompt": p, "before": b, "after": a}
                    for p, b, a in zip(after.get("asked", []), before["examples"], after["examples"])]
        lines = ["## Held-out rewards", "", line, "", generation.markdown_table(examples), ""]
        if after.get("rollouts"):  # with tools: whole rollouts, the model's turns and the tools' answers
            rows = [{"prompt": f"rollout {i + 1}", "before": b, "after": a}
                    for i, (b, a) in enumerate(zip(before["rollouts"], after["rollouts"]))]
            lines += ["### Two rollouts before and after (greedy; tool calls in brackets)", "",
                      generation.markdown_table(rows), ""]
        return "\n" + line, lines
