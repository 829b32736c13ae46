"""Kedro project settings.

config.yaml (or the file named by SFT_CONFIG) is exposed to conf/ through the ``cfg`` resolver, so
`kedro run`, `kedro viz`, notebooks and tests all see the same values; parameters merge softly so that
`kedro run --params conversion.max_instances=8` overrides one key without dropping its siblings.
"""

from sft.config.kedro_bridge import SftConfigLoader, cfg_resolver
from sft.hooks import NodeTimingHooks, SftHooks

HOOKS = (SftHooks(), NodeTimingHooks())

CONFIG_LOADER_CLASS = SftConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    "merge_strategy": {"parameters": "soft", "catalog": "soft"},
    "custom_resolvers": {"cfg": cfg_resolver},
}
