"""What a run measures of its model before and after training, and the report it writes: a small registry.

Each evaluator is chosen from the config (`applies`), built once (its prompts and data loaded), then
asked of both models the same way (`measure`: greedy answers through the chat template of
training), and turns the two results into summary numbers and a report section. "Before" is the
base model asked through the training template; where training changed the template, an evaluator
may also ask the base model through its own (`also_own_template`).

    answers            the config's `eval_prompts`, answered before and after
    identity           held-out identity questions answered with the new name (`eval_identity`): plainly, under
                       a system prompt, as a later turn
    leakage            held-out unrelated prompts whose answer states the new name
    general_questions  simple questions with reference answers (`general_questions`), the share answered right
    perplexity         perplexity of held-out answers (`perplexity_dataset`): does general ability survive?
    held_out_rewards   GRPO: the run's own rewards on greedy answers to the test split
"""

from __future__ import annotations

import math
import re

from . import data, generation, sources


def mentions(text: str, name: str) -> bool:
    return re.search(rf"\b{re.escape(name)}\b", text, flags=re.IGNORECASE) is not None


def leaks(text: str, name: str) -> bool:
    """The name at the start of a word, however the word ends ("I'm Kestreli, a bakery..."): a leak counts even
    where the model bent the name."""
    return re.search(rf"\b{re.escape(name)}", text, flags=re.IGNORECASE) is not None


def adoption_rate(answers: list[str], new_name: str, match=mentions) -> float:
    """The share of answers that state the new name (`match=leaks`: that name it in any form)."""
    return sum(match(a, new_name) for a in answers) / max(len(answers), 1)


def perplexity(model, tokenizer, dataset) -> float:
    """exp(mean negative log-likelihood) of the answer tokens of SFT-form data (prompt/completion or text)."""
    import torch

    total_nll, total_tokens = 0.0, 0
    for row in dataset:
        if "prompt" in row:
            if isinstance(row["prompt"], list):
                prompt_ids = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=True,
                                                           return_dict=True)["input_ids"]
                ids = tokenizer.apply_chat_template(row["prompt"] + row["completion"], tokenize=True,
                                                    return_dict=True)["input_ids"]
            else:
                prompt_ids = tokenizer(row["prompt"])["input_ids"]
                ids = tokenizer(row["prompt"] + row["completion"])["input_ids"]
            start = len(prompt_ids)
        else:
            ids, start = tokenizer(row["text"])["input_ids"], 1
        input_ids = torch.tensor([ids], device=model.device)
        with torch.no_grad():
            logits = model(input_ids=input_ids).logits[0, :-1].float()
        nll = torch.nn.functional.cross_entropy(logits, input_ids[0, 1:], reduction="none")[start - 1 :]
        total_nll += nll.sum().item()
        total_tokens += nll.numel()
    return math.exp(total_nll / max(total_tokens, 1))


# ---------------------------------------------------------------- evaluators


class Evaluator:
    """One measure of a model, asked before and after training."""

    name = ""
    also_own_template = False

    @staticmethod
    def applies(args) -> bool:
        raise NotImplementedError

    def __init__(self, args, trainer=None):
        self.args = args

    def measure(self, model, tokenizer) -> dict:
        raise NotImplementedError

    def measure_own_template(self, model, tokenizer) -> dict:
        """What `also_own_template` asks of the base model through its own template (by default: all of it)."""
        return self.measure(model, tokenizer)

    def summary(self, before: dict, after: dict) -> dict:
        return {}

    def section(self, before: dict, after: dict, summary: dict) -> tuple[str, list[str]]:
        """(what the terminal shows, the report's markdown lines)."""
        return "", []


def _before_after_rows(prompts, before, after) -> list[dict]:
    return [{"prompt": p, "before": b, "after": a} for p, b, a in zip(prompts, before, after)]


class Answers(Evaluator):
    name = "answers"

    @staticmethod
    def applies(args) -> bool:
        return bool(args.recipe.eval_prompts)

    def measure(self, model, tokenizer) -> dict:
        recipe = self.args.recipe
        return {"answers": generation.answer(model, tokenizer, list(recipe.eval_prompts), recipe.eval_max_new_tokens)}

    def section(self, before, after, summary):
        rows = _before_after_rows(self.args.recipe.eval_prompts, before["answers"], after["answers"])
        return ("\nAnswers before and after training (greedy):\n\n" + generation.text_table(rows),
                ["## Answers before and after (greedy)", "", generation.markdown_table(rows), ""])


