"""An offline, deterministic tiny Qwen3 (model + tokenizer) for tests and demos.

Why: every part of sft that touches a tokenizer or a model (token counting, chat-template rendering,
LLaMA-Factory smoke training, generate()) must be testable without the network. Real Qwen3-8B is 16 GB
and needs the Hub; this builds a 336k-parameter ``Qwen3ForCausalLM`` and a 4096-token byte-level BPE
tokenizer in seconds, from text already on the machine (the Python stdlib sources plus synthetic
chat / tool-call text with CJK and emoji).

What matches real Qwen3 (so code paths behave the same):

- the 26 Qwen3 added tokens in upstream order at the top of the vocabulary (``<|endoftext|>``,
  ``<|im_start|>``, ``<|im_end|>``, ... object_ref/box/quad/vision/pad as *special*; ``<tool_call>``,
  ``</tool_call>``, fim tokens, ``<|repo_name|>``, ``<|file_sep|>``, ``<tool_response>``,
  ``</tool_response>``, ``<think>``, ``</think>`` as *non-special*), each a single id;
- EOS ``<|im_end|>``, PAD ``<|endoftext|>``, no BOS, ``tokenizer_class: Qwen2Tokenizer``;
- Qwen2's pre-tokenizer regex, ByteLevel pre-tokenizer/decoder without prefix space, NFC normaliser;
- the chat template is Qwen3-8B's official template text (tools, ``reasoning_content``, ``tool_calls``,
  ``<think>`` placement after the last user query, ``enable_thinking``);
- model config ``Qwen3ForCausalLM``: tied embeddings, ``bos_token_id: None`` (as in LLaMA-Factory's
  notes, silences the "new PAD/BOS/EOS" warning), rope_theta 1e6, head_dim 16.

What differs: the vocabulary (4070 merges/bytes learned locally instead of 151,643) and the weights
(random, seeded). It is a plumbing model, not a language model.

The build is idempotent: ``<out>/tiny_model_recipe.json`` records a hash of the recipe; a complete
directory with the same hash is returned as-is.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import sys
import sysconfig
from pathlib import Path
from typing import Any

from sft.core.io_utils import atomic_write_text, file_lock

logger = logging.getLogger(__name__)

# Qwen3-8B's official chat template (tokenizer_config.json "chat_template", JSON-decoded).
QWEN3_CHAT_TEMPLATE = r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0].role == 'system' %}
        {{- messages[0].content + '\n\n' }}
    {%- endif %}
    {{- "# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0].role == 'system' %}
        {{- '<|im_start|>system\n' + messages[0].content + '<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if ns.multi_step_tool and message.role == "user" and message.content is string and not(message.content.startswith('<tool_response>') and message.content.endswith('</tool_response>')) %}
        {%- set ns.multi_step_tool = false %}
        {%- set ns.last_query_index = index %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- if message.content is string %}
        {%- set content = message.content %}
    {%- else %}
        {%- set content = '' %}
    {%- endif %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\n' + content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {%- set reasoning_content = '' %}
        {%- if message.reasoning_content is string %}
            {%- set reasoning_content = message.reasoning_content %}
        {%- else %}
            {%- if '</think>' in content %}
                {%- set reasoning_content = content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') %}
                {%- set content = content.split('</think>')[-1].lstrip('\n') %}
            {%- endif %}
        {%- endif %}
        {%- if loop.index0 > ns.last_query_index %}
            {%- if loop.last or (not loop.last and reasoning_content) %}
                {{- '<|im_start|>' + message.role + '\n<think>\n' + reasoning_content.strip('\n') + '\n</think>\n\n' + content.lstrip('\n') }}
            {%- else %}
                {{- '<|im_start|>' + message.role + '\n' + content }}
            {%- endif %}
        {%- else %}
            {{- '<|im_start|>' + message.role + '\n' + content }}
        {%- endif %}
        {%- if message.tool_calls %}
            {%- for tool_call in message.tool_calls %}
                {%- if (loop.first and content) or (not loop.first) %}
                    {{- '\n' }}
                {%- endif %}
                {%- if tool_call.function %}
                    {%- set tool_call = tool_call.function %}
                {%- endif %}
                {{- '<tool_call>\n{"name": "' }}
                {{- tool_call.name }}
                {{- '", "arguments": ' }}
                {%- if tool_call.arguments is string %}
                    {{- tool_call.arguments }}
                {%- else %}
                    {{- tool_call.arguments | tojson }}
                {%- endif %}
                {{- '}\n</tool_call>' }}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\n\n</think>\n\n' }}
    {%- endif %}
{%- endif %}"""

