"""convert: source -> validated, filtered, de-duplicated LLaMA-Factory rows (+ IM rows, rejects, funnel)."""

from kedro.pipeline import Node, Pipeline

from sft.pipelines.common import settings_node
from sft.pipelines.convert.nodes import apply_length_policy, build_dataset, split_conversion_result


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            settings_node(),
            Node(
                build_dataset,
                inputs=[
                    "trajectory_source",
                    "repo_exclusions",
                    "conversion_workspace",
                    "run_settings",
                    "params:project_root",
                    "params:paths.lf_json",
                ],
                outputs="conversion_result",
                name="build_dataset_node",
                tags=["convert"],
            ),
            Node(
                apply_length_policy,
                inputs=["conversion_result", "run_settings", "params:project_root", "params:paths"],
                outputs="conversion_result_sized",
                name="apply_length_policy_node",
                tags=["convert"],
            ),
            Node(
                split_conversion_result,
                inputs="conversion_result_sized",
                outputs=[
                    "lf_dataset",
                    "im_dataset",
                    "conversion_rejects",
                    "conversion_report",
                    "lf_manifest",
                    "conversion_token_samples",
                ],
                name="write_dataset_node",
                tags=["convert"],
            ),
        ]
    )
