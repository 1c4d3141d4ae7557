"""Reward modelling: train a model to score the chosen answer of each preference pair above the rejected one.

Data is what DPO reads (prompt/chosen/rejected, ultrafeedback's conversations, hh-rlhf's strings); the model is
the base language model with one scoring head (trl's RewardTrainer, Bradley-Terry loss). The report gives the
held-out preference accuracy before and after. GRPO and RLOO use the output as a reward
(`reward_funcs: [model:OUTPUT_DIR]`):

    accelerate launch --config_file accelerate_configs/cpu.yaml recipes/reward.py \
        --config recipes/smollm2-135m/reward.yaml [--any_field value ...]
"""

from posttrain_dist import signals

signals.catch_preemption()  # first: a preemption signal (USR1, TERM) during the imports below checkpoints and stops

from trl import RewardTrainer  # noqa: E402

from posttrain_dist import checks, data, environment, modeling, parsing, report, training  # noqa: E402
from posttrain_dist.errors import report_user_errors  # noqa: E402
from posttrain_dist.methods.reward import METHOD  # noqa: E402  (the config, layouts, curves, plan terms, evaluation)


@report_user_errors
def main(argv=None):
    # 1. Parse, resolve and check: a mistake stops here, before anything is loaded or written.
    args = parsing.parse("reward", argv, environment.probe())
    run = checks.resolve_and_check(args)  # the output folder: checked now, written when training starts

    # 2. Data: preference pairs, every row checked, chosen == rejected dropped.
    train, evaluation_data = data.load_for(METHOD, args.recipe, seed=args.training.seed)

    # 3. Tokenizer and model: the language model with one scoring head (its pad token set: it scores the last token).
    tokenizer = modeling.load_tokenizer(args.model, args.recipe.chat_template, args.training.trust_remote_code)
    model = modeling.load_model(args.model, args.training, tokenizer, args.env, kind=METHOD.model_kind)

    # 4. Trainer: trl tokenizes each answer with its prompt through the chat template and scores both.
    trainer = RewardTrainer(
        model=model,
        args=args.training,
        train_dataset=train,
        eval_dataset=evaluation_data,
        processing_class=tokenizer,
        peft_config=modeling.peft_config(args.model),
    )

    # 5. Train, 6. save, 7. report (held-out preference accuracy before and after).
    training.train(trainer, run)  # resumes from the newest complete checkpoint; when preempted checkpoints, exits 75
    run.save(trainer, tokenizer)  # then frees the trainer's model and optimizer (and merges an adapter on the CPU)
    report.write(trainer, run)  # before/after evaluation, evaluation.json, report.md
    training.finish(trainer)  # every rank waits for the report, then the process group ends
    return trainer


if __name__ == "__main__":
    main()
