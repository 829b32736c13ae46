"""register: LF rows on disk -> an entry in dataset_info.json (locked, atomic)."""

from kedro.pipeline import Node, Pipeline

from sft.pipelines.common import settings_node
from sft.pipelines.register.nodes import register_dataset


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            settings_node(),
            Node(
                register_dataset,
                inputs=["dataset_info", "lf_manifest", "run_settings"],
                outputs=["dataset_info_update", "dataset_registration"],
                name="register_dataset_node",
                tags=["register"],
            ),
        ]
    )
