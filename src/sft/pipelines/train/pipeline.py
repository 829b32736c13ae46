"""train: registered dataset -> LLaMA-Factory run -> runtime_info.output, metrics and curves."""

from kedro.pipeline import Node, Pipeline

from sft.pipelines.common import settings_node
from sft.pipelines.train.nodes import (
    extract_training_metrics,
    plot_training_curves,
    train_model,
    train_model_follower,
    wait_for_registered_dataset,
)


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            settings_node(),
            Node(
                train_model,
                inputs=[
                    "dataset_registration",
                    "data_check",
                    "training_files",
                    "run_settings",
                    "params:project_root",
                ],
                outputs="training_run",
                name="train_model_node",
                tags=["train"],
            ),
            Node(
                extract_training_metrics,
                inputs="training_run",
                outputs="training_metrics",
                name="extract_training_metrics_node",
                tags=["train", "report"],
            ),
            Node(
                plot_training_curves,
                inputs=["training_run", "trainer_logs"],
                outputs="training_curves_plot",
                name="plot_training_curves_node",
                tags=["train", "report"],
            ),
        ]
    )


def create_follower_pipeline(**kwargs) -> Pipeline:
    """Nodes 1.. of a multi-node run: wait for node 0's registered dataset, then train.

    No conversion, registration, reports or persisted outputs: node 0 writes those once (sft.train.multinode).
    """
    return Pipeline(
        [
            settings_node(),
            Node(
                wait_for_registered_dataset,
                inputs=["run_settings", "params:paths.lf_dir"],
                outputs="follower_dataset_ready",
                name="wait_for_registered_dataset_node",
                tags=["train"],
            ),
            Node(
                train_model_follower,
                inputs=[
                    "follower_dataset_ready",
                    "training_files",
                    "run_settings",
                    "params:project_root",
                ],
                outputs="follower_training_run",
                name="train_model_follower_node",
                tags=["train"],
            ),
        ]
    )
