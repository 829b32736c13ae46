"""The dashboard's HTTP surface: a JSON API over ``RunStore`` / ``DatasetStore``, the static page, and a
restricted raw-file route. Read-only: only GET and HEAD exist.

Every answer goes through the project's ``Scrubber``; every file path through ``ProjectFiles``. Answers
for a run carry an ETag so the page's polling costs a 304 when nothing was written.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

import orjson
import yaml
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.middleware.trustedhost import TrustedHostMiddleware

from sft.dashboard.datasets import DatasetNotFound, DatasetStore, row_turns, run_dataset_ref
from sft.dashboard.runs import RunFolder, RunStore, columns, tail_text
from sft.dashboard.safety import ForbiddenPath, ProjectFiles, Scrubber

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
TEXT_TYPES: dict[str, str] = {
    ".json": "application/json",
    ".jsonl": "text/plain",
    ".log": "text/plain",
    ".txt": "text/plain",
    ".md": "text/plain",
    ".csv": "text/csv",
    ".yaml": "text/plain",
    ".yml": "text/plain",
}
IMAGE_TYPES: dict[str, str] = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}
TEXT_LIMIT = 32 * 1024 * 1024
SECURITY_HEADERS: dict[str, str] = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
        "script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
        "frame-ancestors 'none'"
    ),
}
CSV_COLUMNS: tuple[str, ...] = (
    "step",
    "epoch",
    "loss",
    "eval_loss",
    "lr",
    "grad_norm",
    "tokens_per_sec",
    "step_time_sec",
    "percentage",
    "elapsed_sec",
)
LOOPBACK_HOST_NAMES: list[str] = ["127.0.0.1", "localhost", "[::1]", "::1"]


def _json_sender(scrubber: Scrubber) -> Callable[..., Response]:
    """``send(data, request, etag)``: scrubbed JSON, or 304 when the client already has this ETag."""

    def send(data: Any, request: Request | None = None, etag: str | None = None) -> Response:
        headers = {"ETag": f'"{etag}"'} if etag else {}
        if etag and request is not None and request.headers.get("if-none-match") == f'"{etag}"':
            return Response(status_code=304, headers=headers)
        body = orjson.dumps(scrubber.data(data), option=orjson.OPT_SERIALIZE_NUMPY)
        return Response(body, media_type="application/json", headers=headers)

    return send


def _run_lookup(runs: RunStore, files: ProjectFiles) -> Callable[[str], RunFolder]:
    """``require_run(name)``: the run folder, or a 404 that says where runs are looked for."""

    def require_run(name: str) -> RunFolder:
        run = runs.get(name)
        if run is None:
            raise HTTPException(
                404, f"no run {name!r} under {files.relative(runs.model_root)}/ or in index.yaml"
            )
        return run

    return require_run


def create_app(
    project_dir: str | Path, *, poll_seconds: float = 5.0, allowed_hosts: list[str] | None = None
) -> FastAPI:
    """The dashboard app for one project directory.

    ``allowed_hosts``: Host header values accepted (DNS-rebinding guard when bound to loopback); None
    accepts any.
    """
    files = ProjectFiles.at(project_dir)
    runs = RunStore(files)
    datasets = DatasetStore(files)
    scrubber = Scrubber.for_project(files.root)
    app = FastAPI(title="sft dashboard", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.files, app.state.runs, app.state.datasets, app.state.scrubber = files, runs, datasets, scrubber
    if allowed_hosts:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)

    @app.middleware("http")
    async def read_only_and_headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        if request.method not in ("GET", "HEAD"):
            return PlainTextResponse("read-only dashboard: only GET and HEAD", status_code=405)
        response = await call_next(request)
        for key, value in SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        return response

    send = _json_sender(scrubber)
    require_run = _run_lookup(runs, files)
    register_run_routes(app, runs, datasets, files, scrubber, send, require_run, poll_seconds)
    register_run_file_routes(app, runs, files, scrubber, send, require_run)
    register_dataset_routes(app, datasets, send)
    register_file_routes(app, files, scrubber)

    @app.exception_handler(ForbiddenPath)
    async def forbidden(_request: Request, exc: ForbiddenPath) -> Response:
        logger.warning("refused: %s", exc)
        return PlainTextResponse("forbidden: outside the served folders or a credential", status_code=403)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    return app


def register_run_routes(
    app: FastAPI,
    runs: RunStore,
    datasets: DatasetStore,
    files: ProjectFiles,
    scrubber: Scrubber,
    send: Callable[..., Response],
    require_run: Callable[[str], RunFolder],
    poll_seconds: float,
) -> None:
    """The run list, a run's detail, series and dataset, and the compare CSV."""

    @app.get("/api/health")
    def health() -> Response:
        return send({"ok": True, "project": files.root.name, "poll_seconds": poll_seconds, "read_only": True})

    @app.get("/api/runs")
    def list_runs() -> Response:
        found, problems = runs.discover()
        summaries = [runs.summary(run) for run in found.values()]
        summaries.sort(key=lambda s: (s["status"] != "running", -(_sort_time(s))), reverse=False)
        return send({"runs": summaries, "problems": problems, "model_root": files.relative(runs.model_root)})

    @app.get("/api/runs/{name}")
    def run_detail(name: str) -> Response:
        return send(runs.detail(require_run(name)))

    @app.get("/api/runs/{name}/series")
    def run_series(name: str, request: Request) -> Response:
        run = require_run(name)
        etag = runs.etag(run)
        if request.headers.get("if-none-match") == f'"{etag}"':
            return send(None, request, etag)
        rows = runs.series(run)
        summary = runs.summary(run)
        return send(
            {"name": run.name, "summary": summary, "points": len(rows), "series": columns(rows)},
            request,
            etag,
        )

    @app.get("/api/runs/{name}/dataset")
    def run_dataset(name: str) -> Response:
        run = require_run(name)
        return send(run_dataset_ref(files, datasets, runs.training_yaml_path(run)))

    @app.get("/api/compare.csv")
    def compare_csv(runs_param: Annotated[list[str], Query(alias="runs")]) -> Response:
        names = [n for item in runs_param for n in item.split(",") if n]
        selected = [require_run(n) for n in dict.fromkeys(names)]
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(("run", *CSV_COLUMNS))
        for run in selected:
            for row in runs.series(run):
                writer.writerow((run.name, *("" if row.get(c) is None else row[c] for c in CSV_COLUMNS)))
        filename = "compare_" + "_".join(r.name for r in selected)[:120] + ".csv"
        return Response(
            scrubber.text(buffer.getvalue()),
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )


def register_run_file_routes(
    app: FastAPI,
    runs: RunStore,
    files: ProjectFiles,
    scrubber: Scrubber,
    send: Callable[..., Response],
    require_run: Callable[[str], RunFolder],
) -> None:
    """A run's config, training YAML and console log (scrubbed)."""

    @app.get("/api/runs/{name}/config")
    def run_config(name: str) -> Response:
        run = require_run(name)
        config_path, config_source = runs.config_path(run)
        yaml_path = runs.training_yaml_path(run)
        entry = run.latest_entry
        return send(
            {
                "name": run.name,
                "config": scrubber.config(_load_yaml(config_path)) if config_path else None,
                "config_path": files.relative(config_path) if config_path else None,
                "config_source": config_source,
                "training_yaml": scrubber.config(_load_yaml(yaml_path)) if yaml_path else None,
                "training_yaml_path": files.relative(yaml_path) if yaml_path else None,
                "archive_metadata": scrubber.config(entry.metadata) if entry and entry.metadata else None,
            }
        )

    @app.get("/api/runs/{name}/log")
    def run_log(name: str, lines: Annotated[int, Query(ge=1, le=5000)] = 200) -> Response:
        run = require_run(name)
        path = runs.console_log_path(run)
        if path is None:
            return send(
                {
                    "name": run.name,
                    "path": None,
                    "lines": [],
                    "truncated": False,
                    "note": f"no console log artifacts/logs/{run.name}_*.log",
                }
            )
        files.check(path)
        tail, truncated = tail_text(path, lines)
        return send({"name": run.name, "path": files.relative(path), "lines": tail, "truncated": truncated})


