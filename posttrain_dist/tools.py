"""Tool use in GRPO: the model calls tools over several turns and is rewarded on the outcome.

trl's GRPOTrainer runs the rollouts (`tools`, `environment_factory`): it parses the tool calls the chat template
describes, runs them, appends their results as `tool` messages, generates again (at most
`max_tool_calling_iterations` times), and masks the tool results out of the loss (its `tool_mask`). Here:

- the config: `tools: [package.module:function, ...]` and `environment: NAME or package.module:Class`, checked
  before anything loads (`check`): each tool's signature and docstring make the JSON schema the template shows
  (transformers' `get_json_schema`), an environment has `reset` and either `get_reward` or rewards of the config,
  the chat template renders tool calls and trl can parse them (Qwen2.5/Qwen3, Llama 3.1/3.2, GLM-4, gpt-oss, ...;
  `chat_template: trl:qwen3` gives a model without one Qwen3's template as trl ships it), and a rollout is bounded;
- two built-in environments, generated locally with a seed like our tasks (`ENVIRONMENTS`): `calculator` (word
  problems, `builtin:word-problems`, with a calculator tool) and `countdown` (`builtin:countdown`, with a `check`
  tool that says whether an equation reaches the target). Their reward (`environment_reward`) is 1 for a right
  final answer, less 0.25 for each malformed tool call (text that opens a tool call but does not parse, or a call
  the tool refuses); it logs tool calls, malformed calls and turns per rollout;
- `rollouts`: the same rollouts outside the trainer, greedy, for the report's held-out reward and its example
  rollouts before and after training.
"""

from __future__ import annotations

import inspect
import json
import re

from . import references, rewards, tasks
from .tasks import evaluate_expression as _evaluate, shown_number as _number
from .errors import ConfigError

MALFORMED_PENALTY = 0.25


class ToolEnvironment:
    """What the built-in environments share: the row of the rollout, and its reward from the messages."""

    def reset(self, **row) -> str | None:
        self.row = row
        return None

    def _correct(self, answer_text: str) -> bool:
        raise NotImplementedError

    def _outcome(self, completion) -> dict:
        """The rollout's reward and counts: `completion` is the list of messages trl (or `rollouts`) produced."""
        return outcome(completion, self._correct)


def _opened_calls(text: str) -> int:
    """Tool calls a text opens without being parsed as calls: <tool_call> tags, else bare {"name": ...} objects."""
    tags = text.count("<tool_call>")
    return tags if tags else len(re.findall(r"\{\s*\"name\"\s*:", text))


def outcome(completion, correct) -> dict:
    """Reward and counts of a rollout: `calls` tried (run, refused, or unparsed), `malformed` (text that opens a tool
    call but does not parse, and calls the tool refused: their result is an error), assistant `turns`."""
    messages = completion if isinstance(completion, list) else [{"role": "assistant", "content": completion}]
    turns = [m for m in messages if m.get("role") == "assistant"]
    results = [m for m in messages if m.get("role") == "tool"]
    unparsed = sum(_opened_calls(str(m.get("content") or "")) for m in turns)
    refused = sum(str(m.get("content") or "").startswith("{'error'") for m in results)
    final = str(turns[-1].get("content") or "") if turns and not turns[-1].get("tool_calls") else ""
    right = bool(final) and correct(final)
    malformed = unparsed + refused
    return {"score": float(right) - MALFORMED_PENALTY * min(malformed, 4), "correct": right,
            "calls": len(results) + unparsed, "malformed": malformed, "turns": len(turns)}


class Calculator(ToolEnvironment):
    """Arithmetic word problems (`builtin:word-problems`): a calculator tool; the final answer is a number."""

    data = "builtin:word-problems"

    def calculator(self, expression: str) -> str:
        """Evaluate an arithmetic expression.

        Args:
            expression: The expression to evaluate, with numbers, + - * / and parentheses, e.g. "(12 + 7) * 3".

        Returns:
            The value of the expression.
        """
        return tasks.calculator(expression)

    def _correct(self, answer_text):
        return rewards.math_answer([answer_text], [self.row.get("answer")])[0] == 1.0


