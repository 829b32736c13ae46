"""``sft dashboard``: a read-only live view of training runs, their comparison and their datasets.

Start it with ``python -m sft.dashboard`` (or ``scripts/dashboard.sh``, ``sft dashboard``); see ``cli.py``.
"""

from sft.dashboard.app import create_app

__all__ = ["create_app"]
