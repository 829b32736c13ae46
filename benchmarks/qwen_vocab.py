"""A Hugging Face fast tokenizer with Qwen's real 151,643-token BPE vocabulary, built offline.

Why: token statistics must be timed with a Qwen-sized vocabulary (issue "Conversion at scale": >= 1 M
tokens/s on 2 cores), but the Hub is out of reach. The PyPI wheel ``dashscope==2.0.2`` ships
``dashscope/resources/qwen.tiktoken``: Qwen's byte-level BPE ranks (base64 token, rank per line), the same
151,643 entries Qwen2 / Qwen3 use below their added tokens. This script downloads that wheel with pip,
extracts only the ``.tiktoken`` file and converts it the way transformers' ``TikTokenConverter`` does
(vocab = rank per byte string; merges = every split of a token into two vocabulary entries, ordered by
the rank of the merged token), then adds Qwen2's pre-tokenizer (Split on Qwen's regex + ByteLevel without
regex), the NFC normaliser and ByteLevel decoder, and Qwen3's 26 added tokens (ids 151643..151668) and
chat template, copied from ``tests.support.tiny_model`` so the two benchmark tokenizers differ only in vocabulary.

    python -m benchmarks.qwen_vocab                      # -> artifacts/bench/qwen-vocab-tokenizer/
    python -m benchmarks.qwen_vocab --out /tmp/qwen-tok --wheel-dir /tmp/wheels

The build is verified before the directory is marked complete (``qwen_vocab_recipe.json`` is written
last): sizes, special-token ids, tokens known from Qwen2 (``<|im_start|>system\\nYou are a helpful
assistant.<|im_end|>``), round trips on code / CJK / emoji text, and the BPE segmentation against a
pure-Python tiktoken-style reference encoder (lowest-rank pair first) on a mixed corpus.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import logging
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # repo root: tests.support is not packaged
from tests.support.tiny_model import (
    QWEN2_PRETOKENIZE_REGEX,
    QWEN3_ADDED_TOKENS,
    QWEN3_CHAT_TEMPLATE,
    add_qwen3_added_tokens,
    save_qwen3_tokenizer,
)

from sft.core.io_utils import atomic_write_text, file_lock

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "artifacts" / "bench" / "qwen-vocab-tokenizer"
DEFAULT_WHEEL_DIR = REPO / "artifacts" / "bench" / "wheels"
WHEEL_REQUIREMENT = "dashscope==2.0.2"
WHEEL_NAME = "dashscope-2.0.2-py3-none-any.whl"
TIKTOKEN_MEMBER = "dashscope/resources/qwen.tiktoken"
TIKTOKEN_SHA256 = "b2b1b8dfb5cc5f024bafc373121c6aba3f66f9a5a0269e243470a1de16a33186"
BASE_VOCAB_SIZE = 151_643
SPECIAL_START_ID = BASE_VOCAB_SIZE  # <|endoftext|>; Qwen3's added tokens follow in upstream order
MODEL_MAX_LENGTH = 131_072
RECIPE_VERSION = 1
RECIPE_FILE = "qwen_vocab_recipe.json"
# Ids every Qwen2 / Qwen3 tokenizer gives these strings (from Qwen's published chat examples).
KNOWN_ENCODINGS: dict[str, list[int]] = {
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n": [
        151644,
        8948,
        198,
        2610,
        525,
        264,
        10950,
        17847,
        13,
        151645,
        198,
    ],
    "Hello, world!": [9707, 11, 1879, 0],
    "<think>\n\n</think>\n\n": [151667, 271, 151668, 271],
}
EXPECTED_ADDED_IDS: dict[str, int] = {
    "<|endoftext|>": 151643,
    "<|im_start|>": 151644,
    "<|im_end|>": 151645,
    "<tool_call>": 151657,
    "</tool_call>": 151658,
    "<tool_response>": 151665,
    "</tool_response>": 151666,
    "<think>": 151667,
    "</think>": 151668,
}
ROUND_TRIP_TEXTS: tuple[str, ...] = (
    "def parse(s: str) -> list[int]:\n    return [int(x) for x in s.split(',') if x.strip()]\n",
    "修复解析器在处理空字符串时崩溃的问题 🐛 バグを修正しました。🎉 테스트가 통과했습니다.",
    '  \t\n\n   trailing spaces   \r\n{"name": "Bash", "arguments": {"command": "ls -la /tmp"}}',
    "<|im_start|>assistant\n<think>\nLet me check.\n</think>\n\n<tool_call>\n{}\n</tool_call><|im_end|>\n",
    "Zürich naïve café — ½ × 10³ ≠ ∞; emoji ZWJ 👩‍💻 flags 🇨🇭 and U+FFFD \ufffd",
)


# ------------------------------------------------------------------------------------------------ source


def download_wheel(wheel_dir: Path) -> Path:
    """The dashscope wheel, fetched with pip from the package registry (reused when already there)."""
    wheel = wheel_dir / WHEEL_NAME
    if wheel.is_file():
        return wheel
    wheel_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        WHEEL_REQUIREMENT,
        "-d",
        str(wheel_dir),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not wheel.is_file():
        raise RuntimeError(
            f"could not download {WHEEL_REQUIREMENT} into {wheel_dir} (pip rc={proc.returncode}): "
            f"{(proc.stderr or proc.stdout)[-800:]}\nFix: make the package registry reachable, or put "
            f"{WHEEL_NAME} into {wheel_dir} by hand (--wheel-dir), then rerun."
        )
    return wheel


def extract_tiktoken(wheel: Path, dest: Path) -> Path:
    """Only ``qwen.tiktoken`` out of the wheel, checked against its known sha256."""
    target = dest / "qwen.tiktoken"
    try:
        with zipfile.ZipFile(wheel) as archive:
            data = archive.read(TIKTOKEN_MEMBER)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise RuntimeError(
            f"{wheel}: no readable {TIKTOKEN_MEMBER} ({exc}); delete the file and rerun to download it again"
        ) from exc
    digest = hashlib.sha256(data).hexdigest()
    if digest != TIKTOKEN_SHA256:
        raise RuntimeError(
            f"{wheel}:{TIKTOKEN_MEMBER} has sha256 {digest}, expected {TIKTOKEN_SHA256}; the wheel "
            "is not the one this script was written for (delete it and rerun)"
        )
    dest.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return target


def load_ranks(path: Path) -> dict[bytes, int]:
    """``token_base64 rank`` lines -> {token bytes: rank} (tiktoken's ``load_tiktoken_bpe``, no tiktoken)."""
    ranks: dict[bytes, int] = {}
    for number, line in enumerate(path.read_bytes().splitlines(), start=1):
        if not line:
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token, validate=True)] = int(rank)
        except ValueError as exc:
            raise RuntimeError(
                f"{path}:{number}: bad line {line[:80]!r} ({exc}); expected 'base64 rank'"
            ) from exc
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise RuntimeError(f"{path}: ranks are not the dense range 0..{len(ranks) - 1}")
    return ranks