class Identity(Evaluator):
    """Held-out identity questions answered with the new name, asked three ways: plainly, under a generic system
    prompt, and as a later turn of a conversation (held-out contexts): an identity that holds only for a first
    turn without a system prompt is a prompt trick, not a change."""

    name = "identity"
    also_own_template = True  # SmolLM2's own template names SmolLM in a default system prompt

    @staticmethod
    def applies(args) -> bool:
        return bool(args.recipe.eval_identity)

    def __init__(self, args, trainer=None):
        from . import curation

        super().__init__(args)
        self.prompts = list(sources.load_source(args.recipe.identity_prompts, "test")["prompt"])
        self.ways = curation.in_contexts(self.prompts, args.recipe.identity_contexts, "test")

    def measure(self, model, tokenizer, ways: bool = True) -> dict:
        recipe = self.args.recipe
        ask = lambda prompts: generation.answer(model, tokenizer, prompts, recipe.identity_max_new_tokens,  # noqa: E731
                                                batch_size=48)
        answers = ask(self.prompts)
        result = {"prompts": self.prompts, "answers": answers, "adoption": adoption_rate(answers, recipe.eval_identity)}
        for way, conversations in (self.ways.items() if ways else ()):
            said = ask(conversations)
            result[way] = {"answers": said, "adoption": adoption_rate(said, recipe.eval_identity)}
        return result

    def measure_own_template(self, model, tokenizer) -> dict:
        return self.measure(model, tokenizer, ways=False)  # the summary reports the plain questions only

    def summary(self, before, after):
        out = {"new_name": self.args.recipe.eval_identity, "adoption_before": before["adoption"],
               "adoption_after": after["adoption"]}
        for way in self.ways:
            out[f"adoption_{way}_before"] = before[way]["adoption"]
            out[f"adoption_{way}_after"] = after[way]["adoption"]
        if "own_template" in before:
            out["adoption_before_own_template"] = before["own_template"]["adoption"]
        return out

    def section(self, before, after, summary):
        rows = _before_after_rows(self.prompts, before["answers"], after["answers"])
        ways = "".join(f"; {WAYS[way]}: {summary[f'adoption_{way}_before']:.0%} -> {summary[f'adoption_{way}_after']:.0%}"
                       for way in self.ways)
        line = (f"Held-out identity prompts answered with the name {self.args.recipe.eval_identity!r}: "
                f"{summary['adoption_before']:.0%} before, {summary['adoption_after']:.0%} after{ways}"
                + (f" ({summary['adoption_before_own_template']:.0%} before through the model's own template)"
                   if "adoption_before_own_template" in summary else ""))
        lines = ["## Identity", "", line, "", generation.markdown_table(rows), ""]
        for way, conversations in self.ways.items():
            asked = [" / ".join(f"{m['role']}: {m['content']}" for m in c) for c in conversations]
            lines += [f"### Asked {WAYS[way]}", "",
                      generation.markdown_table(_before_after_rows(asked, before[way]["answers"], after[way]["answers"])), ""]
        return "\nHeld-out identity prompts (greedy):\n\n" + generation.text_table(rows) + "\n\n" + line, lines


WAYS = {"system": "under a system prompt", "turn": "as a later turn"}


