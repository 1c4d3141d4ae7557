"""Small local copies of the public data sets the peer configs (tests/peer_configs/) name, in their published layouts:
hub-style folders (data/{split}-00000-of-00001.parquet, or a dataset card naming its configurations), with the
columns each data set has. Written under the working directory as ./data/NAME, where the configs point."""

from __future__ import annotations

from pathlib import Path

import datasets
import yaml


def turn(role: str, text: str) -> dict:
    return {"role": role, "content": text}


def _conversation(i: int, turns: int = 2, reasoning: bool = False) -> list[dict]:
    messages = []
    for t in range(turns):
        a, b = i + t, 2 * i + t + 1
        answer = f"{a} plus {b} is {a + b}."
        if reasoning:
            answer = f"<think>\nI add {a} and {b}.\n</think>\n\n{answer}"
        messages += [turn("user", f"What is {a} plus {b}?"), turn("assistant", answer)]
    return messages


def write_splits(folder: Path, splits: dict[str, list[dict]]) -> None:
    """The layout the hub's own parquet export has: data/{split}-00000-of-00001.parquet."""
    (folder / "data").mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
        datasets.Dataset.from_list(rows).to_parquet(str(folder / "data" / f"{split}-00000-of-00001.parquet"))


def write_configs(folder: Path, configs: dict[str, dict[str, list[dict]]]) -> None:
    """A data set with named configurations, as the hub holds them: a dataset card listing each one's files."""
    card = {"configs": []}
    for name, splits in configs.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        files = []
        for split, rows in splits.items():
            datasets.Dataset.from_list(rows).to_parquet(str(folder / name / f"{split}-00000-of-00001.parquet"))
            files.append({"split": split, "path": f"{name}/{split}-*.parquet"})
        card["configs"].append({"config_name": name, "data_files": files})
    (folder / "README.md").write_text("---\n" + yaml.safe_dump(card, sort_keys=False) + "---\n")


def ultrachat_200k(root: Path, train: int = 700, test: int = 500) -> None:
    def rows(n, offset):
        return [{"prompt": f"What is {i} plus {2 * i + 1}?", "prompt_id": f"id{i}", "messages": _conversation(i)}
                for i in range(offset, offset + n)]
    write_splits(root / "ultrachat_200k", {"train_sft": rows(train, 0), "test_sft": rows(test, 10_000),
                                           "train_gen": rows(4, 20_000), "test_gen": rows(4, 30_000)})


def ultrafeedback_binarized(root: Path, train: int = 1100, test: int = 1000) -> None:
    def rows(n, offset):
        out = []
        for i in range(offset, offset + n):
            q = f"What is {i} plus {i + 2}?"
            chosen = [turn("user", q), turn("assistant", f"{i} plus {i + 2} is {2 * i + 2}.")]
            rejected = [turn("user", q), turn("assistant", f"It is {2 * i + 5}, probably.")]
            out.append({"prompt": q, "prompt_id": f"p{i}", "chosen": chosen, "rejected": rejected, "messages": chosen,
                        "score_chosen": 9.0, "score_rejected": 3.0})
        return out
    write_splits(root / "ultrafeedback_binarized", {"train_prefs": rows(train, 0), "test_prefs": rows(test, 10_000),
                                                    "train_gen": rows(4, 20_000), "test_gen": rows(4, 30_000)})


def imdb(root: Path) -> None:
    def rows(n, offset):
        return [{"text": f"Review {i}: the film was {'good' if i % 2 else 'dull'} and the ending {'moved' if i % 2 else 'bored'} me.",
                 "label": i % 2} for i in range(offset, offset + n)]
    write_splits(root / "imdb", {"train": rows(24, 0), "test": rows(24, 100), "unsupervised": rows(8, 200)})


def openr1_math_220k(root: Path) -> None:
    rows = [{"problem": f"What is {i} plus {i + 3}?", "solution": f"Adding, {i} + {i + 3} = {2 * i + 3}. The answer is "
                                                                 f"$\\boxed{{{2 * i + 3}}}$.",
             "answer": str(2 * i + 3), "problem_type": "Algebra", "question_type": "math-word-problem",
             "source": "local", "uuid": f"u{i}"} for i in range(32)]
    write_configs(root / "OpenR1-Math-220k", {"default": {"train": rows}})


