"""On-policy distillation: the student answers the prompts itself; a teacher scores every token of those answers.

Data is prompts (as GRPO reads them, no reward needed); `teacher_model_name_or_path` names the teacher, which
must share the student's tokenizer. The loss is the divergence of the student's next-token distribution from
the teacher's on the student's own samples (trl's DistillationTrainer; `beta` between forward and reverse KL).

    accelerate launch --config_file accelerate_configs/cpu.yaml recipes/distillation.py \
        --config recipes/smollm2-135m/distillation.yaml [--any_field value ...]
"""

from posttrain_dist import signals

signals.catch_preemption()  # first: a preemption signal (USR1, TERM) during the imports below checkpoints and stops

from trl import DistillationTrainer  # noqa: E402

from posttrain_dist import checks, data, environment, modeling, parsing, report, training  # noqa: E402
from posttrain_dist.errors import report_user_errors  # noqa: E402
from posttrain_dist.methods import distillation  # noqa: E402  (the teacher, loaded as the student is)
from posttrain_dist.methods.distillation import METHOD  # noqa: E402  (the config, layouts, curves, plan terms)


@report_user_errors
def main(argv=None):
    # 1. Parse, resolve and check: the teacher exists and shares the student's vocabulary, before anything loads.
    args = parsing.parse("distillation", argv, environment.probe())
    run = checks.resolve_and_check(args)  # the output folder: checked now, written when training starts

    # 2. Data: prompts, every row checked.
    train, evaluation_data = data.load_for(METHOD, args.recipe, seed=args.training.seed)

    # 3. Tokenizer, student, and the teacher (frozen, loaded as the student is); 4. trainer: the student samples, the
    #    teacher scores every token of its answers.
    tokenizer = modeling.load_tokenizer(args.model, args.recipe.chat_template, args.training.trust_remote_code)
    trainer = DistillationTrainer(
        model=modeling.load_model(args.model, args.training, tokenizer, args.env),
        teacher_model=distillation.load_teacher(args, tokenizer),
        args=args.training,
        train_dataset=train,
        eval_dataset=evaluation_data,
        processing_class=tokenizer,
        peft_config=modeling.peft_config(args.model),
    )

    # 5. Train, 6. save, 7. report (answers before and after).
    training.train(trainer, run)  # resumes from the newest complete checkpoint; when preempted checkpoints, exits 75
    run.save(trainer, tokenizer)  # then frees the trainer's model and optimizer (and merges an adapter on the CPU)
    report.write(trainer, run)  # before/after evaluation, evaluation.json, report.md
    training.finish(trainer)  # every rank waits for the report, then the process group ends
    return trainer


if __name__ == "__main__":
    main()