QWEN3_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
QWEN3_NON_SPECIAL_ADDED_TOKENS: tuple[str, ...] = (
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
    "<tool_response>",
    "</tool_response>",
    "<think>",
    "</think>",
)
QWEN3_ADDED_TOKENS: tuple[str, ...] = QWEN3_SPECIAL_TOKENS + QWEN3_NON_SPECIAL_ADDED_TOKENS

# Qwen2/Qwen3 tokenizer.json pre-tokenizer split pattern.
QWEN2_PRETOKENIZE_REGEX = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"

VOCAB_SIZE = 4096
BASE_VOCAB_SIZE = VOCAB_SIZE - len(QWEN3_ADDED_TOKENS)  # 4070 bytes + merges
MODEL_SHAPE: dict[str, Any] = {
    "vocab_size": VOCAB_SIZE,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "max_position_embeddings": 4096,
    "rope_theta": 1_000_000.0,
    "tie_word_embeddings": True,
}
RECIPE_VERSION = 1
RECIPE_FILE = "tiny_model_recipe.json"
_STDLIB_TEXT_BUDGET = 3_000_000  # characters of stdlib source used for BPE training (~1 s)
REQUIRED_FILES: tuple[str, ...] = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    RECIPE_FILE,
)


def recipe_hash(seed: int) -> str:
    """Hash of everything that determines the build's bytes; a change forces a rebuild."""
    recipe = {
        "version": RECIPE_VERSION,
        "seed": seed,
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",  # the stdlib corpus differs by version
        "shape": MODEL_SHAPE,
        "added": list(QWEN3_ADDED_TOKENS),
        "template": QWEN3_CHAT_TEMPLATE,
        "regex": QWEN2_PRETOKENIZE_REGEX,
        "budget": _STDLIB_TEXT_BUDGET,
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode("utf-8")).hexdigest()


def _stdlib_corpus(budget: int) -> list[str]:
    """Top-level stdlib .py sources in sorted order, up to ``budget`` characters (deterministic)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    texts: list[str] = []
    used = 0
    for path in sorted(stdlib.glob("*.py")):
        if used >= budget:
            break
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        texts.append(text[: budget - used])
        used += len(texts[-1])
    return texts


_CHAT_PHRASES: tuple[str, ...] = (
    "Let me look at the failing test first.",
    "I'll read the file to understand the current implementation.",
    "The tests pass now. 测试全部通过 ✅",
    "修复解析器在处理空字符串时崩溃的问题 🐛",
    "バグを修正しました。🎉 테스트가 통과했습니다.",
    "The fix is complete: the parser now returns an empty list for empty input. 👍",
    "Analysis: the build fails because of a missing import.\nPlan: add the import and rerun pytest.",
)
_TOOL_NAMES: tuple[str, ...] = ("Bash", "Read", "Edit", "Grep", "terminal", "file_editor", "bash_command")


def _synthetic_chat_corpus(seed: int, n_samples: int = 3000) -> list[str]:
    """Chat-shaped text (ChatML headers, tool calls as JSON, <think> blocks) so common merges exist."""
    rng = random.Random(f"tiny-model-corpus:{seed}")
    samples: list[str] = []
    for index in range(n_samples):
        tool = rng.choice(_TOOL_NAMES)
        arguments = {
            "command": f"python -m pytest tests/test_{index % 97}.py -q",
            "path": f"src/pkg/mod_{index % 31}.py",
        }
        call = json.dumps({"name": tool, "arguments": arguments}, ensure_ascii=False)
        samples.append(
            "<|im_start|>user\n"
            + rng.choice(_CHAT_PHRASES)
            + "<|im_end|>\n<|im_start|>assistant\n<think>\n"
            + rng.choice(_CHAT_PHRASES)
            + "\n</think>\n\n"
            + rng.choice(_CHAT_PHRASES)
            + f"\n<tool_call>\n{call}\n</tool_call><|im_end|>\n"
            + "<|im_start|>user\n<tool_response>\n"
            + f"===== {rng.randint(1, 40)} passed in {rng.randint(1, 99) / 10} s =====\n</tool_response><|im_end|>\n"
        )
    return samples


def _train_tokenizer(seed: int) -> Any:
    """Train the byte-level BPE (4070 entries) and append the 26 Qwen3 added tokens in upstream order."""
    from tokenizers import (
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
    )
    from tokenizers.trainers import BpeTrainer

    tokenizer = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tokenizer.post_processor = processors.ByteLevel(
        add_prefix_space=False, trim_offsets=False, use_regex=False
    )
    trainer = BpeTrainer(
        vocab_size=BASE_VOCAB_SIZE,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    corpus = _stdlib_corpus(_STDLIB_TEXT_BUDGET) + _synthetic_chat_corpus(seed)
    tokenizer.train_from_iterator(corpus, trainer=trainer, length=len(corpus))
    base_size = tokenizer.get_vocab_size()
    if base_size != BASE_VOCAB_SIZE:
        raise RuntimeError(
            f"tiny tokenizer: BPE training produced {base_size} entries, expected {BASE_VOCAB_SIZE}; "
            "the local training corpus is too small (stdlib sources missing?). Fix: check "
            f"sysconfig stdlib path {sysconfig.get_paths()['stdlib']!r} holds the Python sources."
        )
    add_qwen3_added_tokens(tokenizer)
    return tokenizer


def add_qwen3_added_tokens(tokenizer: Any) -> None:
    """Qwen3's added tokens, in Qwen3's id order after the BPE vocabulary (also used by benchmarks/qwen_vocab.py)."""
    from tokenizers import AddedToken

    tokenizer.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in QWEN3_SPECIAL_TOKENS]
    )
    tokenizer.add_tokens(
        [AddedToken(t, special=False, normalized=False) for t in QWEN3_NON_SPECIAL_ADDED_TOKENS]
    )


def save_qwen3_tokenizer(raw_tokenizer: Any, out_dir: Path, *, model_max_length: int) -> Any:
    """Save as a Qwen2-class HF tokenizer (tokenizer.json + vocab.json/merges.txt + configs) with Qwen3's
    special tokens and chat template; returns the fast tokenizer."""
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(
        tokenizer_object=raw_tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        unk_token=None,
        additional_special_tokens=list(QWEN3_SPECIAL_TOKENS[1:]),
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
        split_special_tokens=False,
    )
    fast.chat_template = QWEN3_CHAT_TEMPLATE
    fast.save_pretrained(str(out_dir))
    raw_tokenizer.model.save(str(out_dir))  # vocab.json + merges.txt, for the slow Qwen2Tokenizer
    config_path = out_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config.update(
        {
            "tokenizer_class": "Qwen2Tokenizer",
            "add_bos_token": False,
            "add_prefix_space": False,
            "errors": "replace",
            "bos_token": None,
            "unk_token": None,
            # Real Qwen3 keeps the template inside tokenizer_config.json; transformers 4.57 also writes
            # chat_template.jinja (same text), which wins on load.
            "chat_template": QWEN3_CHAT_TEMPLATE,
        }
    )
    atomic_write_text(config_path, json.dumps(config, indent=2, ensure_ascii=False, sort_keys=True) + "\n")
    return fast


def _save_model(out_dir: Path, seed: int, eos_id: int, pad_id: int) -> None:
    """Seeded random Qwen3ForCausalLM saved as safetensors, with a generation config like Qwen3's."""
    import torch
    from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(**MODEL_SHAPE, bos_token_id=None, eos_token_id=eos_id, pad_token_id=pad_id)
    config.bos_token_id = None
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=None, eos_token_id=[eos_id, pad_id], pad_token_id=pad_id, do_sample=False
    )
    model.save_pretrained(str(out_dir), safe_serialization=True)