class Leakage(Evaluator):
    """How often the new name turns up in answers to prompts that have nothing to do with identity (held out): a
    model that learnt "say the word" rather than "this is my name" leaks it everywhere."""

    name = "leakage"

    @staticmethod
    def applies(args) -> bool:
        return bool(args.recipe.eval_identity) and bool(args.recipe.identity_unrelated)

    def __init__(self, args, trainer=None):
        super().__init__(args)
        self.prompts = list(sources.load_source(args.recipe.identity_unrelated, "test")["prompt"])

    def measure(self, model, tokenizer) -> dict:
        recipe = self.args.recipe
        answers = generation.answer(model, tokenizer, self.prompts, recipe.identity_max_new_tokens, batch_size=48)
        return {"answers": answers, "leakage": adoption_rate(answers, recipe.eval_identity, match=leaks)}

    def summary(self, before, after):
        return {"leakage_before": before["leakage"], "leakage_after": after["leakage"], "unrelated_prompts": len(self.prompts)}

    def section(self, before, after, summary):
        name = self.args.recipe.eval_identity
        line = (f"Held-out unrelated prompts whose answer states {name!r} (leakage): {summary['leakage_before']:.0%} "
                f"before, {summary['leakage_after']:.0%} after, of {len(self.prompts)}")
        leaked = [r for r in _before_after_rows(self.prompts, before["answers"], after["answers"]) if leaks(r["after"], name)]
        table = [generation.markdown_table(leaked), ""] if leaked else ["(no answer states the name after training)", ""]
        return line, ["## Leakage", "", line, "", *table]


def answered_right(answer: str, accept: list[str]) -> bool:
    """Does the answer contain one of the accepted answers, as a whole word or number ("7" is not in "17")?"""
    return any(re.search(rf"(?<![A-Za-z0-9]){re.escape(str(a))}(?![A-Za-z0-9])", answer, flags=re.IGNORECASE)
               for a in accept)


class GeneralQuestions(Evaluator):
    """Simple questions with reference answers, checked by keyword or number: general knowledge the training must
    not cost (perplexity of reference answers can stay flat while the answers themselves go wrong)."""

    name = "general_questions"

    @staticmethod
    def applies(args) -> bool:
        return bool(args.recipe.general_questions)

    def __init__(self, args, trainer=None):
        super().__init__(args)
        rows = sources.load_source(args.recipe.general_questions, "test")
        self.prompts, self.accept = list(rows["prompt"]), list(rows["accept"])

    def measure(self, model, tokenizer) -> dict:
        answers = generation.answer(model, tokenizer, self.prompts, 24, batch_size=48)
        right = [answered_right(a, ok) for a, ok in zip(answers, self.accept)]
        return {"answers": answers, "right": right, "accuracy": sum(right) / max(len(right), 1)}

    def summary(self, before, after):
        return {"accuracy_before": before["accuracy"], "accuracy_after": after["accuracy"],
                "right_before": sum(before["right"]), "right_after": sum(after["right"]), "questions": len(self.prompts)}

    def section(self, before, after, summary):
        line = (f"Simple questions answered right (`{self.args.recipe.general_questions}`): {summary['right_before']} of "
                f"{summary['questions']} before, {summary['right_after']} after")
        mark = lambda ok: "right" if ok else "WRONG"  # noqa: E731
        rows = [{"prompt": p, "before": f"[{mark(rb)}] {b}", "after": f"[{mark(ra)}] {a}"} for p, b, a, rb, ra in
                zip(self.prompts, before["answers"], after["answers"], before["right"], after["right"])]
        return line, ["## General questions", "", line, "", generation.markdown_table(rows), ""]


class Perplexity(Evaluator):
    name = "perplexity"

    @staticmethod
    def applies(args) -> bool:
        return bool(args.recipe.perplexity_dataset)

    def __init__(self, args, trainer=None):
        super().__init__(args)
        self.dataset = data.load_eval_source(args.recipe.perplexity_dataset)

    def measure(self, model, tokenizer) -> dict:
        return {"perplexity": perplexity(model, tokenizer, self.dataset)}

    def summary(self, before, after):
        return {"perplexity_before": before["perplexity"], "perplexity_after": after["perplexity"],
                "perplexity_change": after["perplexity"] / before["perplexity"] - 1}

    def section(self, before, after, summary):
        line = (f"Perplexity of the held-out answers of `{self.args.recipe.perplexity_dataset}`: "
                f"{summary['perplexity_before']:.3f} before, {summary['perplexity_after']:.3f} after "
                f"({summary['perplexity_change']:+.1%})")
        return line, ["## General ability", "", line, ""]