class Countdown(ToolEnvironment):
    """Countdown puzzles (`builtin:countdown`): a `check` tool answers whether an equation uses each number once and
    reaches the target; the final equation goes inside <answer></answer>."""

    data = "builtin:countdown"

    def reset(self, **row):
        super().reset(**row)
        return " You can test an equation with the check tool before you answer."

    def check(self, equation: str) -> str:
        """Check a countdown equation against this puzzle's numbers and target.

        Args:
            equation: An equation using each given number exactly once, with + - * / and parentheses, e.g. "(3 + 5) * 2".

        Returns:
            Whether the equation reaches the target with the given numbers, and its value.
        """
        value = _evaluate(equation)
        right = rewards.countdown_equation([f"<answer>{equation}</answer>"], [self.row["numbers"]], [self.row["target"]])
        if right[0] == 1.0:
            return f"correct: {equation} = {self.row['target']}"
        used = sorted(int(n) for n in re.findall(r"\d+", equation))
        if used != sorted(int(n) for n in self.row["numbers"]):
            return f"not yet: use each of {self.row['numbers']} exactly once (this uses {used})"
        return f"not yet: {equation} = {_number(value)}, the target is {self.row['target']}"

    def _correct(self, answer_text):
        return rewards.countdown_equation([answer_text], [self.row["numbers"]], [self.row["target"]])[0] == 1.0


ENVIRONMENTS = {"calculator": Calculator, "countdown": Countdown}


TOOLS = {"calculator": tasks.calculator}


# ---------------------------------------------------------------- the config


def used(recipe) -> bool:
    return bool(getattr(recipe, "tools", None) or getattr(recipe, "environment", None))


def environment_class(name: str | None, checked_only: bool = False):
    """The environment class of `environment` (a built-in name or `package.module:Class`); with `checked_only` (plan)
    a path is checked without importing it, and None comes back for it."""
    if not name:
        return None
    if name in ENVIRONMENTS:
        return ENVIRONMENTS[name]
    if ":" not in name:
        raise ConfigError(f"`environment: {name}` is neither a built-in environment ({', '.join(ENVIRONMENTS)}) nor "
                          "`package.module:Class`.")
    if checked_only:
        references.check(name, "environment")
        return None
    found = references.load(name, "environment")
    if not inspect.isclass(found):
        raise ConfigError(f"`environment: {name}` must name a class (trl makes one instance per rollout).")
    return found


def tool_functions(names: list[str] | None, checked_only: bool = False) -> list:
    found = []
    for name in names or []:
        if name in TOOLS:
            found.append(TOOLS[name])
        elif ":" not in name:
            raise ConfigError(f"tool {name!r} is neither a built-in tool ({', '.join(TOOLS)}) nor `package.module:function`.")
        elif checked_only:
            references.check(name, "tool")
        else:
            found.append(references.load(name, "tool"))
    return found


def environment_tools(cls) -> list:
    """The tool methods of an environment class, as trl finds them (public functions but reset and get_reward)."""
    return [member for name, member in inspect.getmembers(cls, predicate=inspect.isfunction)
            if not name.startswith("_") and name not in ("reset", "get_reward")]


def schema(function, where: str) -> dict:
    """The JSON schema the chat template shows for a tool, from its signature and docstring."""
    from transformers.utils import get_json_schema

    try:
        return get_json_schema(function)
    except Exception as error:  # noqa: BLE001  (transformers' DocstringParsingException, TypeHintParsingException)
        raise ConfigError(f"{where} {function.__name__!r} cannot be shown to the model: {str(error).splitlines()[0]}. "
                          "A tool needs type hints on every argument and a Google-style docstring with an `Args:` line "
                          "for each (transformers' get_json_schema reads them).") from None