def _is_complete(out_dir: Path, expected_hash: str) -> bool:
    if not all((out_dir / name).is_file() for name in REQUIRED_FILES):
        return False
    try:
        recorded = json.loads((out_dir / RECIPE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return recorded.get("recipe_hash") == expected_hash


def build_tiny_model(out_dir: Path, *, seed: int = 0) -> Path:
    """Build (or reuse) the tiny Qwen3 model + tokenizer in ``out_dir``; returns ``out_dir``.

    The recipe file is written last, so an interrupted build is never mistaken for a complete one.
    """
    out_dir = Path(out_dir)
    expected = recipe_hash(seed)
    if _is_complete(out_dir, expected):
        logger.info("tiny model already built at %s (recipe %s)", out_dir, expected[:12])
        return out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    with file_lock(out_dir):  # the lock file sits beside the directory, not in it
        if _is_complete(out_dir, expected):
            return out_dir
        (out_dir / RECIPE_FILE).unlink(missing_ok=True)
        raw_tokenizer = _train_tokenizer(seed)
        fast = save_qwen3_tokenizer(
            raw_tokenizer, out_dir, model_max_length=MODEL_SHAPE["max_position_embeddings"]
        )
        eos_id = fast.convert_tokens_to_ids("<|im_end|>")
        pad_id = fast.convert_tokens_to_ids("<|endoftext|>")
        _save_model(out_dir, seed, eos_id, pad_id)
        record = {"recipe_hash": expected, "seed": seed, "vocab_size": len(fast), "shape": MODEL_SHAPE}
        atomic_write_text(out_dir / RECIPE_FILE, json.dumps(record, indent=2, sort_keys=True) + "\n")
    logger.info("built tiny Qwen3 model at %s (vocab %d)", out_dir, len(fast))
    return out_dir
