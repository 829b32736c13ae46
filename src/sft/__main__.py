"""`python -m sft` / the `sft` console script: Kedro's project CLI plus sft's own commands."""

from __future__ import annotations

import sys
from pathlib import Path

from kedro.framework.cli.utils import find_run_command
from kedro.framework.project import configure_project


def main(*args, **kwargs) -> None:  # noqa: ANN002, ANN003
    package_name = Path(__file__).parent.name
    configure_project(package_name)
    if sys.argv[1:2] == ["dryrun"]:
        from sft.preflight.dryrun import main as dryrun_main

        sys.exit(dryrun_main(sys.argv[2:]))
    if sys.argv[1:2] == ["cache"]:
        from sft.convert.cache_cli import main as cache_main

        sys.exit(cache_main(sys.argv[2:]))
    if sys.argv[1:2] == ["dashboard"]:
        from sft.dashboard.cli import main as dashboard_main

        sys.exit(dashboard_main(sys.argv[2:]))
    run = find_run_command(package_name)
    run(*args, **kwargs)


if __name__ == "__main__":
    main()