def check(args, tokenizer=None) -> None:
    """Before any model loads: the tools and environment exist and can be described, the rollout is bounded, and
    (in a run, or given a tokenizer) the chat template renders and parses tool calls."""
    recipe = args.recipe
    if not used(recipe):
        return
    planned = args.env.planned
    cls = environment_class(recipe.environment, checked_only=planned)
    functions = tool_functions(recipe.tools, checked_only=planned)
    for function in functions:
        schema(function, "tool")
    if cls is not None:
        if not callable(getattr(cls, "reset", None)):
            raise ConfigError(f"environment {recipe.environment!r} has no `reset` method (trl calls it before each "
                              "rollout, with the row's columns).")
        methods = environment_tools(cls)
        if not methods and not functions:
            raise ConfigError(f"environment {recipe.environment!r} has no tool methods (public methods other than "
                              "reset and get_reward) and `tools` is empty: the model would have nothing to call.")
        for method in methods:
            schema(method, f"environment {recipe.environment!r}: method")
        owns_reward = callable(getattr(cls, "get_reward", None)) or recipe.environment in ENVIRONMENTS
        if not owns_reward and not recipe.reward_funcs:
            raise ConfigError(f"environment {recipe.environment!r} has no `get_reward` and `reward_funcs` is empty: "
                              "give the run a reward.")
    if not planned or tokenizer is not None:
        check_template(tokenizer or _tokenizer(args), recipe.chat_template)


def _tokenizer(args):
    from . import modeling

    return modeling.load_tokenizer(args.model, args.recipe.chat_template, args.training.trust_remote_code)


def check_template(tokenizer, chat_template: str | None) -> None:
    """The template renders a tool call and its result (trl's check), and trl knows how to parse its tool calls."""
    import copy

    from trl.chat_template_utils import add_response_schema, supports_tool_calling

    which = f"`chat_template: {chat_template}`" if chat_template else "the model's own chat template"
    fix = ("Templates trl parses tool calls of: Qwen2.5, Qwen3 (and 3.5+), Llama 3.1/3.2, GLM-4, gpt-oss, LFM2, Gemma "
           "4, DeepSeek-R1-Distill. For a model whose template has no tools, set `chat_template: trl:qwen3` (Qwen3's "
           "template as trl ships it; the model learns its tool-call format).")
    if not supports_tool_calling(tokenizer):
        raise ConfigError(f"{which} does not render tool calls and tool results, so the model cannot be shown its "
                          f"tools. {fix}")
    if getattr(tokenizer, "response_template", None) is None and getattr(tokenizer, "response_schema", None) is None:
        try:
            add_response_schema(copy.copy(tokenizer))
        except ValueError:
            raise ConfigError(f"{which} renders tools, but trl cannot parse the tool calls of its format (and the "
                              f"tokenizer brings no response template). {fix}") from None


def bound(args) -> None:
    """A rollout ends: trl's `max_tool_calling_iterations` unset (no limit) becomes 4 with tools, said in `plan`."""
    if used(args.recipe) and args.training.max_tool_calling_iterations is None:
        args.training.max_tool_calling_iterations = 4
        args.sources["max_tool_calling_iterations"] = "4: a rollout with tools needs a bound"


# ---------------------------------------------------------------- the reward and the rollouts


def environment_reward(name: str):
    """The reward of a built-in environment, named after it (trl logs rewards/NAME/mean); it logs the tool counts."""

    def reward(completions, environments=None, log_metric=None, **kwargs):
        outcomes = [env._outcome(c) for env, c in zip(environments, completions)]
        if log_metric is not None and outcomes:
            for key, value in counts(outcomes).items():
                log_metric(f"tools/{key}", value)
        return [o["score"] for o in outcomes]

    reward.__name__ = name
    return reward


def owned_reward(name: str | None) -> list:
    """An environment of the user's that scores rollouts itself (`get_reward`), as a reward function (trl adds it to
    the rewards with weight 1 in training; the report scores held-out rollouts with it the same way)."""
    cls = environment_class(name) if name and name not in ENVIRONMENTS else None
    if cls is None or not callable(getattr(cls, "get_reward", None)):
        return []

    def reward(environments=None, **kwargs):
        return [env.get_reward() for env in environments]

    reward.__name__ = cls.__name__
    return [reward]


def counts(outcomes: list[dict]) -> dict:
    """Per rollout: tool calls tried, turns, the share answered right; and the share of tool calls that were malformed."""
    n = max(len(outcomes), 1)
    tried = sum(o["calls"] for o in outcomes)
    return {"calls_per_rollout": tried / n, "turns_per_rollout": sum(o["turns"] for o in outcomes) / n,
            "malformed_share": sum(o["malformed"] for o in outcomes) / max(tried, 1),
            "correct": sum(o["correct"] for o in outcomes) / n}


