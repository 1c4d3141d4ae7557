"""Writes `builtin:quality-pairs` and `builtin:basics-prompts`, the data of the learned-reward example.

A stand-in for human judgments of answer quality, made from the questions and direct answers of
`builtin:sft-basics`: each pair prefers the direct, complete, on-topic answer (chosen) over a worse one
(rejected) of four kinds a rater marks down:

- padded: the same answer wrapped in filler ("Great question! ... I hope this helps!");
- cut off: the answer stopped mid-sentence (an answer longer than its token budget);
- off-topic: the answer to another question;
- evasive: no answer at all ("I'm not sure about that.").

Two pairs per question, of two different kinds (a seeded rotation). The splits follow sft-basics: its
held-out questions make the held-out pairs, so the reward model is measured on questions it never saw.
`basics-prompts` holds the same questions as prompts (one row each), for GRPO/RLOO against the reward model.

    python posttrain_dist/assets/make_quality_pairs.py

Deterministic: the same files every time.
"""

import json
import random
from pathlib import Path

HERE = Path(__file__).parent

OPENERS = [
    "That's a great question! Let me think about it carefully before I answer.",
    "Sure, I'd be happy to help you with that, there is a lot to say here.",
    "Great question! Many people wonder about this, so let me explain.",
    "Well, this is an interesting topic and it is worth taking a moment to consider it.",
    "Thanks for asking! Before answering, it is good to take a step back.",
]
CLOSERS = [
    "I hope this helps! Let me know if you have any other questions.",
    "Feel free to ask if you want to know more about this topic!",
    "I hope that answers your question, and have a wonderful day!",
    "Let me know if there is anything else I can help you with today.",
]
EVASIONS = [
    "I'm not sure about that. You could look it up.",
    "That is hard to say; it depends on many things.",
    "I don't know. Maybe ask someone else.",
    "There are many opinions on this, so I'd rather not say.",
    "Hmm, I can't really answer that right now.",
]
KINDS = ("padded", "cut off", "off-topic", "evasive")


def read(name: str) -> list[tuple[str, str]]:
    rows = [json.loads(line) for line in (HERE / name).read_text().splitlines() if line.strip()]
    return [(r["messages"][0]["content"], r["messages"][1]["content"]) for r in rows]


def worse(kind: str, answer: str, others: list[str], rng: random.Random) -> str:
    if kind == "padded":
        return f"{rng.choice(OPENERS)} {answer} {rng.choice(CLOSERS)}"
    if kind == "cut off":
        words = answer.split()
        cut = max(2, len(words) // 2) if len(words) > 3 else max(1, len(words) - 1)
        return " ".join(words[:cut]).rstrip(".,;:!?")
    if kind == "off-topic":
        return rng.choice([o for o in others if o != answer])
    return rng.choice(EVASIONS)


def pairs(questions: list[tuple[str, str]], rng: random.Random) -> list[dict]:
    answers = [a for _, a in questions]
    rows = []
    for i, (question, answer) in enumerate(questions):
        for kind in (KINDS[i % 4], KINDS[(i + 1 + rng.randint(0, 2)) % 4]):
            rows.append({"prompt": [{"role": "user", "content": question}],
                         "chosen": [{"role": "assistant", "content": answer}],
                         "rejected": [{"role": "assistant", "content": worse(kind, answer, answers, rng)}],
                         "kind": kind})
    return rows


def write(name: str, rows: list[dict]) -> None:
    with open(HERE / name, "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    print(f"{name}: {len(rows)} rows")


def main() -> None:
    for split, source in (("train", "sft_basics_train.jsonl"), ("heldout", "sft_basics_heldout.jsonl")):
        questions = read(source)
        write(f"quality_pairs_{split}.jsonl", pairs(questions, random.Random(7 if split == "train" else 8)))
        write(f"basics_prompts_{split}.jsonl", [{"prompt": q} for q, _ in questions])


if __name__ == "__main__":
    main()
