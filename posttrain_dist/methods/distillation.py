"""On-policy distillation: the student answers prompts itself, and a teacher scores every token of its answers.

trl's DistillationTrainer: the student samples completions (on-policy), the teacher's next-token
distribution over the same tokens is the target (`beta` between forward KL, 0, and reverse KL, 1, through
the generalized Jensen-Shannon divergence). Student and teacher must share a tokenizer: the teacher's
vocabulary is checked before anything loads. Data is prompts (the layouts GRPO reads); no reward is needed.
"""

from __future__ import annotations

from dataclasses import dataclass

import trl

from .. import formats
from ..config import RecipeArgs, RunDefaults
from ..errors import ConfigError
from .base import Method, count_rows
from .online import READS


@dataclass
class DistillationRecipeArgs(RecipeArgs):
    """posttrain-dist's fields."""


@dataclass
class DistillationArgs(RunDefaults, trl.DistillationConfig):
    """trl's DistillationConfig (all of it): `teacher_model_name_or_path` names the teacher (a short name, a folder or
    a hub id)."""

    def __post_init__(self):
        super().__post_init__()
        if not self.teacher_model_name_or_path:
            raise ConfigError("on-policy distillation needs a teacher: set `teacher_model_name_or_path` (a short name "
                              "such as smollm2-135m-instruct, a model folder or a hub id).")


def load_teacher(args, tokenizer):
    """The teacher, frozen, loaded as the student is (dtype, attention, under ZeRO-3 partitioned as it loads; trl
    prepares it), with trl's `teacher_model_init_kwargs` on top: trl takes them only for a teacher it loads itself."""
    from dataclasses import replace
    from types import SimpleNamespace

    from .. import modeling

    teacher = replace(args.model, model_name_or_path=args.training.teacher_model_name_or_path,
                      model_revision=args.training.teacher_model_revision or "main", use_peft=False,
                      load_in_4bit=False, load_in_8bit=False)
    loading = SimpleNamespace(trust_remote_code=args.training.trust_remote_code,
                              model_init_kwargs=args.training.teacher_model_init_kwargs)
    args.training.teacher_model_init_kwargs = None  # applied here; trl refuses them next to a loaded teacher
    return modeling.load_model(teacher, loading, tokenizer, args.env).requires_grad_(False)


PANELS = [
    ("loss", "divergence from the teacher, per token", [("loss", "train"), ("eval_loss", "eval")]),
    ("completion length", "tokens", [("completions/mean_length", "mean"), ("completions/min_length", "min"),
                                     ("completions/max_length", "max")]),
    ("entropy", "student's, per token", [("entropy", "entropy")]),
    ("learning rate", "lr", [("learning_rate", "lr")]),
]


def check(args) -> None:
    """The teacher exists, and speaks the student's vocabulary (read from the two configs; no weights load)."""
    from transformers import AutoConfig

    from .. import modeling

    teacher = args.training.teacher_model_name_or_path
    modeling.check_model_reference(teacher)
    try:
        vocabularies = {AutoConfig.from_pretrained(modeling.resolve_model(name), local_files_only=True).vocab_size
                        for name in (args.model.model_name_or_path, teacher)}
    except (OSError, ValueError):
        return  # a hub model not here: trl checks it when it loads
    if len(vocabularies) > 1:
        raise ConfigError(f"the teacher {teacher!r} and the student {args.model.model_name_or_path!r} have vocabularies "
                          f"of different sizes {sorted(vocabularies)}: the teacher scores the student's tokens, so both "
                          "must share one tokenizer.")


def plan_rows(args) -> tuple:
    return count_rows(args, READS, "prompts after the data checks")


def tokens(args) -> tuple[int, str]:
    rows = args.training.per_device_train_batch_size
    length = 512 + args.training.max_completion_length
    return rows * length, f"{rows} completions x (prompt + {args.training.max_completion_length} completion) tokens"


METHOD = Method(
    "distillation", "on-policy distillation: a teacher scores every token of the student's own answers",
    DistillationRecipeArgs, DistillationArgs, layouts=formats.PROMPT, panels=PANELS, unit="prompts",
    plan_rows=plan_rows, tokens=tokens, checks=(check,),
    frozen_models=lambda args: [("teacher model", args.training.teacher_model_name_or_path)])
