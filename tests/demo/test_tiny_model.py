"""The tiny offline Qwen3: loads with the Auto classes, Qwen3 special tokens, chat template, generate()."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.support.tiny_model import (
    QWEN3_ADDED_TOKENS,
    QWEN3_SPECIAL_TOKENS,
    RECIPE_FILE,
    VOCAB_SIZE,
    _is_complete,
    build_tiny_model,
    recipe_hash,
)

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "Bash",
            "description": "Run a shell command.",
            "parameters": {
                "type": "object",
                "properties": {"command": {"type": "string"}},
                "required": ["command"],
            },
        },
    }
]
CONVERSATION = [
    {"role": "system", "content": "You are a coding agent."},
    {"role": "user", "content": "修复解析器 🐛"},
    {
        "role": "assistant",
        "content": "Let me run the tests.",
        "reasoning_content": "Check the failing test first.",
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "Bash", "arguments": {"command": "pytest -q"}},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "1 failed"},
    {"role": "assistant", "content": "Fixed.", "reasoning_content": "Done."},
]
# What Qwen3-8B's official template renders for CONVERSATION with TOOLS (reasoning is kept only after
# the last user query; tool results become a user turn wrapped in <tool_response>).
EXPECTED_RENDER = (
    "<|im_start|>system\nYou are a coding agent.\n\n# Tools\n\nYou may call one or more functions to assist "
    "with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n"
    "<tools>\n"
    + json.dumps(TOOLS[0])
    + "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": '
    "<args-json-object>}\n</tool_call><|im_end|>\n"
    "<|im_start|>user\n修复解析器 🐛<|im_end|>\n"
    "<|im_start|>assistant\n<think>\nCheck the failing test first.\n</think>\n\nLet me run the tests.\n"
    '<tool_call>\n{"name": "Bash", "arguments": {"command": "pytest -q"}}\n</tool_call><|im_end|>\n'
    "<|im_start|>user\n<tool_response>\n1 failed\n</tool_response><|im_end|>\n"
    "<|im_start|>assistant\n<think>\nDone.\n</think>\n\nFixed.<|im_end|>\n"
)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


def test_tokenizer_has_qwen3_added_tokens_as_single_ids_in_upstream_order(tokenizer: Any) -> None:
    assert len(tokenizer) == VOCAB_SIZE
    ids = [tokenizer.convert_tokens_to_ids(t) for t in QWEN3_ADDED_TOKENS]
    assert ids == list(range(VOCAB_SIZE - len(QWEN3_ADDED_TOKENS), VOCAB_SIZE))
    for token, token_id in zip(QWEN3_ADDED_TOKENS, ids, strict=True):
        assert tokenizer.encode(token, add_special_tokens=False) == [token_id], token
        assert tokenizer.encode(f"a{token}b", add_special_tokens=False).count(token_id) == 1
    special = set(tokenizer.all_special_tokens)
    assert set(QWEN3_SPECIAL_TOKENS) <= special
    assert not {"<think>", "</think>", "<tool_call>", "<tool_response>"} & special


def test_tokenizer_special_roles_match_qwen3(tokenizer: Any, tiny_model_dir: Path) -> None:
    assert type(tokenizer).__name__ == "Qwen2TokenizerFast"
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.bos_token is None
    config = json.loads((tiny_model_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert config["tokenizer_class"] == "Qwen2Tokenizer"
    text = "def f(x):\n    return x  # 注释 🎉 café"
    assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text


def test_chat_template_renders_tools_reasoning_and_tool_calls_like_qwen3(tokenizer: Any) -> None:
    rendered = tokenizer.apply_chat_template(CONVERSATION, tools=TOOLS, tokenize=False)
    assert rendered == EXPECTED_RENDER
    prompt = tokenizer.apply_chat_template(
        CONVERSATION[:2], tokenize=False, add_generation_prompt=True, enable_thinking=False
    )
    assert prompt.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    # Reasoning before the last user query is dropped, as in Qwen3.
    two_rounds = CONVERSATION + [{"role": "user", "content": "again"}, {"role": "assistant", "content": "ok"}]
    text = tokenizer.apply_chat_template(two_rounds, tools=TOOLS, tokenize=False)
    assert "Check the failing test first." not in text and "<think>\n\n</think>\n\nok" in text


def test_model_loads_and_generates(tiny_model_dir: Path, tokenizer: Any) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    assert type(model).__name__ == "Qwen3ForCausalLM"
    cfg = model.config
    assert (cfg.vocab_size, cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads) == (
        4096,
        64,
        2,
        4,
    )
    assert (cfg.num_key_value_heads, cfg.head_dim, cfg.tie_word_embeddings, cfg.bos_token_id) == (
        2,
        16,
        True,
        None,
    )
    assert cfg.eos_token_id == tokenizer.eos_token_id
    assert (tiny_model_dir / "model.safetensors").is_file()
    inputs = tokenizer.apply_chat_template(
        CONVERSATION[:2], tools=TOOLS, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert out.shape[1] > inputs["input_ids"].shape[1]
    assert int(out.max()) < VOCAB_SIZE


def test_build_is_idempotent_and_keyed_on_the_recipe(tiny_model_dir: Path) -> None:
    weights = tiny_model_dir / "model.safetensors"
    before = os.stat(weights).st_mtime_ns
    # Not rebuilt: the weights file is untouched (speed is not asserted by tests).
    assert build_tiny_model(tiny_model_dir) == tiny_model_dir
    assert os.stat(weights).st_mtime_ns == before
    assert _is_complete(tiny_model_dir, recipe_hash(0))
    assert not _is_complete(tiny_model_dir, recipe_hash(1))
    recorded = json.loads((tiny_model_dir / RECIPE_FILE).read_text(encoding="utf-8"))
    assert recorded["recipe_hash"] == recipe_hash(0) and recorded["vocab_size"] == VOCAB_SIZE


def test_incomplete_dir_is_rebuilt_deterministically(tmp_path: Path, tiny_model_dir: Path) -> None:
    out = tmp_path / "tiny"
    out.mkdir()
    (out / "config.json").write_text("{}")  # a leftover of an interrupted build
    build_tiny_model(out)
    for name in ("tokenizer.json", "model.safetensors", "vocab.json", "merges.txt"):
        assert (out / name).read_bytes() == (tiny_model_dir / name).read_bytes(), name
