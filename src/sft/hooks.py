"""Project hooks: validate the selected config before any node runs."""

from __future__ import annotations

import logging
import os

from kedro.framework.hooks import hook_impl

from sft.config.loader import config_path, load_selected_config

logger = logging.getLogger(__name__)


class SftHooks:
    @hook_impl
    def after_context_created(self, context) -> None:  # Kedro passes a KedroContext
        # Offline-safe defaults; an explicit user setting wins.
        os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
        os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
        cfg = load_selected_config()  # raises ConfigError with every problem listed
        logger.info("sft config: %s (source.type=%s)", config_path(), cfg.input.source.type)
