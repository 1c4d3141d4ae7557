"""Group relative policy optimization: sample several answers per prompt, learn from verifiable rewards.

Rewards are named in the config (`reward_funcs`, weighed by `reward_weights`) and read the data set's
columns; `builtin:arithmetic` and `builtin:countdown` are generated locally. On CPU trl generates with
transformers; on GPUs `use_vllm: true` with `vllm_mode: colocate` or `server` (see slurm/grpo_vllm.sbatch).

    accelerate launch --config_file accelerate_configs/cpu.yaml recipes/grpo.py \
        --config recipes/smollm2-135m/grpo_full.yaml [--any_field value ...]
"""

from trl import GRPOTrainer

from posttrain_dist import callbacks, config, data, modeling, outputs, rewards
from posttrain_dist.errors import report_user_errors


@report_user_errors
def main(argv=None):
    # 1. Parse and validate: batch / num_generations arithmetic and reward names are checked before anything loads.
    args = config.parse("grpo", argv)

    # 2. Data: prompts plus the columns the rewards read; prompts over `max_prompt_length` tokens are dropped and counted.
    reward_functions = rewards.build(args.recipe.reward_funcs, args.training)
    train, evaluation = data.load_for("grpo", args.recipe, seed=args.training.seed)
    rewards.check_columns(reward_functions, train.column_names, args.recipe.dataset_name or "the data")
    tokenizer = modeling.load_tokenizer(args.model, args.recipe.chat_template, args.training.trust_remote_code)
    train = data.drop_long_prompts(train, tokenizer, args.recipe.max_prompt_length, args.recipe.dataset_name or "train")

    # 3. Model.
    model = modeling.load_model(args.model, args.training, tokenizer)

    # 4. Trainer: trl samples `num_generations` answers per prompt and weighs each by its group-relative reward.
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=reward_functions,
        args=args.training,
        train_dataset=train,
        eval_dataset=evaluation,
        processing_class=tokenizer,
        peft_config=modeling.peft_config(args.model),
    )

    # 5. Train, 6. save, 7. report (held-out rewards before and after).
    callbacks.train(trainer, args)  # resumes from the newest complete checkpoint; on SIGUSR1 checkpoints, exits 75
    outputs.save(trainer, args, tokenizer)
    outputs.report(trainer, args)
    return trainer


if __name__ == "__main__":
    main()
