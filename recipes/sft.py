"""Supervised fine-tuning: teach a model to imitate prompt/response pairs.

The loss falls on the response tokens only: a conversation is trained in one pass, every assistant turn in
the loss and no prompt token (posttrain_dist/sequences.py). Full, LoRA and QLoRA training are choices of
the config:

    accelerate launch --config_file accelerate_configs/cpu.yaml recipes/sft.py \
        --config recipes/smollm2-135m/sft_full.yaml [--any_field value ...]

`python recipes/sft.py ...` runs the same thing in one process.
"""

from posttrain_dist import signals

signals.catch_preemption()  # first: a preemption signal (USR1, TERM) during the imports below checkpoints and stops

from trl import SFTTrainer  # noqa: E402

from posttrain_dist import checks, data, environment, modeling, parsing, report, sequences, training  # noqa: E402
from posttrain_dist.errors import report_user_errors  # noqa: E402
from posttrain_dist.methods.sft import METHOD  # noqa: E402  (SFT's config, layouts, curves, plan terms)


@report_user_errors
def main(argv=None):
    # 1. Parse, resolve and check: a mistake stops here, before anything is loaded or written.
    args = parsing.parse("sft", argv, environment.probe())
    run = checks.resolve_and_check(args)  # the output folder: checked now, written when training starts

    # 2. Data: layout recognised, every row checked; conversations kept whole, the chat template's per-row arguments too.
    train, evaluation_data = data.load_for(METHOD, args.recipe, seed=args.training.seed)

    # 3. Tokenizer (chat template, pad token); the data tokenized once, every assistant turn and no prompt token in the
    #    loss, cached in the output folder for every rank and the next attempt.
    tokenizer = modeling.load_tokenizer(args.model, args.recipe.chat_template, args.training.trust_remote_code)
    prepared = sequences.prepare({"train": train, "eval": evaluation_data}, tokenizer, args, run.path)

    # 4. Model (generation stops at the end-of-turn token) and trainer; LoRA wraps the model when configured.
    trainer = SFTTrainer(
        model=modeling.load_model(args.model, args.training, tokenizer, args.env),
        args=sequences.trainer_args(args.training),
        train_dataset=prepared["train"],
        eval_dataset=prepared["eval"],
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
