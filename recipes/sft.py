"""Supervised fine-tuning: teach a model to imitate prompt/response pairs.

The loss falls on the response tokens only (conversations are split into one prompt/completion
example per assistant turn). Full, LoRA and QLoRA training are choices of the config:

    accelerate launch --config_file accelerate_configs/cpu.yaml recipes/sft.py \
        --config recipes/smollm2-135m/sft_full.yaml [--any_field value ...]

`python recipes/sft.py ...` runs the same thing in one process.
"""

from trl import SFTTrainer

from posttrain_dist import callbacks, config, data, modeling, outputs
from posttrain_dist.errors import report_user_errors


@report_user_errors
def main(argv=None):
    # 1. Parse and validate: a mistake stops here, before anything is loaded or written.
    args = config.parse("sft", argv)

    # 2. Data: format checked (columns found vs expected); conversations become prompt/completion turns.
    train, evaluation = data.load_for(
        "sft", args.recipe, seed=args.training.seed, keep_conversations=args.training.assistant_only_loss
    )

    # 3. Model and tokenizer: chat template, pad token, generation stops at the end-of-turn token.
    tokenizer = modeling.load_tokenizer(args.model, args.recipe.chat_template, args.training.trust_remote_code)
    model = modeling.load_model(args.model, args.training, tokenizer)

    # 4. Trainer: trl masks the prompt tokens of prompt/completion data; LoRA wraps the model when configured.
    trainer = SFTTrainer(
        model=model,
        args=args.training,
        train_dataset=train,
        eval_dataset=evaluation,
        processing_class=tokenizer,
        peft_config=modeling.peft_config(args.model),
    )

    # 5. Train, 6. save, 7. report.
    callbacks.train(trainer, args)  # resumes from the newest complete checkpoint; on SIGUSR1 checkpoints, exits 75
    outputs.save(trainer, args, tokenizer)
    outputs.report(trainer, args)
    return trainer


if __name__ == "__main__":
    main()