def register_dataset_routes(app: FastAPI, datasets: DatasetStore, send: Callable[..., Response]) -> None:
    def guarded(call: Callable[[], Any]) -> Response:
        try:
            return send(call())
        except DatasetNotFound as exc:
            raise HTTPException(404, str(exc)) from exc
        except IndexError as exc:
            raise HTTPException(404, str(exc)) from exc
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from exc

    @app.get("/api/datasets")
    def list_datasets() -> Response:
        return send(
            {"datasets": [{"name": n, "dataset_keys": datasets.keys_for(n)} for n in datasets.names()]}
        )

    @app.get("/api/datasets/{name}")
    def dataset_overview(name: str) -> Response:
        return guarded(lambda: datasets.overview(name))

    @app.get("/api/datasets/{name}/samples")
    def dataset_samples(
        name: str, offset: Annotated[int, Query(ge=0)] = 0, limit: Annotated[int, Query(ge=1, le=500)] = 50
    ) -> Response:
        return guarded(lambda: datasets.sample_list(name, offset, limit))

    @app.get("/api/datasets/{name}/samples/{position}")
    def dataset_sample(name: str, position: int) -> Response:
        def build() -> dict[str, Any]:
            row = datasets.row(name, position)
            view = (
                row_turns(row)
                if isinstance(row, dict)
                else {"turns": [], "system": None, "tools": [], "meta": {}}
            )
            return {"name": name, "index": position, "count": datasets.index(name).count, **view, "row": row}

        return guarded(build)


def register_file_routes(app: FastAPI, files: ProjectFiles, scrubber: Scrubber) -> None:
    @app.get("/files/{path:path}")
    def raw_file(path: str) -> Response:
        """A file under artifacts/ or data/: images as is, text scrubbed, other types refused."""
        resolved = files.resolve(path)
        if not resolved.is_file():
            raise HTTPException(404, "no such file")
        suffix = resolved.suffix.lower()
        if suffix in IMAGE_TYPES:
            return FileResponse(resolved, media_type=IMAGE_TYPES[suffix])
        if suffix not in TEXT_TYPES:
            raise HTTPException(
                403,
                f"{suffix or 'extension-less'} files are not served "
                f"(only {', '.join(sorted({*TEXT_TYPES, *IMAGE_TYPES}))})",
            )
        if resolved.stat().st_size > TEXT_LIMIT:
            raise HTTPException(413, f"over {TEXT_LIMIT} bytes; use the API views instead")
        text = resolved.read_text(encoding="utf-8", errors="replace")
        if suffix in (".yaml", ".yml"):
            text = _redacted_yaml_text(text, scrubber)
        return Response(scrubber.text(text), media_type=TEXT_TYPES[suffix])


def _redacted_yaml_text(text: str, scrubber: Scrubber) -> str:
    """YAML with secret-looking keys redacted; a file that is not YAML is withheld rather than sent raw."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        return "# not valid YAML; withheld because secret-looking keys could not be redacted\n"
    return yaml.safe_dump(scrubber.config(doc), sort_keys=False, allow_unicode=True, width=4096)


def _load_yaml(path: Path | None) -> Any:
    if path is None:
        return None
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        return {"error": f"{path.name}: unreadable ({exc})"}


def _sort_time(summary: dict[str, Any]) -> float:
    from sft.dashboard.runs import parse_iso

    return parse_iso(summary.get("last_update")) or parse_iso(summary.get("completed_at")) or 0.0