def rollouts(model, tokenizer, rows: list[dict], cls, tools: list, max_turns: int, max_new_tokens: int,
             template_kwargs: dict | None = None, batch_size: int = 16) -> list[dict]:
    """Greedy multi-turn rollouts of `rows` (prompt plus the environment's columns) outside the trainer, in batches:
    generate, run the parsed tool calls, append their results, until an answer without a tool call or `max_turns`
    calls."""
    from trl.chat_template_utils import add_response_schema

    if getattr(tokenizer, "response_template", None) is None and getattr(tokenizer, "response_schema", None) is None:
        add_response_schema(tokenizer)
    states = []
    for row in rows:
        env = cls() if cls is not None else None
        observation = env.reset(**row) if env is not None else None
        messages = [dict(m) for m in row["prompt"]]
        if observation:
            messages[-1]["content"] += observation
        available = {f.__name__: f for f in tools}
        if env is not None:
            available.update({m.__name__: getattr(env, m.__name__) for m in environment_tools(cls)})
        states.append({"messages": messages, "completion": [], "available": available, "environment": env})
    for turn in range(max_turns + 1):
        active = [state for state in states if not state.get("done")]
        for start in range(0, len(active), batch_size):
            chunk = active[start : start + batch_size]
            for state, (new, prompt) in zip(chunk, _generate(model, tokenizer, chunk, max_new_tokens,
                                                              template_kwargs or {})):
                _take_turn(state, tokenizer, new, prompt, last=turn == max_turns)
    results = []
    for state in states:
        env, completion = state["environment"], state["completion"]
        scored = env._outcome(completion) if env is not None else {}
        results.append({"messages": state["messages"] + completion, "completion": completion, "environment": env,
                        **scored})
    return results


def _generate(model, tokenizer, states: list[dict], max_new_tokens: int, template_kwargs: dict) -> list[tuple]:
    """One greedy turn for each rollout of a batch (left-padded): (the new token ids, the prompt's), padding left out."""
    import torch

    texts = [tokenizer.apply_chat_template(s["messages"] + s["completion"], tools=list(s["available"].values()),
                                           add_generation_prompt=True, tokenize=False, **template_kwargs)
             for s in states]
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    try:
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    finally:
        tokenizer.padding_side = side
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                             synced_gpus=False)  # the main process alone, even in a ZeRO-3 run
    prompts = [row[mask.bool()].tolist() for row, mask in zip(batch["input_ids"], batch["attention_mask"])]
    new = [[t for t in row.tolist() if t != tokenizer.pad_token_id] for row in out[:, batch["input_ids"].shape[1]:]]
    return list(zip(new, prompts))


def _take_turn(state: dict, tokenizer, new: list[int], prompt: list[int], last: bool) -> None:
    """The model's message from its new tokens, parsed as trl parses a rollout's turn (with the prompt as the
    parser's prefix: transformers' parser needs it; text that does not parse stays text); its tool calls run (an
    error goes back as the result, as trl does); the rollout ends on a message without calls, or on the last turn."""
    from trl.chat_template_utils import parse_response

    message = parse_response(tokenizer, new, prefix=prompt, tools=list(state["available"].values()))
    message = {"role": "assistant", **{k: v for k, v in message.items() if k != "role"}}
    state["completion"].append(message)
    calls = message.get("tool_calls") or []
    if not calls or last:
        state["done"] = True
        return
    for call in calls:
        function = call.get("function", call)
        name, arguments = function.get("name"), function.get("arguments") or {}
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except json.JSONDecodeError:
                arguments = {}
        try:
            result = str(state["available"][name](**arguments))
        except Exception as error:  # noqa: BLE001
            result = str({"error": str(error)})
        state["completion"].append({"role": "tool", "name": name, "content": result})


def render(messages: list[dict]) -> str:
    """A rollout as text for the report: one line per message, tool calls as name(arguments)."""
    lines = []
    for m in messages:
        text = str(m.get("content") or "").strip()
        for call in m.get("tool_calls") or []:
            function = call.get("function", call)
            text += f" [calls {function.get('name')}({json.dumps(function.get('arguments'))})]"
        lines.append(f"**{m['role']}**: {text.strip()}")
    return "<br>".join(lines)