SMOLTALK2_SFT = ["smoltalk_smollm3_everyday_conversations_no_think", "smoltalk_smollm3_systemchats_30k_no_think",
                 "tulu_3_sft_personas_instruction_following_no_think", "hermes_function_calling_v1_no_think",
                 "smoltalk_smollm3_smol_magpie_ultra_no_think", "smoltalk_multilingual_8languages_lang_5_no_think",
                 "table_gpt_no_think", "OpenHermes_2.5_no_think", "OpenThoughts3_1.2M_no_think_no_think",
                 "Mixture_of_Thoughts_science_no_think", "smoltalk_smollm3_explore_instruct_rewriting_no_think",
                 "smoltalk_smollm3_smol_rewrite_no_think", "smoltalk_smollm3_smol_summarize_no_think",
                 "LongAlign_64k_context_lang_annotated_lang_6_no_think", "multi_turn_reasoning_if_think",
                 "smoltalk_everyday_convs_reasoning_Qwen3_32B_think", "smoltalk_systemchats_Qwen3_32B_think",
                 "xlam_traces_no_think", "smolagents_toolcalling_traces_think", "s1k_1.1_think",
                 "LongAlign_64k_Qwen3_32B_yarn_131k_think", "aya_dataset_Qwen3_32B_think",
                 "smoltalk_multilingual8_Qwen3_32B_think", "OpenThoughts3_1.2M_think", "table_gpt_Qwen3_32B_think"]
SMOLTALK2_PREFERENCE = ["llama_3.1_tulu_3_8b_preference_mixture_no_think", "tulu_3_8b_pref_mix_Qwen3_32B_Qwen3_0.6B_think"]


def smoltalk2(root: Path, rows_per_split: int = 4) -> None:
    """SmolLM3's data: `*_think` splits reason (`enable_thinking: true`), `*_no_think` ones do not."""
    sft = {}
    for s, split in enumerate(SMOLTALK2_SFT):
        think = split.endswith("_think") and not split.endswith("no_think")
        sft[split] = [{"messages": _conversation(100 * s + i, turns=1, reasoning=think),
                       "chat_template_kwargs": {"enable_thinking": think}} for i in range(rows_per_split)]
    preference = {}
    for s, split in enumerate(SMOLTALK2_PREFERENCE):
        think = not split.endswith("no_think") and split.endswith("_think")
        preference[split] = [{"prompt": f"What is {i} plus {s}?",
                              "chosen": [turn("user", f"What is {i} plus {s}?"), turn("assistant", f"It is {i + s}.")],
                              "rejected": [turn("user", f"What is {i} plus {s}?"), turn("assistant", "No idea.")],
                              "chat_template_kwargs": {"enable_thinking": think}} for i in range(8)]
    write_configs(root / "smoltalk2", {"SFT": sft, "Preference": preference})


def codeforces_cots(root: Path) -> None:
    rows = [{"id": f"cf{i}", "prompt": f"Print {i}.", "generation": f"print({i})",
             "messages": [turn("user", f"Write a program that prints {i}."),
                          turn("assistant", f"```python\nprint({i})\n```")]} for i in range(12)]
    write_configs(root / "codeforces-cots", {"solutions_decontaminated": {"train": rows}})


def mixture_of_thoughts(root: Path) -> None:
    rows = [{"messages": _conversation(i, turns=1, reasoning=True), "num_tokens": 40, "source": "math"}
            for i in range(12)]
    write_configs(root / "Mixture-of-Thoughts", {"all": {"train": rows}})


# which data each peer config reads
FOR_CONFIG = {
    "handbook_zephyr_sft_full.yaml": [ultrachat_200k], "handbook_zephyr_sft_qlora.yaml": [ultrachat_200k],
    "handbook_zephyr_dpo_full.yaml": [ultrafeedback_binarized], "handbook_zephyr_dpo_qlora.yaml": [ultrafeedback_binarized],
    "handbook_smollm3_sft.yaml": [smoltalk2], "handbook_smollm3_apo.yaml": [smoltalk2],
    "openr1_distill_sft.yaml": [mixture_of_thoughts], "openr1_olympiccoder_sft.yaml": [codeforces_cots],
    "openr1_grpo_demo.yaml": [openr1_math_220k], "trl_cli_example.yaml": [imdb],
}


def write_for(config_name: str, root: Path = Path("data")) -> None:
    for make in FOR_CONFIG[config_name]:
        make(root)
