"""train: registered dataset -> LLaMA-Factory run -> runtime_info.output, metrics and curves."""

from kedro.pipeline import Node, Pipeline

from sft.pipelines.common import settings_node
from sft.pipelines.train.nodes import extract_training_metrics, plot_training_curves, train_model


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            settings_node(),
            Node(
                train_model,
                inputs=["dataset_registration", "data_check", "run_settings", "params:config_path", "params:project_root"],
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
                inputs="training_run",
                outputs="training_curves_plot",
                name="plot_training_curves_node",
                tags=["train", "report"],
            ),
        ]
    )
