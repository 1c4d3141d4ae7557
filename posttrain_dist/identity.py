"""The identity a model states, changed by training (the course's DPO example; context distillation by SFT).

`IdentityArgs` are the fields of a run that measures it (SFT and DPO recipes take them); `check` makes
sure the prompt sets they name exist before anything loads; `Identity` and `Leakage` are the evaluators:
held-out identity questions answered with the new name, asked three ways (plainly, under a system
prompt, as a later turn), and unrelated prompts whose answer states it.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import generation, sources
from .config import _field, _unset
from .evaluation import Evaluator, _before_after_rows, adoption_rate, leaks


@dataclass
class IdentityArgs:
    """What a run that changes the stated identity measures (mixed into SFT's and DPO's recipe arguments)."""

    eval_identity: str | None = _field(
        None,
        "The name the trained model should state (an SFT or DPO identity change): held-out identity "
        "questions answered with it (plainly, under a system prompt, as a later turn) and unrelated answers "
        "it leaks into, before and after. DPO's `identity_new_name` sets it.",
    )
    identity_prompts: str = _field("builtin:identity",
                                   "Identity questions: the `train` split is curated, the `test` split is held out.")
    identity_contexts: str | None = _field(
        "builtin:identity-contexts",
        "System prompts ({system}) and earlier exchanges ({user, assistant}) the identity questions are "
        "also asked after: the `train` split in curation, the `test` split in evaluation. None: plain questions only.",
    )
    identity_unrelated: str | None = _field(
        "builtin:unrelated",
        "Prompts unrelated to identity: the `train` split makes contrast pairs (the model's own answer "
        "chosen over it with a self-introduction under the new name), the `test` split measures how often the new "
        "name leaks into unrelated answers. None: neither.",
    )
    identity_max_new_tokens: int = _field(48, "Token budget of each identity answer (curated or evaluated).")

    def __post_init__(self):
        _unset(self, "eval_identity", "identity_contexts", "identity_unrelated")
        super().__post_init__()


def check(args) -> None:
    """The prompt sets an identity evaluation reads exist (or are well-formed hub names); nothing is read."""
    recipe = args.recipe
    if recipe.eval_identity:
        for name in ("identity_prompts", "identity_contexts", "identity_unrelated"):
            if getattr(recipe, name):
                sources.check_source(getattr(recipe, name), name)


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




EVALUATORS = (Identity, Leakage)
