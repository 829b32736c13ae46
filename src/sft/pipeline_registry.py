"""Pipelines: `kedro run --pipeline=convert` converts and registers; `kedro run` runs the whole stage."""

from __future__ import annotations

from kedro.pipeline import Pipeline

from sft.pipelines import convert, register, report, train


def register_pipelines() -> dict[str, Pipeline]:
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
