"""Pieces every pipeline shares."""

from __future__ import annotations

from typing import Any

from kedro.pipeline import Node

from sft.config.credentials import Credentials, resolve_credentials
from sft.config.loader import load_selected_config, project_root
from sft.config.schema import RuntimeInput


def validate_settings(
    source: dict[str, Any],
    conversion: dict[str, Any],
    dataset: dict[str, Any],
    model: dict[str, Any],
    training: dict[str, Any],
    infrastructure: dict[str, Any],
    experiment: dict[str, Any],
) -> RuntimeInput:
    """Re-validate the parameters (config.yaml plus any --params overrides) against the schema.

    Credentials are deliberately not Kedro parameters (they would show up in logs and kedro-viz);
    they are read from the environment / conf/local / the config file when needed.
    """
    return RuntimeInput.model_validate(
        {
            "source": source,
            "conversion": conversion,
            "dataset": dataset,
            "model": model,
            "training": training,
            "infrastructure": infrastructure,
            "experiment": experiment,
            "credentials": load_selected_config().input.credentials.model_dump(),
        }
    )


def run_credentials() -> Credentials:
    return resolve_credentials(load_selected_config().input.credentials, project_root())


def settings_node() -> Node:
    return Node(
        validate_settings,
        inputs=[
            "params:source",
            "params:conversion",
            "params:dataset",
            "params:model",
            "params:training",
            "params:infrastructure",
            "params:experiment",
        ],
        outputs="run_settings",
        name="validate_settings_node",
        tags=["settings"],
    )
