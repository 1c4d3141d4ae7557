"""Chat templates by name (`chat_template: chatml`), written here in the formats those model families use.

Users name templates the way their previous tool did (axolotl's and LLaMA-Factory's `llama3`, `qwen3`,
`zephyr`...). Each template below renders that family's published format; a name that is not here is
refused with how to give a template (a .jinja file, or the Jinja text itself), and leaving it unset keeps
the tokenizer's own. `TOKENS` lists the special tokens each needs in the vocabulary: a tokenizer without
them is refused (its model never learned those markers).

Every template's rendering of multi-turn conversations is checked against the per-turn split in
tests/test_sequences.py (`qwen3` drops the reasoning of earlier answers, as Qwen3's own template does, so
conversations with reasoning in an earlier answer are trained per turn: see `sequences`).
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import ConfigError

# The course's simple template, for models that ship none: plain-text roles, every assistant turn closed by the
# tokenizer's EOS token, so a model trained with it learns to stop.
SIMPLE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ 'System: ' + message['content'] + '\n\n' }}"
    "{% elif message['role'] == 'user' %}{{ 'User: ' + message['content'] + '\n\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ 'Assistant: ' + message['content'] + eos_token + '\n\n' }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

# ChatML without a default system prompt.
CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Llama 3's header/end-of-turn format, the beginning-of-text token first.
LLAMA3 = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

# Zephyr's (and alignment-handbook's default): a role line, the text, then the EOS token.
ZEPHYR = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)

# Qwen 3's shape: ChatML; answers after the last user turn open with their reasoning block (empty when they have
# none), answers before it lose theirs; with `enable_thinking: false` the generation prompt carries an empty
# reasoning block. A conversation renders its earlier answers differently from the same answer rendered last, so
# multi-turn rows are trained per turn (`sequences`).
QWEN3 = (
    "{%- set ns = namespace(last_user=-1) -%}"
    "{%- for message in messages -%}{%- if message['role'] == 'user' -%}{%- set ns.last_user = loop.index0 -%}"
    "{%- endif -%}{%- endfor -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{%- set content = message['content'] -%}{%- set reasoning = '' -%}"
    "{%- if '</think>' in content -%}{%- set reasoning = content.split('</think>')[0].split('<think>')[-1].strip('\n') -%}"
    "{%- set content = content.split('</think>')[-1].lstrip('\n') -%}{%- endif -%}"
    "{%- if loop.index0 > ns.last_user -%}"
    "{{ '<|im_start|>assistant\n<think>\n' + reasoning + '\n</think>\n\n' + content + '<|im_end|>\n' }}"
    "{%- else -%}{{ '<|im_start|>assistant\n' + content + '<|im_end|>\n' }}{%- endif -%}"
    "{%- else -%}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}"
    "{%- if enable_thinking is defined and not enable_thinking -%}{{ '<think>\n\n</think>\n\n' }}{%- endif -%}"
    "{%- endif -%}"
)

# SmolLM3's shape: ChatML; a system block says the reasoning mode (`enable_thinking`, per row in smoltalk2's
# `chat_template_kwargs`, or /think and /no_think in the system message); without thinking, answers open with an
# empty reasoning block.
SMOLLM3 = (
    "{%- set mode = '/think' if (enable_thinking is not defined or enable_thinking) else '/no_think' -%}"
    "{%- set system = '' -%}"
    "{%- if messages and messages[0]['role'] == 'system' -%}{%- set system = messages[0]['content'] -%}"
    "{%- if '/no_think' in system -%}{%- set mode = '/no_think' -%}{%- elif '/think' in system -%}"
    "{%- set mode = '/think' -%}{%- endif -%}{%- endif -%}"
    "{{ '<|im_start|>system\nReasoning Mode: ' + mode + '\n\n' + system.replace('/no_think', '').replace('/think', '')"
    " | trim + '<|im_end|>\n' }}"
    "{%- for message in messages if message['role'] != 'system' -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{ '<|im_start|>assistant\n' + ('' if mode == '/think' else '<think>\n\n</think>\n') + message['content']"
    " + '<|im_end|>\n' }}"
    "{%- else -%}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' + ('' if mode == '/think' else "
    "'<think>\n\n</think>\n') }}{%- endif -%}"
)

TEMPLATES = {"simple": SIMPLE, "chatml": CHATML, "llama3": LLAMA3, "zephyr": ZEPHYR, "qwen3": QWEN3,
             "smollm3": SMOLLM3}
TOKENS = {"chatml": ("<|im_start|>", "<|im_end|>"), "qwen3": ("<|im_start|>", "<|im_end|>"),
          "smollm3": ("<|im_start|>", "<|im_end|>"),
          "llama3": ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")}
# Names other tools use for these formats.
ALIASES = {"llama-3": "llama3", "llama3.1": "llama3", "llama-3.1": "llama3", "qwen": "chatml", "qwen2": "chatml",
           "qwen2.5": "chatml", "qwen-3": "qwen3", "smollm2": "chatml", "smollm": "chatml"}


def trl_template(name: str) -> str:
    """A chat template as trl ships it (`trl:qwen3`: trl/chat_templates/qwen3.jinja, the published Qwen3 template):
    the exact text trl recognises to parse tool calls (`tools`)."""
    import importlib.resources

    folder = importlib.resources.files("trl") / "chat_templates"
    shipped = sorted(p.name[: -len(".jinja")] for p in folder.iterdir() if p.name.endswith(".jinja")
                     and not p.name.endswith("_training.jinja"))
    if name not in shipped:
        raise ConfigError(f"`chat_template: trl:{name}`: trl ships no such template; it has {', '.join(shipped)}.")
    return (folder / f"{name}.jinja").read_text()


def resolve(value: str) -> str:
    """The Jinja text of `chat_template`: a name here, `trl:NAME` (a template trl ships), a .jinja file, or the
    template itself."""
    name = ALIASES.get(value, value)
    if name in TEMPLATES:
        return TEMPLATES[name]
    if value.startswith("trl:"):
        return trl_template(value[4:])
    if value.endswith((".jinja", ".j2")):
        if not os.path.isfile(value):
            raise ConfigError(f"chat template file {value!r} does not exist.")
        return Path(value).read_text()
    if "{{" in value or "{%" in value:
        return value
    raise ConfigError(
        f"`chat_template: {value}` is neither a known name ({', '.join([*TEMPLATES, *ALIASES])}), `trl:NAME` (a "
        "template trl ships, e.g. trl:qwen3), a .jinja file, nor "
        "a Jinja template. Give the template your model was trained with as a file (`chat_template: "
        "path/to/template.jinja`) or as its text, or leave it unset to keep the tokenizer's own."
    )


def needed_tokens(value: str) -> tuple[str, ...]:
    if value.startswith("trl:qwen"):  # trl's copies of the Qwen templates: ChatML's markers
        return TOKENS["chatml"]
    return TOKENS.get(ALIASES.get(value, value), ())
