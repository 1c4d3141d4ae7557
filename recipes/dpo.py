"""Direct preference optimization: prefer the chosen answer over the rejected one, against a frozen reference.

Data is prompt/chosen/rejected, from files or the hub, or (the course's identity example, with
`identity_new_name`) curated from the model's own answers. The reference is the base model with the
LoRA adapters disabled for LoRA/QLoRA, a frozen copy for full training, or precomputed
log-probabilities with `precompute_ref_log_probs: true`.

    accelerate launch --config_file accelerate_configs/cpu.yaml recipes/dpo.py \
        --config recipes/smollm2-135m/dpo_identity.yaml [--any_field value ...]
"""

from trl import DPOTrainer

from posttrain_dist import callbacks, config, curation, data, modeling, outputs
from posttrain_dist.errors import report_user_errors


@report_user_errors
def main(argv=None):
    # 1. Parse and validate: a mistake stops here, before anything is loaded or written.
    args = config.parse("dpo", argv)

    # 2. Data: preference pairs, format checked; or the model's own answers, corrected to the new identity.
    if args.recipe.identity_new_name:
        train, evaluation = curation.identity_pairs(args), None
    else:
        train, evaluation = data.load_for("dpo", args.recipe, seed=args.training.seed)

    # 3. Model, tokenizer, and the reference: a frozen copy only for full training without precomputed log-probs.
    tokenizer = modeling.load_tokenizer(args.model, args.recipe.chat_template, args.training.trust_remote_code)
    model = modeling.load_model(args.model, args.training, tokenizer)
    needs_copy = not args.model.use_peft and not args.training.precompute_ref_log_probs
    ref_model = modeling.load_model(args.model, args.training, tokenizer).requires_grad_(False) if needs_copy else None

    # 4. Trainer: trl computes the DPO loss from policy and reference log-probabilities of each pair.
    trainer = DPOTrainer(
        model=model,
        ref_model=ref_model,
        args=args.training,
        train_dataset=train,
        eval_dataset=evaluation,
        processing_class=tokenizer,
        peft_config=modeling.peft_config(args.model),
    )

    # 5. Train, 6. save, 7. report (answers, identity adoption and perplexity before and after).
    callbacks.train(trainer, args)  # resumes from the newest complete checkpoint; on SIGUSR1 checkpoints, exits 75
    outputs.save(trainer, args, tokenizer)
    outputs.report(trainer, args)
    return trainer


if __name__ == "__main__":
    main()
