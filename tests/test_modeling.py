"""Short model names, chat templates, stop tokens, pad fallback, model references."""

import json
import shutil
from pathlib import Path

import pytest
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from posttrain_dist import config, modeling
from posttrain_dist.errors import ConfigError


def model_args(name, **kwargs):
    return config.ModelArgs(model_name_or_path=name, **kwargs)


def strip_template(src, dst):
    """A copy of a model folder whose tokenizer has no chat template and no pad token."""
    shutil.copytree(src, dst)
    (dst / "chat_template.jinja").unlink(missing_ok=True)
    tokenizer_config = json.loads((dst / "tokenizer_config.json").read_text())
    tokenizer_config.pop("chat_template", None)
    tokenizer_config.pop("pad_token", None)
    (dst / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    return dst


def test_default_model_is_smollm2_135m(default_model_path):
    cfg = AutoConfig.from_pretrained(default_model_path)
    assert cfg.model_type == "llama" and cfg.hidden_size == 576 and cfg.num_hidden_layers == 30
    tokenizer = AutoTokenizer.from_pretrained(default_model_path)
    assert "<|im_start|>" in tokenizer.chat_template and tokenizer.eos_token == "<|im_end|>"


def test_tiny_model_is_small_and_shares_the_tokenizer(tiny_model_path, default_model_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    assert sum(p.numel() for p in model.parameters()) < 4_000_000
    assert AutoTokenizer.from_pretrained(tiny_model_path).get_vocab() == AutoTokenizer.from_pretrained(default_model_path).get_vocab()


def test_other_names_pass_through_unchanged():
    assert modeling.resolve_model("Qwen/Qwen3-8B") == "Qwen/Qwen3-8B"


def test_end_of_turn_of_chatml_is_im_end(tiny_model_path):
    tokenizer = modeling.load_tokenizer(model_args(tiny_model_path))
    assert tokenizer.convert_ids_to_tokens(modeling.end_of_turn_token_id(tokenizer)) == "<|im_end|>"


def test_model_without_template_gets_simple_and_pad_falls_back_to_eos(tiny_model_path, tmp_path):
    folder = strip_template(Path(tiny_model_path), tmp_path / "bare")
    assert not AutoTokenizer.from_pretrained(folder).chat_template
    tokenizer = modeling.load_tokenizer(model_args(str(folder)))
    assert tokenizer.chat_template == modeling.SIMPLE_TEMPLATE
    assert tokenizer.pad_token == tokenizer.eos_token
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}], tokenize=False
    )
    assert text == f"User: Hi\n\nAssistant: Hello{tokenizer.eos_token}\n\n"
    assert modeling.end_of_turn_token_id(tokenizer) == tokenizer.eos_token_id


def test_named_template_replaces_the_tokenizers(tiny_model_path):
    tokenizer = modeling.load_tokenizer(model_args(tiny_model_path), chat_template="chatml")
    text = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"  # no default system prompt


def test_template_from_jinja_file(tiny_model_path, tmp_path):
    path = tmp_path / "t.jinja"
    path.write_text("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}{% endfor %}")
    tokenizer = modeling.load_tokenizer(model_args(tiny_model_path), chat_template=str(path))
    assert tokenizer.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False) == "[user] x"


def test_unknown_template_name_is_refused():
    with pytest.raises(ConfigError, match="neither a known name"):
        modeling.resolve_chat_template_source("llama-ish")


def test_stop_tokens_are_aligned_to_end_of_turn(tiny_model_path, tmp_path):
    folder = strip_template(Path(tiny_model_path), tmp_path / "bare")
    tokenizer = modeling.load_tokenizer(model_args(str(folder)), chat_template="chatml")
    model = modeling.load_model(model_args(str(folder)), None, tokenizer)
    stops = model.generation_config.eos_token_id
    stops = stops if isinstance(stops, list) else [stops]
    assert stops[0] == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id


def test_missing_model_path_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        modeling.check_model_reference(str(tmp_path / "no-such-model"))
    with pytest.raises(ConfigError, match="does not exist"):
        modeling.check_model_reference("./checkpoints/run1")


def test_folder_without_config_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="has no config.json"):
        modeling.check_model_reference(str(tmp_path))


def test_hub_ids_and_short_names_are_accepted():
    modeling.check_model_reference("Qwen/Qwen3-8B")
    modeling.check_model_reference("tiny-random-llama")
