"""The data layouts the recipes read, and how each becomes what trl trains on: one table, `LAYOUTS`.

Users bring public data sets as they are, and each popular one has its own columns. A layout is
recognised by its columns (the first of its method's layouts whose columns are all present wins),
every row is checked, then the rows are converted to one form per method:

- sft: whole conversations (`messages`; the tokenization in `sequences` puts every assistant turn in
  the loss and no prompt token, through the chat template), or plain `text` (language modelling:
  every token trained);
- dpo: conversational prompt/chosen/rejected, the prompt holding every shared turn;
- grpo: a conversational prompt, every other column kept for the rewards.

Plain strings become user/assistant turns wherever they appear, so the chat template applies to
every layout the same way, whether a file is read alone or in a mixture.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from .errors import DataError

SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system",
                  "tool": "tool"}
ROLES = ("system", "user", "assistant", "tool")


# ---------------------------------------------------------------- what a value must be


def is_conversation(value, keys=("role", "content")) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(m, dict) and all(k in m for k in keys) for m in value)


def _text_problem(value, column: str) -> str | None:
    if isinstance(value, str) and value.strip():
        return None
    return f"`{column}` must be non-empty text; got {value!r:.120}"


def _conversation_problem(value, column: str, keys=("role", "content")) -> str | None:
    if not is_conversation(value, keys):
        return f"`{column}` must be a list of {{{', '.join(keys)}}} messages; got {value!r:.160}"
    role_key, content_key = keys
    for j, message in enumerate(value):
        role = message[role_key]
        known = SHAREGPT_ROLES if role_key == "from" else ROLES
        if role not in known:
            return f"`{column}` message {j} has the role {role!r}; roles are {', '.join(known)}"
        if not isinstance(message[content_key], str) and not (message[content_key] is None and message.get("tool_calls")):
            return f"`{column}` message {j} has no text ({content_key}: {message[content_key]!r:.80})"
    return None


def _text_or_conversation_problem(value, column: str) -> str | None:
    if isinstance(value, list):
        return _conversation_problem(value, column)
    return _text_problem(value, column)


# ---------------------------------------------------------------- conversions


def with_system(messages: list[dict], system: str) -> list[dict]:
    """`system` as the first message, unless the conversation opens with a system message of its own."""
    return messages if messages and messages[0]["role"] == "system" else [{"role": "system", "content": system},
                                                                            *messages]


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


# What a message may carry besides its role and text, kept where set: an assistant's tool calls (and reasoning),
# a tool result's tool name and call id. Everything else is dropped.
MESSAGE_EXTRAS = ("tool_calls", "name", "tool_call_id", "reasoning_content")


def _plain_messages(messages: list[dict]) -> list[dict]:
    return [{"role": m["role"], "content": m["content"] if m["content"] is not None else "",
             **{k: m[k] for k in MESSAGE_EXTRAS if m.get(k) is not None}} for m in messages]


def per_turn(conversations: list[list[dict]], carried: dict | None = None) -> dict:
    """One prompt/completion example per assistant turn: the prompt is the conversation before it (the `per_turn`
    way of training a conversation; `carried` columns are repeated for each of a row's examples)."""
    out = {"prompt": [], "completion": [], **{name: [] for name in carried or {}}}
    for row, messages in enumerate(conversations):
        for i in trained_turns(messages):
            out["prompt"].append(messages[:i])
            out["completion"].append([messages[i]])
            for name, values in (carried or {}).items():
                out[name].append(values[row])
    return out


def trained_turns(messages: list[dict]) -> list[int]:
    """The indices of the assistant turns a conversation trains: after a prompt, with text or tool calls."""
    return [i for i, m in enumerate(messages) if m["role"] == "assistant" and i > 0
            and (str(m["content"] or "").strip() or m.get("tool_calls"))]


def _whole(conversations: list[list[dict]]) -> dict:
    return {"messages": [_plain_messages(m) for m in conversations]}


def _sharegpt(conversations: list[list[dict]]) -> list[list[dict]]:
    return [[{"role": SHAREGPT_ROLES[m["from"]], "content": m["value"]} for m in c] for c in conversations]


def _alpaca_prompt(instruction: str, extra: str | None) -> str:
    """Alpaca's instruction, and its optional input below it (as Alpaca's own template places it)."""
    return instruction.strip() + (f"\n\n{extra.strip()}" if extra and extra.strip() else "")


def as_turn(value, make) -> list[dict]:
    return _plain_messages(value) if isinstance(value, list) else make(value)


_HH_MARKER = re.compile(r"(?:^|\n\n)(Human|Assistant): ?")


def hh_turns(text: str) -> list[dict] | None:
    """Anthropic hh-rlhf's "\\n\\nHuman: ... \\n\\nAssistant: ..." as turns; None without those markers."""
    parts = _HH_MARKER.split(text)
    if len(parts) < 3 or parts[0].strip():
        return None
    roles = {"Human": "user", "Assistant": "assistant"}
    return [{"role": roles[who], "content": said.strip()} for who, said in zip(parts[1::2], parts[2::2])]


def shared_prefix(chosen: list[dict], rejected: list[dict]) -> tuple[list[dict], list[dict], list[dict]]:
    """(prompt, chosen, rejected): the turns both answers share are the prompt (trl's `extract_prompt`)."""
    from trl import extract_prompt

    split = extract_prompt({"chosen": chosen, "rejected": rejected})
    return split["prompt"], split["chosen"], split["rejected"]


def _repeats_prompt(conversation) -> bool:
    return is_conversation(conversation) and conversation[0]["role"] != "assistant"


def _preference_row(prompt, chosen, rejected) -> tuple[list, list, list]:
    if _repeats_prompt(chosen) and _repeats_prompt(rejected):  # ultrafeedback: the answers repeat the user turn
        return shared_prefix(_plain_messages(chosen), _plain_messages(rejected))
    return as_turn(prompt, user), as_turn(chosen, assistant), as_turn(rejected, assistant)


def _implicit_row(chosen, rejected) -> tuple[list, list, list]:
    if isinstance(chosen, str):
        chosen, rejected = hh_turns(chosen), hh_turns(rejected)
    return shared_prefix(_plain_messages(chosen), _plain_messages(rejected))


def _preference_problem(prompt, chosen, rejected) -> str | None:
    try:
        prompt, chosen, rejected = (_implicit_row(chosen, rejected) if prompt is None
                                    else _preference_row(prompt, chosen, rejected))
    except (KeyError, TypeError, IndexError):
        return "could not split it into a prompt and two answers"
    if not prompt:
        return "chosen and rejected share no prompt turn: the answers differ from the first turn on"
    if not chosen or not rejected or chosen[0]["role"] != "assistant" or rejected[0]["role"] != "assistant":
        return "after the shared prompt, chosen and rejected must each start with an assistant turn"
    return None


# ---------------------------------------------------------------- the table


@dataclass(frozen=True)
class Layout:
    """One data layout: how it is recognised, checked and converted. A method reads a list of them (its `layouts`)."""

    name: str
    columns: tuple[str, ...]  # all present: this layout (the first match among a method's layouts wins)
    example: str  # public data sets in this layout
    how: str  # what the conversion does, one line
    check: Callable[[dict], str | None]  # a row -> what is wrong with it, or None
    convert: Callable[[dict], dict]  # a batch {column: values} -> a batch in the method's form
    keeps_columns: bool = False  # every other column stays (what rewards read)


def _check_columns(*checks):
    def check(row):
        for column, problem in checks:
            found = problem(row.get(column), column)
            if found:
                return found
        return None

    return check


def _optional_text(value, column):
    return None if value is None or isinstance(value, str) else f"`{column}` must be text or empty; got {value!r:.80}"


# Conversations and their single-turn forms (what SFT reads).
CONVERSATION: list[Layout] = [
    Layout("messages", ("messages",), "HuggingFaceH4/ultrachat_200k, HuggingFaceTB/smoltalk",
           "the whole conversation, every assistant turn in the loss and no other token (`multi_turn`)",
           _check_columns(("messages", _conversation_problem)),
           lambda b: _whole(b["messages"])),
    Layout("sharegpt", ("conversations",), "ShareGPT exports ({from: human|gpt|system, value})",
           "roles renamed (human -> user, gpt -> assistant), then as `messages`",
           _check_columns(("conversations", lambda v, c: _conversation_problem(v, c, ("from", "value")))),
           lambda b: _whole(_sharegpt(b["conversations"]))),
    Layout("alpaca", ("instruction", "output"), "tatsu-lab/alpaca, yahma/alpaca-cleaned",
           "instruction (+ input below it) -> user turn, output -> assistant turn; preferred over a `text` column",
           _check_columns(("instruction", _text_problem), ("input", _optional_text), ("output", _text_problem)),
           lambda b: {"messages": [user(_alpaca_prompt(i, x)) + assistant(o) for i, x, o in
                                   zip(b["instruction"], b.get("input") or [None] * len(b["instruction"]), b["output"])]}),
    Layout("prompt-completion", ("prompt", "completion"), "trl-lib/tldr, your CSV/JSONL of prompt, completion",
           "plain strings -> user turn and assistant turn; conversational rows are kept",
           _check_columns(("prompt", _text_or_conversation_problem), ("completion", _text_or_conversation_problem)),
           lambda b: {"messages": [as_turn(p, user) + as_turn(c, assistant) for p, c in zip(b["prompt"], b["completion"])]}),
    Layout("text", ("text",), "plain corpora (language modelling)",
           "trained as is, every token (no chat template, no prompt mask)",
           _check_columns(("text", _text_problem)),
           lambda b: {"text": b["text"]}),
]

# Preference pairs (what DPO and reward modelling read).
PREFERENCE: list[Layout] = [
    Layout("preference", ("prompt", "chosen", "rejected"),
           "HuggingFaceH4/ultrafeedback_binarized, trl-lib/ultrafeedback_binarized",
           "strings -> user/assistant turns; answers that repeat the conversation (ultrafeedback) are split at "
           "the turns they share, which become the prompt",
           lambda row: _check_columns(("prompt", _text_or_conversation_problem), ("chosen", _text_or_conversation_problem),
                                      ("rejected", _text_or_conversation_problem))(row)
           or _preference_problem(row["prompt"], row["chosen"], row["rejected"]),
           lambda b: _columns(_preference_row(p, c, r) for p, c, r in zip(b["prompt"], b["chosen"], b["rejected"]))),
    Layout("implicit-prompt preference", ("chosen", "rejected"), "Anthropic/hh-rlhf",
           "whole conversations, or hh-rlhf's \"Human: ... Assistant: ...\" strings split into turns; the turns both "
           "share become the prompt",
           lambda row: _implicit_problem(row),
           lambda b: _columns(_implicit_row(c, r) for c, r in zip(b["chosen"], b["rejected"]))),
]

# Prompts with the columns rewards read (what GRPO and RLOO read).
PROMPT: list[Layout] = [
    Layout("prompt", ("prompt",), "openai/gsm8k with `dataset_columns: {question: prompt}`, builtin:arithmetic",
           "a plain prompt -> user turn; every other column is kept for the rewards",
           _check_columns(("prompt", _text_or_conversation_problem)),
           lambda b: {**b, "prompt": [as_turn(p, user) for p in b["prompt"]]}, keeps_columns=True),
]


def _implicit_problem(row) -> str | None:
    chosen, rejected = row.get("chosen"), row.get("rejected")
    if isinstance(chosen, str) and isinstance(rejected, str):
        if hh_turns(chosen) is None or hh_turns(rejected) is None:
            return ("`chosen`/`rejected` are strings without a prompt column and without hh-rlhf's \"Human:\" / "
                    "\"Assistant:\" turns: add a `prompt` column")
    else:
        problem = _conversation_problem(chosen, "chosen") or _conversation_problem(rejected, "rejected")
        if problem:
            return problem
    return _preference_problem(None, chosen, rejected)


def _columns(rows) -> dict:
    out = {"prompt": [], "chosen": [], "rejected": []}
    for prompt, chosen, rejected in rows:
        out["prompt"].append(prompt)
        out["chosen"].append(chosen)
        out["rejected"].append(rejected)
    return out


# ---------------------------------------------------------------- recognising a layout

# Columns that public data sets use for what a layout calls by another name: the basis of the mapping the
# error message suggests.
SYNONYMS = {
    "prompt": ("question", "query", "problem", "instruction", "input", "prompt_text"),
    "completion": ("answer", "response", "output", "solution", "target", "reply"),
    "messages": ("conversation", "dialog", "dialogue", "chat", "turns"),
    "text": ("content", "document", "body"),
    "chosen": ("chosen_response", "preferred", "positive", "response_j"),
    "rejected": ("rejected_response", "dispreferred", "negative", "response_k"),
}


def suggest_mapping(layouts: list[Layout], columns: list[str]) -> dict[str, str] | None:
    """A `{source: target}` renaming under which the columns fit one of the layouts, if one is evident."""
    for layout in layouts:
        mapping, free = {}, [c for c in columns if c not in layout.columns]
        for needed in layout.columns:
            if needed in columns:
                continue
            match = next((c for c in SYNONYMS.get(needed, ()) if c in free and c not in mapping), None)
            if match is None:
                break
            mapping[match] = needed
        else:
            if mapping:
                return mapping
    return None


def detect(columns: list[str], layouts: list[Layout], source: str, method: str,
           mapping_key: str = "dataset_columns") -> Layout:
    """The first of `layouts` whose columns are present, or a DataError naming the columns found, expected, and a
    mapping that would fit (`method` names the reader in the message)."""
    for layout in layouts:
        if set(layout.columns) <= set(columns):
            return layout
    expected = " | ".join(" + ".join(layout.columns) for layout in layouts)
    mapping = suggest_mapping(layouts, columns)
    if mapping:
        hint = f"map the columns: `{mapping_key}: {{{', '.join(f'{k}: {v}' for k, v in mapping.items())}}}`."
    else:
        hint = f"rename your columns with `{mapping_key}: {{your_column: {layouts[0].columns[0]}}}`."
    raise DataError(f"{source} has the columns {sorted(columns)}, but {method} expects one of: {expected}; {hint}")


def readme_table(readers: list[tuple[str, list[Layout]]]) -> str:
    """The layouts each method reads, as a markdown table (the README's, kept equal by a test)."""
    methods_of: dict[int, list[str]] = {}
    layouts = []  # in the order the methods first read them
    for name, read in readers:
        for layout in read:
            if id(layout) not in methods_of:
                methods_of[id(layout)] = []
                layouts.append(layout)
            methods_of[id(layout)].append(name)
    rows = ["| methods | columns | e.g. | how it is read |", "|---|---|---|---|"]
    rows += [f"| {', '.join(methods_of[id(layout)])} | {' + '.join(f'`{c}`' for c in layout.columns)} | "
             f"{layout.example} | {layout.how} |" for layout in layouts]
    return "\n".join(rows)
