"""Direct preference optimization: prefer the chosen answer over the rejected one, against a frozen reference.

Data is prompt/chosen/rejected, from files or the hub, or (the course's identity example, with
`identity_new_name`) curated from the model's own answers. The reference is the base model with the
LoRA adapters disabled for LoRA/QLoRA, a frozen copy for full training, or precomputed
log-probabilities with `precompute_ref_log_probs: true`.

    accelerate launch --config_file accelerate_configs/cpu.yaml recipes/dpo.py \
        --config recipes/smollm2-135m/dpo_identity.yaml [--any_field value ...]
"""

from posttrain_dist import signals

signals.catch_preemption()  # first: a preemption signal (USR1, TERM) during the imports below checkpoints and stops

from trl import DPOTrainer  # noqa: E402

from posttrain_dist import checks, curation, data, environment, modeling, parsing, report, training  # noqa: E402
from posttrain_dist.errors import report_user_errors  # noqa: E402
from posttrain_dist.methods.dpo import METHOD  # noqa: E402  (DPO's config, layouts, curves, plan terms)


@report_user_errors
def main(argv=None):
    # 1. Parse, resolve and check: a mistake stops here, before anything is loaded or written.
    args = parsing.parse("dpo", argv, environment.probe())
    run = checks.resolve_and_check(args)  # the output folder: checked now, written when training starts

    # 2. Data: preference pairs, every row checked; or the model's own answers, corrected to the new identity. Prompts
    #    longer than `max_prompt_length` tokens are dropped and counted (trl's DPO no longer cuts them).
    tokenizer = modeling.load_tokenizer(args.model, args.recipe.chat_template, args.training.trust_remote_code)
    if args.recipe.identity_new_name:
        train, evaluation_data = curation.identity_pairs(args, run), None  # the run folder keeps the pairs
    else:
        train, evaluation_data = data.load_for(METHOD, args.recipe, seed=args.training.seed)
        train = data.drop_long_prompts(train, tokenizer, args.recipe.max_prompt_length, "the training pairs")

    # 3. Model, and the reference: a frozen copy only for full training without precomputed log-probs.
    load = lambda: modeling.load_model(args.model, args.training, tokenizer, args.env)  # noqa: E731
    needs_copy = not args.model.use_peft and not args.training.precompute_ref_log_probs

    # 4. Trainer: trl computes the DPO loss from policy and reference log-probabilities of each pair.
    trainer = DPOTrainer(
        model=load(),
        ref_model=load().requires_grad_(False) if needs_copy else None,
        args=args.training,
        train_dataset=train,
        eval_dataset=evaluation_data,
        processing_class=tokenizer,
        peft_config=modeling.peft_config(args.model),
    )

    # 5. Train, 6. save, 7. report (answers, identity adoption and perplexity before and after).
    training.train(trainer, run)  # resumes from the newest complete checkpoint; when preempted checkpoints, exits 75
    run.save(trainer, tokenizer)  # then frees the trainer's model and optimizer (and merges an adapter on the CPU)
    report.write(trainer, run)  # before/after evaluation, evaluation.json, report.md
    training.finish(trainer)  # every rank waits for the report, then the process group ends
    return trainer


if __name__ == "__main__":
    main()
