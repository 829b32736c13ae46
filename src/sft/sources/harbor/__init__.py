"""Reading Harbor job directories: trial metadata, the LiteLLM proxy log and ATIF trajectories.

Harbor itself is not imported (it needs Python >= 3.12 and pulls ~400 MB); the JSON files are read
directly, tolerating the legacy and new shapes described in docs/input-formats.md.
"""