# ------------------------------------------------------------------------------------------------ conversion


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (the one ByteLevel pre-tokenizers use)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def vocab_and_merges(ranks: dict[bytes, int]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """transformers' ``TikTokenConverter.extract_vocab_merges_from_model``, on already-loaded ranks."""
    table = bytes_to_unicode()

    def as_str(token: bytes) -> str:
        return "".join(table[b] for b in token)

    vocab: dict[str, int] = {}
    merges: list[tuple[bytes, bytes, int]] = []
    for token, rank in ranks.items():
        vocab[as_str(token)] = rank
        local = [
            (token[:i], token[i:], rank)
            for i in range(1, len(token))
            if token[:i] in ranks and token[i:] in ranks
        ]
        local.sort(key=lambda m: (ranks[m[0]], ranks[m[1]]))
        merges.extend(local)
    merges.sort(key=lambda m: m[2])
    return vocab, [(as_str(left), as_str(right)) for left, right, _ in merges]


def build_raw_tokenizer(ranks: dict[bytes, int]) -> Any:
    """A ``tokenizers.Tokenizer``: Qwen BPE + Qwen2 normaliser / pre-tokenizer / decoder + Qwen3 added tokens."""
    from tokenizers import (
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
    )

    vocab, merges = vocab_and_merges(ranks)
    tokenizer = Tokenizer(models.BPE(vocab, merges, unk_token=None, fuse_unk=False, byte_fallback=False))
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
    add_qwen3_added_tokens(tokenizer)
    return tokenizer


def save_tokenizer(raw_tokenizer: Any, out_dir: Path) -> None:
    """Save as a Qwen2-class HF tokenizer directory (the tiny model's writer: same configs and template)."""
    save_qwen3_tokenizer(raw_tokenizer, out_dir, model_max_length=MODEL_MAX_LENGTH)


# ------------------------------------------------------------------------------------------------ verification


def reference_encode(text: str, ranks: dict[bytes, int]) -> list[int]:
    """tiktoken's algorithm in Python: split with Qwen's regex, whole piece if known, else lowest-rank merges."""
    import regex

    ids: list[int] = []
    for match in regex.finditer(QWEN2_PRETOKENIZE_REGEX, text):
        piece = match.group(0).encode("utf-8")
        if piece in ranks:
            ids.append(ranks[piece])
            continue
        parts = [piece[i : i + 1] for i in range(len(piece))]
        while len(parts) > 1:
            best, best_rank = -1, None
            for i in range(len(parts) - 1):
                rank = ranks.get(parts[i] + parts[i + 1])
                if rank is not None and (best_rank is None or rank < best_rank):
                    best, best_rank = i, rank
            if best < 0:
                break
            parts[best : best + 2] = [parts[best] + parts[best + 1]]
        ids.extend(ranks[p] for p in parts)
    return ids


def reference_corpus(budget_chars: int = 200_000) -> list[str]:
    """Mixed text for the segmentation check: stdlib sources (code, prose in docstrings) + the round-trip texts."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    texts, used = list(ROUND_TRIP_TEXTS), 0
    for path in sorted(stdlib.glob("*.py"))[::7]:
        if used >= budget_chars:
            break
        try:
            text = path.read_text(encoding="utf-8")[:20_000]
        except (OSError, UnicodeDecodeError):
            continue
        texts.append(text)
        used += len(text)
    return texts


def _check(condition: bool, what: str, failures: list[str]) -> None:
    if not condition:
        failures.append(what)


def verify(out_dir: Path, ranks: dict[bytes, int], corpus: Iterable[str] | None = None) -> dict[str, Any]:
    """Load the saved directory with ``AutoTokenizer`` and check it; raises listing every failed check."""
    import unicodedata

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(out_dir))
    failures: list[str] = []
    _check(
        type(tok).__name__ == "Qwen2TokenizerFast",
        f"class {type(tok).__name__} != Qwen2TokenizerFast",
        failures,
    )
    _check(
        tok.backend_tokenizer.get_vocab_size(with_added_tokens=False) == BASE_VOCAB_SIZE,
        f"base vocab {tok.backend_tokenizer.get_vocab_size(with_added_tokens=False)} != {BASE_VOCAB_SIZE}",
        failures,
    )
    _check(
        len(tok) == BASE_VOCAB_SIZE + len(QWEN3_ADDED_TOKENS),
        f"len(tokenizer) {len(tok)} != {BASE_VOCAB_SIZE + len(QWEN3_ADDED_TOKENS)}",
        failures,
    )
    for offset, token in enumerate(QWEN3_ADDED_TOKENS):
        got = tok.convert_tokens_to_ids(token)
        _check(
            got == SPECIAL_START_ID + offset,
            f"{token} -> {got}, expected {SPECIAL_START_ID + offset}",
            failures,
        )
        _check(
            tok.encode(token, add_special_tokens=False) == [SPECIAL_START_ID + offset],
            f"{token} does not encode to one id",
            failures,
        )
    for token, expected in EXPECTED_ADDED_IDS.items():
        _check(
            tok.convert_tokens_to_ids(token) == expected, f"{token} is not Qwen3's id {expected}", failures
        )
    _check(
        tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>" and tok.bos_token is None,
        f"eos/pad/bos {tok.eos_token!r}/{tok.pad_token!r}/{tok.bos_token!r}",
        failures,
    )
    for text, expected in KNOWN_ENCODINGS.items():
        got = tok.encode(text, add_special_tokens=False)
        _check(got == expected, f"encode({text!r}) = {got}, Qwen2 gives {expected}", failures)
    for text in ROUND_TRIP_TEXTS:
        back = tok.decode(tok.encode(text, add_special_tokens=False))
        _check(
            back == unicodedata.normalize("NFC", text),
            f"round trip changed {text[:40]!r} -> {back[:40]!r}",
            failures,
        )
    texts = list(corpus if corpus is not None else reference_corpus())
    compared = mismatched = 0
    for text, enc in zip(
        texts, tok.backend_tokenizer.encode_batch_fast(texts, add_special_tokens=False), strict=True
    ):
        if any(token in text for token in QWEN3_ADDED_TOKENS):  # added tokens are not in the BPE reference
            continue
        compared += len(enc.ids)
        expected_ids = reference_encode(unicodedata.normalize("NFC", text), ranks)
        if enc.ids != expected_ids:
            mismatched += 1
            failures.append(f"BPE segmentation differs from the tiktoken-style reference on {text[:60]!r}")
    if failures:
        raise RuntimeError(
            f"{out_dir}: the Qwen-vocab tokenizer failed {len(failures)} check(s):\n  - "
            + "\n  - ".join(failures[:20])
        )
    return {
        "vocab": len(tok),
        "base_vocab": BASE_VOCAB_SIZE,
        "reference_tokens_compared": compared,
        "reference_texts_mismatched": mismatched,
        "known_encodings": len(KNOWN_ENCODINGS),
    }


# ------------------------------------------------------------------------------------------------ build


def recipe_hash() -> str:
    """Hash of what determines the directory's bytes; a change forces a rebuild."""
    recipe = {
        "version": RECIPE_VERSION,
        "tiktoken_sha256": TIKTOKEN_SHA256,
        "added": list(QWEN3_ADDED_TOKENS),
        "template": QWEN3_CHAT_TEMPLATE,
        "regex": QWEN2_PRETOKENIZE_REGEX,
        "max_len": MODEL_MAX_LENGTH,
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode("utf-8")).hexdigest()


def _is_complete(out_dir: Path, expected: str) -> bool:
    try:
        recorded = json.loads((out_dir / RECIPE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return recorded.get("recipe_hash") == expected and (out_dir / "tokenizer.json").is_file()


def build_qwen_vocab_tokenizer(out_dir: Path = DEFAULT_OUT, *, wheel_dir: Path = DEFAULT_WHEEL_DIR) -> Path:
    """Build (or reuse) the verified Qwen-vocabulary tokenizer directory; returns ``out_dir``."""
    out_dir = Path(out_dir)
    expected = recipe_hash()
    if _is_complete(out_dir, expected):
        return out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    with file_lock(out_dir):
        if _is_complete(out_dir, expected):
            return out_dir
        (out_dir / RECIPE_FILE).unlink(missing_ok=True)
        source = extract_tiktoken(download_wheel(wheel_dir), wheel_dir)
        ranks = load_ranks(source)
        if len(ranks) != BASE_VOCAB_SIZE:
            raise RuntimeError(f"{source}: {len(ranks)} ranks, expected {BASE_VOCAB_SIZE}")
        save_tokenizer(build_raw_tokenizer(ranks), out_dir)
        checks = verify(out_dir, ranks)
        record = {
            "recipe_hash": expected,
            "source": f"{WHEEL_NAME}:{TIKTOKEN_MEMBER}",
            "tiktoken_sha256": TIKTOKEN_SHA256,
            "verification": checks,
        }
        atomic_write_text(out_dir / RECIPE_FILE, json.dumps(record, indent=2, sort_keys=True) + "\n")
    logger.info("built the Qwen-vocabulary tokenizer at %s", out_dir)
    return out_dir


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--wheel-dir", type=Path, default=DEFAULT_WHEEL_DIR)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    out = build_qwen_vocab_tokenizer(args.out, wheel_dir=args.wheel_dir)
    sys.stdout.write((out / RECIPE_FILE).read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
