"""Supervised fine-tuning: teach a model to imitate prompt/response pairs.

The loss falls on the response tokens only (conversations are split into one prompt/completion
example per assistant turn). Full, LoRA and QLoRA training are choices of the config:

    accelerate launch --config_file accelerate_configs/cpu.yaml recipes/sft.py \
        --config recipes/smollm2-135m/sft_full.yaml [--any_field value ...]

`python recipes/sft.py ...` runs the same thing in one process.
"""

from posttrain_dist import signals

signals.catch_preemption()  # first: a preemption signal (USR1, TERM) during the imports below checkpoints and stops

from trl import SFTTrainer  # noqa: E402

from posttrain_dist import checks, data, environment, modeling, parsing, report, training  # noqa: E402
from posttrain_dist.errors import report_user_errors  # noqa: E402


@report_user_errors
def main(argv=None):
    # 1. Parse, resolve and check: a mistake stops here, before anything is loaded or written.
    args = parsing.parse("sft", argv, environment.probe())
    run = checks.resolve_and_check(args)  # the output folder: checked now, written when training starts

    # 2. Data: layout recognised, every row checked; conversations become prompt/completion turns.
    train, evaluation_data = data.load_for(
        "sft", args.recipe, seed=args.training.seed, keep_conversations=args.training.assistant_only_loss
    )

    # 3. Tokenizer (chat template, pad token) and model (generation stops at the end-of-turn token), handed to the trainer.
    tokenizer = modeling.load_tokenizer(args.model, args.recipe.chat_template, args.training.trust_remote_code)

    # 4. Trainer: trl masks the prompt tokens of prompt/completion data; LoRA wraps the model when configured.
    trainer = SFTTrainer(
        model=modeling.load_model(args.model, args.training, tokenizer, args.env),
        args=args.training,
        train_dataset=train,
        eval_dataset=evaluation_data,
        processing_class=tokenizer,
        peft_config=modeling.peft_config(args.model),
    )

    # 5. Train, 6. save, 7. report.
    training.train(trainer, run)  # resumes from the newest complete checkpoint; when preempted checkpoints, exits 75
    run.save(trainer, tokenizer)  # then frees the trainer's model and optimizer (and merges an adapter on the CPU)
    report.write(trainer, run)  # before/after evaluation, evaluation.json, report.md
    training.finish(trainer)  # every rank waits for the report, then the process group ends
    return trainer


if __name__ == "__main__":
    main()
