"""Register the dataset in LLaMA-Factory's dataset_info.json."""

from __future__ import annotations

import logging
from typing import Any

from sft.config.schema import RuntimeInput
from sft.rules.render import dataset_info_entry

logger = logging.getLogger(__name__)


def register_dataset(
    dataset_info: dict[str, Any], lf_manifest: dict[str, Any], settings: RuntimeInput
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The entry for this dataset, and a record of what changed (new / unchanged / updated old -> new)."""
    key = settings.dataset_key
    entry = lf_manifest.get("registration", {}).get("entry") or dataset_info_entry(
        f"{settings.conversion.data_name}.json"
    )
    old = dataset_info.get(key)
    if old == entry:
        change = "unchanged"
        logger.info("dataset_info.json: entry '%s' is up to date", key)
    elif old is None:
        change = "new"
        logger.info(
            "dataset_info.json: registered '%s' -> %s", key, entry.get("file_name") or entry.get("hf_hub_url")
        )
    else:
        change = "updated"
        logger.warning("dataset_info.json: entry '%s' changed: %s -> %s", key, old, entry)
    record = {
        "dataset_key": key,
        "change": change,
        "entry": entry,
        "previous": old,
        "rows": lf_manifest.get("rows"),
    }
    return {key: entry}, record