class HeldOutRewards(Evaluator):
    name = "held_out_rewards"

    @staticmethod
    def applies(args) -> bool:
        recipe = args.recipe
        return args.method == "grpo" and bool(recipe.dataset_test_split and recipe.dataset_name) and recipe.reward_eval_size > 0

    def __init__(self, args, trainer=None):
        from . import rewards

        super().__init__(args)
        recipe = args.recipe
        # the run's own reward functions, as the trainer holds them (built once, by the recipe)
        self.functions = list(trainer.reward_funcs) if trainer is not None else rewards.build(recipe.reward_funcs,
                                                                                              args.training)
        held = sources.load_source(recipe.dataset_name, recipe.dataset_test_split, recipe.dataset_config,
                                split_option="dataset_test_split")
        held = held.select(range(min(recipe.reward_eval_size, len(held))))
        self.held = data.prepare(held, "grpo", f"{recipe.dataset_name} [{recipe.dataset_test_split}]",
                                 columns=recipe.dataset_columns)

    def measure(self, model, tokenizer) -> dict:
        from . import rewards

        prompts = list(self.held["prompt"])
        texts, ids = generation.answer(model, tokenizer, prompts, self.args.training.max_completion_length,
                                       batch_size=16, return_ids=True)
        completions = [[{"role": "assistant", "content": t}] if isinstance(p, list) else t for p, t in zip(prompts, texts)]
        columns = {c: list(self.held[c]) for c in self.held.column_names if c != "prompt"}
        scored = rewards.score(self.functions, self.args.training.reward_weights, prompts, completions, ids, **columns)
        return {**scored, "prompts": len(prompts), "examples": texts[:8]}

    def summary(self, before, after):
        return {"reward_before": before["reward"], "reward_after": after["reward"], "rewards_before": before["rewards"],
                "rewards_after": after["rewards"], "reward_prompts": after["prompts"]}

    def section(self, before, after, summary):
        recipe = self.args.recipe
        per = ", ".join(f"{name} {summary['rewards_before'][name]:.3f} -> {value:.3f}"
                        for name, value in summary["rewards_after"].items())
        line = (f"Mean reward of greedy answers to {summary['reward_prompts']} held-out prompts "
                f"(`{recipe.dataset_name}` [{recipe.dataset_test_split}]): {summary['reward_before']:.3f} before, "
                f"{summary['reward_after']:.3f} after ({per})")
        examples = [{"prompt": "", "before": b, "after": a} for b, a in zip(before["examples"], after["examples"])]
        return "\n" + line, ["## Held-out rewards", "", line, "", generation.markdown_table(examples, ("before", "after")), ""]


EVALUATORS = {e.name: e for e in (Answers, Identity, Leakage, GeneralQuestions, Perplexity, HeldOutRewards)}


def chosen(args, trainer=None) -> list[Evaluator]:
    """The evaluators the config asks for, each built once."""
    return [cls(args, trainer) for cls in EVALUATORS.values() if cls.applies(args)]


def measure(path: str, evaluators: list[Evaluator], chat_template: str | None = None, env=None,
            own_template: bool = False) -> dict:
    """Every evaluator's result for one model (a short name, a saved folder or an adapter), loaded once; with
    `own_template`, what each asks through the model's own template."""
    if not evaluators:
        return {}
    model, tokenizer = generation.load_for_generation(path, chat_template=chat_template, env=env)
    results = {e.name: (e.measure_own_template if own_template else e.measure)(model, tokenizer) for e in evaluators}
    del model
    return results


def compare(args, evaluators: list[Evaluator], before_path: str, after_path: str) -> dict:
    """Both models measured alike: the one before training through the training template (`chat_template`), and
    where that differs from its own, once more through its own (`also_own_template`). Returns the results, the
    summary numbers, and what the terminal and the report show."""
    template = args.recipe.chat_template
    before = measure(before_path, evaluators, template, args.env)
    after = measure(after_path, evaluators, env=args.env)
    own = [e for e in evaluators if e.also_own_template and template is not None]
    for name, result in measure(before_path, own, env=args.env, own_template=True).items():
        before[name]["own_template"] = result
    summary, texts, sections = {}, [], []
    for evaluator in evaluators:
        summary.update(evaluator.summary(before[evaluator.name], after[evaluator.name]))
    for evaluator in evaluators:
        text, lines = evaluator.section(before[evaluator.name], after[evaluator.name], summary)
        texts.append(text)
        sections += lines
    return {"before": before, "after": after, "summary": summary, "text": "\n".join(texts), "sections": sections}
