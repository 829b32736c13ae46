"""``python -m sft.dashboard --host 127.0.0.1 --port 8091 --project-dir .``"""

import sys

from sft.dashboard.cli import main

if __name__ == "__main__":
    sys.exit(main())
