"""Pipelines: `kedro run --pipeline=convert` converts and registers; `kedro run` runs the whole stage."""

from __future__ import annotations

from kedro.pipeline import Pipeline

from sft.pipelines import convert, register, report, train


def _is_follower_node() -> bool:
    """Node 1.. of a multi-node run (sft.train.multinode): it trains only, after node 0 registered the data."""
    import os

    from sft.config.loader import ConfigError, load_selected_config
    from sft.train.multinode import is_follower

    try:
        infra = load_selected_config().input.infrastructure
    except (ConfigError, OSError):
        return False  # an unreadable config fails with its own message when a node needs it
    return is_follower(infra, os.environ)


def register_pipelines() -> dict[str, Pipeline]:
    if _is_follower_node():
        follower = train.create_follower_pipeline()
        return {"train": follower, "__default__": follower}
    convert_pipeline = convert.create_pipeline()
    register_pipeline = register.create_pipeline()
    report_pipeline = report.create_pipeline()
    train_pipeline = train.create_pipeline()
    return {
        "convert": convert_pipeline + register_pipeline + report_pipeline,
        "register": register_pipeline,
        "report": report_pipeline,
        "train": train_pipeline,
        "__default__": convert_pipeline + register_pipeline + report_pipeline + train_pipeline,
    }
