"""hf_lf against a real Hub cache laid out on disk (real huggingface_hub / datasets code, offline), the
single-file download, and the exact dataset_info.json entry for a hub dataset that is not cached."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from sft.config.credentials import Credentials
from sft.engine.ready import prepare_ready_dataset
from sft.sources.handle import SourceHandle
from sft.sources.hub import HubAccessError, HubDatasetNotCachedError
from tests.sources_ready.conftest import role_content_row, sharegpt_row
from tests.sources_ready.hubcache import jsonl, lay_out_dataset, lay_out_datasets_cache

REPO = "own/tiny"
BAD = {"conversations": [{"from": "gpt", "value": "a"}, {"from": "human", "value": "q"}]}
SHAREGPT_ENTRY_COLUMNS = {"messages": "conversations", "system": "system", "tools": "tools"}
README_WITH_CONFIGS = b"""---
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train.jsonl
  - split: test
    path: data/test.jsonl
- config_name: small
  data_files:
  - split: train
    path: small/train.jsonl
---
# tiny
"""


# The dataset_info.json tags of an OpenAI-style ``messages`` dataset as LLaMA-Factory reads it.
MESSAGES_TAGS = {
    "role_tag": "role",
    "content_tag": "content",
    "user_tag": "user",
    "assistant_tag": "assistant",
    "system_tag": "system",
}


@pytest.fixture
def hf_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private, empty HF home (Hub cache + datasets cache), offline."""
    home = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(home / "datasets"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    return home


@pytest.fixture
def cached_repo(hf_home: Path) -> Path:
    return lay_out_dataset(
        hf_home / "hub",
        REPO,
        {
            "README.md": README_WITH_CONFIGS,
            "data/train.jsonl": jsonl([sharegpt_row(0), BAD, sharegpt_row(2)]),
            "data/test.jsonl": jsonl([sharegpt_row(10), sharegpt_row(11)]),
            "small/train.jsonl": jsonl([role_content_row(20)]),
        },
    )


def _hub_settings(**source: Any) -> Any:
    from tests.sources_ready.conftest import make_settings

    conversion = source.pop("conversion", {})
    return make_settings({"type": "hf_lf", "hf_hub_url": REPO, **source}, **conversion)


def _run(settings: Any, root: Path) -> Any:
    handle = SourceHandle(
        type="hf_lf", config=settings.source, extra={"hf_hub_url": settings.source.hf_hub_url}
    )
    return prepare_ready_dataset(handle, settings, root, credentials=Credentials())


def _tasks(result: Any) -> list[str]:
    return [r["conversations"][0]["value"] for r in result.lf_rows]


# ------------------------------------------------------------------------------------- cached, offline


def test_cached_hub_dataset_is_loaded_offline_validated_and_registered_as_a_copy(
    cached_repo: Path, proj: Path
) -> None:
    result = _run(_hub_settings(), proj)

    assert _tasks(result) == ["task 0", "task 2"]
    assert result.funnel["source"]["kind"] == "hub_snapshot"
    assert str(cached_repo) in result.funnel["source"]["notes"][0]
    assert result.funnel["funnel"]["rows_found"] == 3 and result.funnel["funnel"]["rows_invalid"] == 1
    assert [r["trial_name"] for r in result.rejects] == ["own__tiny#row1"]
    assert result.rejects[0]["detail"].startswith("hf://own/tiny:train row 1: drop:invalid_role_tag")
    assert result.funnel["registration"]["entry"] == {
        "file_name": str(proj / "artifacts" / "data" / "lf_data" / "ready_test.json"),
        "formatting": "sharegpt",
        "columns": SHAREGPT_ENTRY_COLUMNS,
    }


def test_split_and_subset_are_honoured_by_the_real_loader(cached_repo: Path, proj: Path) -> None:
    test_split = _run(_hub_settings(hf_split="test"), proj)
    assert _tasks(test_split) == ["task 10", "task 11"]
    assert test_split.rejects == []
    # Offline, datasets cannot load a Hub id from the file cache at train time: the copy is registered.
    assert test_split.funnel["registration"]["registered"] == "filtered_copy"
    assert "HF_HUB_OFFLINE=1" in test_split.funnel["registration"]["note"]

    small = _run(_hub_settings(hf_subset="small"), proj)
    assert [r["messages"][1]["content"] for r in small.lf_rows] == ["task 20"]
    assert small.funnel["format"]["layout"] == "sharegpt_role_content"
    assert small.funnel["source"]["location"] == "hf://own/tiny[small]:train"


def test_unknown_split_is_a_clear_error(cached_repo: Path, proj: Path) -> None:
    with pytest.raises(HubAccessError, match=r"cannot load split 'validation'.*check source.hf_split"):
        _run(_hub_settings(hf_split="validation"), proj)


def test_cached_and_clean_online_registers_the_native_entry(
    cached_repo: Path, proj: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # online: LLaMA-Factory can load the Hub id at train time
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "0")
    result = _run(_hub_settings(hf_split="test"), proj)
    assert result.funnel["registration"]["entry"] == {
        "hf_hub_url": REPO,
        "split": "test",
        "formatting": "sharegpt",
        "columns": SHAREGPT_ENTRY_COLUMNS,
    }
    assert result.funnel["registration"]["registered"] == "hub"
    assert len(result.lf_rows) == 2  # validated rows are still returned (manifest hash, statistics)


def test_cached_dataset_with_max_instances_is_subsampled_by_us_not_num_samples(
    cached_repo: Path, proj: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "0")
    result = _run(_hub_settings(hf_split="test", conversion={"max_instances": 1, "seed": 3}), proj)
    assert len(result.lf_rows) == 1
    assert "num_samples" not in result.funnel["registration"]["entry"]
    assert result.funnel["registration"]["registered"] == "filtered_copy"
    assert result.funnel["selection"]["drawn_by"] == "sft"


def test_offline_falls_back_to_the_datasets_cache_llamafactory_uses(
    hf_home: Path, proj: Path, tmp_path: Path
) -> None:
    lay_out_datasets_cache(
        hf_home / "datasets", REPO, {"data/train.jsonl": jsonl([sharegpt_row(5), BAD])}, tmp_path / "scratch"
    )
    result = _run(_hub_settings(), proj)
    assert result.funnel["source"]["kind"] == "datasets_cache"
    assert _tasks(result) == ["task 5"]
    assert result.funnel["funnel"]["rows_invalid"] == 1


# ------------------------------------------------------------------------------------- not cached


def test_not_cached_offline_is_a_clear_error_not_a_hang(hf_home: Path, proj: Path) -> None:
    started = time.monotonic()
    with pytest.raises(
        HubDatasetNotCachedError,
        match=r"dataset 'own/absent' .* is not in the local Hub cache .*"
        r"run once online or unset HF_HUB_OFFLINE",
    ):
        _run(_hub_settings(hf_hub_url="own/absent"), proj)
    assert time.monotonic() - started < 30


def test_not_cached_online_registers_the_exact_native_entry(
    hf_home: Path, proj: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "0")
    plain = _run(_hub_settings(hf_hub_url="SWE-Lego/samples_for_llama_factory_sft"), proj)
    assert plain.funnel["registration"]["entry"] == {
        "hf_hub_url": "SWE-Lego/samples_for_llama_factory_sft",
        "formatting": "sharegpt",
        "columns": {"messages": "messages"},
        "tags": MESSAGES_TAGS,
    }
    assert plain.lf_rows == [] and plain.rejects == []

    sampled = _run(
        _hub_settings(
            hf_hub_url="org/data", hf_subset="en", hf_split="validation", conversion={"max_instances": 64}
        ),
        proj,
    )
    assert sampled.funnel["registration"]["entry"] == {
        "hf_hub_url": "org/data",
        "subset": "en",
        "split": "validation",
        "formatting": "sharegpt",
        "columns": {"messages": "messages"},
        "tags": MESSAGES_TAGS,
        "num_samples": 64,
    }
    note = sampled.funnel["registration"]["note"]
    assert "LLaMA-Factory draws the 64 rows itself" in note and "unseeded" in note
    assert sampled.funnel["selection"] | {} == {
        "seed": None,
        "n": 64,
        "available": None,
        "selected": 64,
        "drawn_by": "llamafactory",
        "with_replacement": True,
    }


# ------------------------------------------------------------------------------------- hf_file_name


def test_hf_file_name_is_copied_into_the_data_layer_and_registered(cached_repo: Path, proj: Path) -> None:
    result = _run(_hub_settings(hf_file_name="data/test.jsonl"), proj)
    copy = proj / "artifacts" / "data" / "hf_data" / "own__tiny" / "data" / "test.jsonl"
    assert copy.read_bytes() == (cached_repo / "data" / "test.jsonl").read_bytes()
    assert not copy.is_symlink()
    assert result.funnel["source"]["kind"] == "hub_file"
    assert result.funnel["registration"]["entry"] == {
        "file_name": str(copy),
        "formatting": "sharegpt",
        "columns": SHAREGPT_ENTRY_COLUMNS,
    }


def test_hf_file_name_with_invalid_rows_registers_the_filtered_copy(cached_repo: Path, proj: Path) -> None:
    result = _run(_hub_settings(hf_file_name="data/train.jsonl"), proj)
    assert result.funnel["registration"]["registered"] == "filtered_copy"
    assert result.funnel["funnel"]["rows_invalid"] == 1


def test_hf_file_name_not_cached_offline_is_a_clear_error(hf_home: Path, proj: Path) -> None:
    with pytest.raises(
        HubDatasetNotCachedError,
        match=r"'data/x.jsonl' of dataset 'own/absent' is not in the local "
        r"Hub cache .*run once online or unset HF_HUB_OFFLINE",
    ):
        _run(_hub_settings(hf_hub_url="own/absent", hf_file_name="data/x.jsonl"), proj)


def test_hf_file_name_reuses_an_earlier_download_when_the_cache_is_gone(hf_home: Path, proj: Path) -> None:
    earlier = proj / "artifacts" / "data" / "hf_data" / "own__gone" / "train.jsonl"
    earlier.parent.mkdir(parents=True)
    earlier.write_bytes(jsonl([sharegpt_row(0)]))
    result = _run(_hub_settings(hf_hub_url="own/gone", hf_file_name="train.jsonl"), proj)
    assert "reused the earlier download" in result.funnel["source"]["notes"][0]
    assert result.funnel["registration"]["entry"]["file_name"] == str(earlier)


@pytest.mark.parametrize("bad_name", ["../escape.json", "/etc/passwd", "a/../../b.json"])
def test_hf_file_name_must_stay_inside_the_repo(hf_home: Path, proj: Path, bad_name: str) -> None:
    with pytest.raises(HubAccessError, match="must be a path inside the dataset repo"):
        _run(_hub_settings(hf_file_name=bad_name), proj)
