"""Command line of the dashboard: parse flags, warn about a non-loopback bind, run uvicorn.

Why loopback by default: the dashboard has no authentication and shows training data and configs (the
reference's ``0.0.0.0`` default plus its public tunnel exposed both). Binding elsewhere is allowed, with a
warning, for a trusted network; an SSH tunnel (``ssh -L 8091:127.0.0.1:8091 host``) is the safer way.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from sft.dashboard.safety import is_loopback

logger = logging.getLogger("sft.dashboard")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8091


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sft dashboard",
        description="Read-only live dashboard of the project's training runs (artifacts/model, index.yaml) "
        "and datasets (artifacts/data/lf_data).",
    )
    parser.add_argument(
        "--host",
        default=os.environ.get("SFT_DASHBOARD_HOST", DEFAULT_HOST),
        help=f"interface to bind (default {DEFAULT_HOST}; anything else is reachable from "
        "other machines and has no authentication)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("SFT_DASHBOARD_PORT", DEFAULT_PORT)),
        help=f"TCP port (default {DEFAULT_PORT})",
    )
    parser.add_argument(
        "--project-dir",
        type=Path,
        default=None,
        help="project root holding artifacts/ and data/ (default: $SFT_PROJECT_ROOT or the "
        "nearest parent with pyproject.toml and conf/)",
    )
    parser.add_argument(
        "--poll-seconds", type=float, default=5.0, help="how often the page refreshes live runs (default 5)"
    )
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    return parser


def resolve_project_dir(value: Path | None) -> Path:
    """The given directory, else sft's own project-root rule."""
    if value is not None:
        return value.expanduser().resolve()
    from sft.config.loader import project_root

    return project_root()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    project_dir = resolve_project_dir(args.project_dir)
    if not project_dir.is_dir():
        logger.error(
            "--project-dir %s does not exist; pass the sft project root (it holds artifacts/)", project_dir
        )
        return 2
    if not (project_dir / "artifacts").is_dir():
        logger.warning(
            "%s has no artifacts/ folder yet: the dashboard will show no runs until training starts",
            project_dir,
        )
    loopback = is_loopback(args.host)
    if not loopback:
        logger.warning(
            "dashboard bound to %s:%d, NOT loopback: anyone who can reach this port can read run metrics, "
            "configs (redacted) and the training data, without authentication. Prefer --host 127.0.0.1 and an "
            "SSH tunnel.",
            args.host,
            args.port,
        )
    import uvicorn

    from sft.dashboard.app import LOOPBACK_HOST_NAMES, create_app

    app = create_app(
        project_dir, poll_seconds=args.poll_seconds, allowed_hosts=LOOPBACK_HOST_NAMES if loopback else None
    )
    shown = f"[{args.host}]" if ":" in args.host else args.host
    logger.info("serving %s read-only on http://%s:%d/", project_dir, shown, args.port)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=False,
        server_header=False,
        proxy_headers=False,
    )
    return 0
