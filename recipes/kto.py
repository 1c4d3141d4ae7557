"""KTO: learn from answers marked desirable or undesirable, against a frozen reference.

Data is unpaired feedback (prompt, completion, label true/false), or preference pairs (each becomes a
desirable and an undesirable row). The reference is the base model with the LoRA adapters disabled for
LoRA/QLoRA, a frozen copy for full training, or precomputed log-probabilities (`precompute_ref_log_probs`).

    accelerate launch --config_file accelerate_configs/cpu.yaml recipes/kto.py \
        --config recipes/smollm2-135m/kto.yaml [--any_field value ...]
"""

from posttrain_dist import signals

signals.catch_preemption()  # first: a preemption signal (USR1, TERM) during the imports below checkpoints and stops

from trl import KTOTrainer  # noqa: E402

from posttrain_dist import checks, data, environment, modeling, parsing, report, training  # noqa: E402
from posttrain_dist.errors import report_user_errors  # noqa: E402
from posttrain_dist.methods.kto import METHOD  # noqa: E402  (KTO's config, layouts, curves, plan terms)


@report_user_errors
def main(argv=None):
    # 1. Parse, resolve and check: a mistake stops here, before anything is loaded or written.
    args = parsing.parse("kto", argv, environment.probe())
    run = checks.resolve_and_check(args)  # the output folder: checked now, written when training starts

    # 2. Data: marked answers (pairs unpaired), every row checked; both kinds must be there.
    train, evaluation_data = data.load_for(METHOD, args.recipe, seed=args.training.seed)

    # 3. Tokenizer, model, and the reference: a frozen copy only for full training without precomputed log-probs.
    tokenizer = modeling.load_tokenizer(args.model, args.recipe.chat_template, args.training.trust_remote_code)
    load = lambda: modeling.load_model(args.model, args.training, tokenizer, args.env)  # noqa: E731

    # 4. Trainer: trl weighs each answer's log-ratio to the reference against the batch's KL baseline.
    trainer = KTOTrainer(
        model=load(),
        ref_model=load().requires_grad_(False) if METHOD.reference(args) else None,
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
