"""HF_TOKEN (or credentials.hf_token) is passed to huggingface_hub as ``token=`` and never appears in any file
the run writes (rows, rejects, report, dataset_info.json, downloads) nor in the log."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from sft.config.credentials import resolve_credentials
from sft.datasets.files import AtomicJSONDataset, AtomicJSONLinesDataset
from sft.datasets.llamafactory import DatasetInfoDataset, LlamaFactoryDataset
from sft.engine.ready import prepare_ready_dataset
from sft.sources.handle import SourceHandle
from tests.sources_ready.conftest import make_settings, openai_row, sharegpt_row, write_json
from tests.sources_ready.hubcache import jsonl, lay_out_dataset

TOKEN = "hf_" + "Zq9Xw2" * 6  # the shape of a real Hugging Face token


def _save_like_the_catalog(result: Any, settings: Any, root: Path, tag: str) -> None:
    """Write everything the convert + register pipelines write, through the catalog's own dataset classes."""
    lf_dir = root / "artifacts" / "data" / "lf_data"
    LlamaFactoryDataset(str(lf_dir / f"{settings.conversion.data_name}.json")).save(result.lf_rows)
    AtomicJSONLinesDataset(str(root / "data" / "08_reporting" / tag / "im.jsonl")).save(result.im_rows)
    AtomicJSONLinesDataset(str(root / "data" / "08_reporting" / tag / "rejects.jsonl")).save(result.rejects)
    AtomicJSONDataset(str(root / "data" / "08_reporting" / tag / "funnel.json")).save(result.funnel)
    DatasetInfoDataset(str(lf_dir / "dataset_info.json")).save({tag: result.funnel["registration"]["entry"]})


def _files_containing(directory: Path, needle: bytes) -> list[Path]:
    return [
        p for p in directory.rglob("*") if p.is_file() and not p.is_symlink() and needle in p.read_bytes()
    ]


def test_token_is_passed_to_the_hub_and_written_nowhere(
    tmp_path: Path, proj: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import huggingface_hub

    hf_home = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("HF_HUB_CACHE", str(hf_home / "hub"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(hf_home / "datasets"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    lay_out_dataset(
        hf_home / "hub", "own/tiny", {"data/train.jsonl": jsonl([sharegpt_row(0), sharegpt_row(1)])}
    )

    seen_tokens: list[Any] = []
    for name in ("hf_hub_download", "snapshot_download"):
        real = getattr(huggingface_hub, name)

        def spy(*args: Any, _real: Any = real, **kwargs: Any) -> Any:
            seen_tokens.append(kwargs.get("token"))
            return _real(*args, **kwargs)

        monkeypatch.setattr(huggingface_hub, name, spy)

    # User data that happens to contain the token (an agent that ran `env`): it must be redacted too.
    leaky = sharegpt_row(2)
    leaky["conversations"][2]["value"] = f"HF_TOKEN={TOKEN}\nPATH=/usr/bin"
    inputs = tmp_path / "inputs"
    local = write_json(inputs / "local.json", [sharegpt_row(0), leaky])
    oa = write_json(inputs / "oa.json", [openai_row(0), openai_row(1, tools=f"not json {TOKEN}")])

    cases = {
        "local_as_is": make_settings({"type": "local_lf", "lf_path": str(local)}, data_name="a"),
        "local_normalised": make_settings(
            {"type": "local_lf", "lf_path": str(local)},
            data_name="b",
            normalize_ready_data=True,
            scrub_secrets=False,
        ),
        "openai_with_bad_row": make_settings({"type": "local_lf", "lf_path": str(oa)}, data_name="c"),
        "hub_cached": make_settings({"type": "hf_lf", "hf_hub_url": "own/tiny"}, data_name="d"),
        "hub_file": make_settings(
            {"type": "hf_lf", "hf_hub_url": "own/tiny", "hf_file_name": "data/train.jsonl"}, data_name="e"
        ),
    }
    with caplog.at_level(logging.DEBUG):
        for tag, settings in cases.items():
            credentials = resolve_credentials(settings.credentials, proj)
            assert credentials.hf_token == TOKEN and credentials.hf_source == "env"
            path = Path(settings.source.lf_path) if settings.source.type == "local_lf" else None
            handle = SourceHandle(type=settings.source.type, config=settings.source, path=path)
            result = prepare_ready_dataset(handle, settings, proj, credentials=credentials)
            _save_like_the_catalog(result, settings, proj, tag)
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # the not-cached native entry (no network is used)
        monkeypatch.setenv("HF_DATASETS_OFFLINE", "0")
        settings = make_settings(
            {"type": "hf_lf", "hf_hub_url": "own/private", "hf_subset": "x"}, data_name="f"
        )
        result = prepare_ready_dataset(
            SourceHandle(type="hf_lf", config=settings.source),
            settings,
            proj,
            credentials=resolve_credentials(settings.credentials, proj),
        )
        _save_like_the_catalog(result, settings, proj, "hub_native")

    assert seen_tokens and all(token == TOKEN for token in seen_tokens)
    written = [p for p in proj.rglob("*") if p.is_file()]
    assert len(written) > 20  # the check below looked at real output
    assert _files_containing(proj, TOKEN.encode()) == []
    assert _files_containing(hf_home, TOKEN.encode()) == []
    assert TOKEN not in caplog.text
    redacted = (proj / "artifacts" / "data" / "lf_data" / "a.json").read_text()
    assert "HF_TOKEN=[REDACTED:credential]" in redacted
