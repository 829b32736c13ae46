"""report: the written dataset -> token statistics, template fidelity gate, stats.json, card and plots.

Runs after convert and before train: ``data_check`` is only written when the fidelity check passes. It reads
what the convert side's single token pass handed over (``conversion_token_samples``: per-sample numbers and
the fidelity report, checked against the bytes of the written file), never the dataset itself; only a hand-over that does
not match the written rows makes it stream the rows from the file and count them.
"""

from kedro.pipeline import Node, Pipeline

from sft.pipelines.common import settings_node
from sft.pipelines.report.nodes import (
    build_dataset_stats,
    check_fidelity,
    compute_token_statistics,
    enforce_data_checks,
    plot_dataset,
    render_dataset_card,
)


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            settings_node(),
            Node(
                compute_token_statistics,
                inputs=[
                    "conversion_token_samples",
                    "conversion_report",
                    "run_settings",
                    "params:project_root",
                    "params:paths",
                ],
                outputs=["dataset_sample_stats", "dataset_token_summary"],
                name="token_statistics_node",
                tags=["report", "data_check"],
            ),
            Node(
                check_fidelity,
                inputs=[
                    "conversion_token_samples",
                    "conversion_report",
                    "run_settings",
                    "params:project_root",
                    "params:paths",
                ],
                outputs="template_fidelity_report",
                name="template_fidelity_node",
                tags=["report", "data_check"],
            ),
            Node(
                enforce_data_checks,
                inputs=[
                    "template_fidelity_report",
                    "dataset_token_summary",
                    "run_settings",
                    "params:paths.report_dir",
                ],
                outputs="data_check",
                name="enforce_data_checks_node",
                tags=["report", "data_check"],
            ),
            Node(
                build_dataset_stats,
                inputs=[
                    "dataset_sample_stats",
                    "dataset_token_summary",
                    "conversion_report",
                    "conversion_rejects",
                    "template_fidelity_report",
                    "repo_exclusions",
                    "run_settings",
                    "params:paths.job_dir",
                ],
                outputs="dataset_stats",
                name="dataset_stats_node",
                tags=["report"],
            ),
            Node(
                render_dataset_card,
                inputs="dataset_stats",
                outputs="dataset_card",
                name="dataset_card_node",
                tags=["report"],
            ),
            Node(
                plot_dataset,
                inputs=["dataset_sample_stats", "dataset_stats"],
                outputs="dataset_plots",
                name="dataset_plots_node",
                tags=["report"],
            ),
        ]
    )
