"""Group relative policy optimization: sample several answers per prompt, learn from verifiable rewards or a reward model.

Rewards are named in the config (`reward_funcs`, weighed by `reward_weights`) and read the data set's
columns; `builtin:arithmetic` and `builtin:countdown` are generated locally. On CPU trl generates with
transformers; on GPUs `use_vllm: true` with `vllm_mode: colocate` or `server` (see slurm/grpo_vllm.sbatch).

    accelerate launch --config_file accelerate_configs/cpu.yaml recipes/grpo.py \
        --config recipes/smollm2-135m/grpo_full.yaml [--any_field value ...]
"""

from posttrain_dist import signals

signals.catch_preemption()  # first: a preemption signal (USR1, TERM) during the imports below checkpoints and stops

from trl import GRPOTrainer  # noqa: E402

from posttrain_dist import checks, environment, modeling, parsing, report, training  # noqa: E402
from posttrain_dist.errors import report_user_errors  # noqa: E402
from posttrain_dist.methods import online  # noqa: E402  (online RL: rewards, prompts, held-out rewards)
from posttrain_dist.methods.grpo import METHOD  # noqa: E402  (GRPO's config, layouts, curves, plan terms)


@report_user_errors
def main(argv=None):
    # 1. Parse, resolve and check: batch / num_generations arithmetic and reward names are checked before anything loads.
    args = parsing.parse("grpo", argv, environment.probe())
    run = checks.resolve_and_check(args)  # the output folder: checked now, written when training starts

    # 2. Data: prompts plus the columns the rewards read (gold answers parsed); prompts over `max_prompt_length` tokens
    #    dropped and counted.
    tokenizer = modeling.load_tokenizer(args.model, args.recipe.chat_template, args.training.trust_remote_code)
    train, evaluation_data, reward_functions = online.load(args, tokenizer, method=METHOD)

    # 3. Model, and 4. trainer: trl samples `num_generations` answers per prompt and weighs each by its group-relative reward.
    #    A reward model in `reward_funcs` (`model:PATH`) loads here too, with its own tokenizer and chat template.
    reward_models, reward_tokenizers = online.trl_rewards(reward_functions, args)
    trainer = GRPOTrainer(
        model=modeling.load_model(args.model, args.training, tokenizer, args.env),
        reward_funcs=reward_models,
        reward_processing_classes=reward_tokenizers,
        args=args.training,
        train_dataset=train,
        eval_dataset=evaluation_data,
        processing_class=tokenizer,
        peft_config=modeling.peft_config(args.model),
        **online.tool_use(args),  # with `tools` / `environment`: multi-turn rollouts, tool results masked from the loss
    )

    # 5. Train, 6. save, 7. report (held-out rewards before and after, with the trainer's reward functions).
    training.train(trainer, run)  # resumes from the newest complete checkpoint; when preempted checkpoints, exits 75
    run.save(trainer, tokenizer)  # then frees the trainer's model and optimizer (and merges an adapter on the CPU)
    report.write(trainer, run)  # before/after evaluation, evaluation.json, report.md
    training.finish(trainer)  # every rank waits for the report, then the process group ends
    return trainer


if __name__ == "__main__":
    main()
