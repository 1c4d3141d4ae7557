"""What a run measures of its model before and after training, and the report it writes: a small registry.

Each evaluator is chosen from the config (`applies`), built once (its prompts and data loaded), then
asked of both models the same way (`measure`: greedy answers through the chat template of
training), and turns the two results into summary numbers and a report section. "Before" is the
base model asked through the training template; where training changed the template, an evaluator
may also ask the base model through its own (`also_own_template`).

    answers            the config's `eval_prompts`, answered before and after
    general_questions  simple questions with reference answers (`general_questions`), the share answered right
    perplexity         perplexity of held-out answers (`perplexity_dataset`): does general ability survive?
    benchmarks         lm-evaluation-harness tasks (`eval_tasks`): the standard benchmarks, or task files of yours

and each method's own (`methods.Method.evaluators`): the identity change and its leakage (`identity`, for SFT
and DPO), GRPO's held-out rewards, a reward model's held-out preference accuracy.
"""

from __future__ import annotations

import math
import re

from . import data, generation, harness, sources


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
    model_kind = "causal-lm"  # what it asks: a model that answers, or ("sequence-classifier") one that scores

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


class Benchmarks(Evaluator):
    """lm-evaluation-harness tasks (`eval_tasks`), run the same on both models (`harness`)."""

    name = "benchmarks"

    @staticmethod
    def applies(args) -> bool:
        return bool(getattr(args.recipe, "eval_tasks", None))

    def measure(self, model, tokenizer) -> dict:
        recipe = self.args.recipe
        return harness.run(model, tokenizer, list(recipe.eval_tasks), recipe.eval_tasks_limit)

    def summary(self, before, after):
        return {"benchmarks": [{"task": task, "metric": metric, "before": scores[metric],
                                "after": after.get(task, {}).get(metric), "rows": scores["rows"]}
                               for task, scores in before.items() for metric in harness.metrics(scores)]}

    def section(self, before, after, summary):
        rows = [{"task": r["task"], "metric": r["metric"], "before": f"{r['before']:.4f}",
                 "after": f"{r['after']:.4f}" if r["after"] is not None else "?", "rows": str(r["rows"])}
                for r in summary["benchmarks"]]
        columns = ("task", "metric", "before", "after", "rows")
        return ("\nlm-eval tasks before and after training:\n\n" + generation.text_table(rows, columns),
                ["## lm-eval tasks before and after", "", generation.markdown_table(rows, columns), ""])


# The measures every method may ask for; a method adds its own (`methods.Method.evaluators`: identity, held-out
# rewards, preference accuracy), which come after the answers.
EVALUATORS = {e.name: e for e in (Answers, GeneralQuestions, Perplexity, Benchmarks)}


class NothingToMeasure(Exception):
    """An evaluator the config asks for finds nothing to measure (no held-out data): it is left out, saying why."""


def chosen(args, trainer=None, own: tuple = (), shared: bool = True) -> list[Evaluator]:
    """The evaluators the config asks for, each built once: the answers, the method's `own`, then the rest (`shared`:
    the ones that ask a model questions)."""
    order = [Answers, *own, GeneralQuestions, Perplexity, Benchmarks] if shared else list(own)
    built = []
    for cls in order:
        if cls.applies(args):
            try:
                built.append(cls(args, trainer))
            except NothingToMeasure as why:
                print(f"evaluation: {cls.name} left out: {why}", flush=True)
    return built


def measure(path: str, evaluators: list[Evaluator], chat_template: str | None = None, env=None,
            own_template: bool = False) -> dict:
    """Every evaluator's result for one model (a short name, a saved folder or an adapter), loaded once; with
    `own_template`, what each asks through the model's own template."""
    results = {}
    for kind in dict.fromkeys(e.model_kind for e in evaluators):  # each kind of model loaded once
        model, tokenizer = generation.load_for_generation(path, chat_template=chat_template, env=env, kind=kind)
        for e in evaluators:
            if e.model_kind == kind:
                results[e.name] = (e.measure_own_template if own_template else e.measure)(model, tokenizer)
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
