"""``conversion.pretokenize``: LLaMA-Factory's pre-tokenized dataset (``tokenized_path``), made in the convert stage.

LLaMA-Factory 0.9.5 (``data/loader.py::get_dataset``) loads a ``tokenized_path`` that holds a saved
``DatasetDict`` with ``load_from_disk`` and skips its own tokenization ("Loaded tokenized dataset from ...");
so the GPU node does not spend its first minutes tokenizing. The ids come from the single token pass
(``sft.report.tokens.token_stats`` with ``ids_sink``): LLaMA-Factory's template pieces, batch-encoded once,
then LLaMA-Factory's own supervised cutoff/label rules (``tokens.supervised_ids``). The columns and their
types are the ones ``SupervisedDatasetProcessor.preprocess_dataset`` produces, in the same row order, without
the rows LLaMA-Factory drops; tests compare it with LLaMA-Factory's own preprocessing byte for byte.

Rows go to an Arrow stream next to the target while the pass runs (bounded memory: nothing is held), and
the final dataset is assembled from it after the over-length policy has decided which rows stay.

LLaMA-Factory ignores every other data argument when it loads a tokenized dataset, so the directory carries
``sft_pretokenized.json`` (template, cutoff, tokenizer files, rows hash): the training YAML only points at
it when that key matches the run's settings (``matching_tokenized_path``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

KEY_FILE = "sft_pretokenized.json"
_BATCH_ROWS = 64


def tokenized_path(dataset_dir: Path | str, data_name: str) -> Path:
    """Where the pre-tokenized dataset of ``data_name`` lives (next to the LLaMA-Factory file)."""
    return Path(dataset_dir) / f"{data_name}.tokenized"


def unsupported_reason(training: Any) -> str | None:
    """Why LLaMA-Factory would not train on a pre-tokenized dataset made this way (None: it would)."""
    options = {**getattr(training, "extra_options", {})}
    if options.get("packing") or options.get("neat_packing"):
        return "training.packing: LLaMA-Factory packs while tokenizing; pretokenize writes unpacked rows"
    if float(options.get("val_size") or 0) > 0:
        return "training.val_size: LLaMA-Factory splits before tokenizing; pretokenize writes one train split"
    if options.get("streaming"):
        return "training.streaming: a streamed dataset is tokenized on the fly"
    if training.stage != "sft":
        return f"training.stage {training.stage!r}: pretokenize writes supervised (sft) rows"
    return None


class IdsSpool:
    """(row index, input_ids, labels) appended in row order to an Arrow stream file in ``directory``."""

    def __init__(self, directory: Path) -> None:
        import pyarrow as pa

        directory.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix=".ids-", suffix=".arrow", dir=directory)
        os.close(handle)
        self.path = Path(name)
        self._schema = pa.schema(
            [("index", pa.int64()), ("input_ids", pa.list_(pa.int64())), ("labels", pa.list_(pa.int64()))]
        )
        self._sink = pa.OSFile(str(self.path), "wb")
        self._writer = pa.ipc.new_stream(self._sink, self._schema)
        self._rows: list[tuple[int, np.ndarray, np.ndarray]] = []
        self.count = 0

    def add(self, index: int, input_ids: np.ndarray, labels: np.ndarray) -> None:
        self._rows.append((index, input_ids, labels))
        self.count += 1
        if len(self._rows) >= _BATCH_ROWS:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa

        if not self._rows:
            return
        indices = pa.array([r[0] for r in self._rows], pa.int64())
        columns = [indices]
        for position in (1, 2):
            arrays = [r[position] for r in self._rows]
            offsets = np.zeros(len(arrays) + 1, dtype=np.int32)
            np.cumsum([len(a) for a in arrays], out=offsets[1:])
            values = np.concatenate(arrays) if arrays else np.zeros(0, np.int64)
            columns.append(pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, pa.int64())))
        self._writer.write_batch(pa.record_batch(columns, schema=self._schema))
        self._rows = []

    def close(self) -> None:
        self._flush()
        self._writer.close()
        self._sink.close()

    def iter_rows(self) -> Iterator[tuple[int, list[int], list[int]]]:
        import pyarrow as pa

        with pa.memory_map(str(self.path)) as source:
            for batch in pa.ipc.open_stream(source):
                columns = batch.to_pydict()
                yield from zip(columns["index"], columns["input_ids"], columns["labels"], strict=True)

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


def _features() -> Any:
    """The features LLaMA-Factory's supervised preprocessing gives a text-only dataset (``datasets`` stores
    ``input_ids`` as int32 and ``attention_mask`` as int8: its OptimizedTypedSequence for those column names)."""
    from datasets import Features, Sequence, Value

    return Features(
        {
            "input_ids": Sequence(Value("int32")),
            "attention_mask": Sequence(Value("int8")),
            "labels": Sequence(Value("int64")),
            "images": Value("null"),
            "videos": Value("null"),
            "audios": Value("null"),
        }
    )


def write_tokenized(
    spool: IdsSpool,
    keep: list[int],
    replacements: Mapping[int, tuple[np.ndarray, np.ndarray]],
    out_dir: Path,
    key: dict[str, Any],
    *,
    max_samples: int | None = None,
) -> dict[str, Any]:
    """The DatasetDict ``{"train": ...}`` of the kept rows (in order) at ``out_dir``, replaced atomically.

    ``keep`` are input row indices; ``replacements`` the ids of rows the over-length policy cut. Rows without
    ids (LLaMA-Factory drops them) are left out,
    like LLaMA-Factory does; ``max_samples`` keeps the first N written rows, as LLaMA-Factory selects them.
    """
    from datasets import Dataset, DatasetDict
    from datasets.arrow_writer import ArrowWriter

    spool.close()
    wanted = keep if max_samples is None else keep[:max_samples]
    position = {index: order for order, index in enumerate(wanted)}
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    rows = 0
    tokens = 0
    try:
        arrow_file = staging / "rows.arrow"
        with ArrowWriter(features=_features(), path=str(arrow_file)) as writer:
            pending = iter(sorted(position))  # spool order == input order == kept order
            next_index = next(pending, None)
            for index, input_ids, labels in spool.iter_rows():
                while next_index is not None and next_index < index:
                    next_index = next(pending, None)  # a kept row without ids: LLaMA-Factory drops it too
                if next_index != index:
                    continue
                if index in replacements:  # cut by the over-length policy: its re-counted ids
                    input_ids, labels = list(replacements[index][0]), list(replacements[index][1])
                writer.write(
                    {
                        "input_ids": input_ids,
                        "attention_mask": [1] * len(input_ids),
                        "labels": labels,
                        "images": None,
                        "videos": None,
                        "audios": None,
                    }
                )
                rows += 1
                tokens += len(input_ids)
                next_index = next(pending, None)
            writer.finalize()
        dataset = Dataset.from_file(str(arrow_file))
        target = staging / "dataset"
        DatasetDict({"train": dataset}).save_to_disk(str(target))
        del dataset
        summary = {**key, "rows": rows, "tokens": tokens}
        (target / KEY_FILE).write_text(json.dumps(summary, indent=1, sort_keys=True))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        target.rename(out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        spool.discard()
    return {"path": str(out_dir), "rows": rows, "tokens": tokens}


def matching_tokenized_path(dataset_dir: Path | str, data_name: str, key: Mapping[str, Any]) -> Path | None:
    """The pre-tokenized dataset when it was made with ``key`` (template, cutoff, tokenizer, options)."""
    path = tokenized_path(dataset_dir, data_name)
    try:
        recorded = json.loads((path / KEY_FILE).read_text())
    except (OSError, ValueError):
        return None
    same = all(json.loads(json.dumps(recorded.get(k))) == json.loads(json.dumps(v)) for k, v in key.items())
    return path if same else None
