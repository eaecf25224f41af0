"""Stop `make setup` early, with the fix, when the Python running it is one we do not support.

Runs before anything is installed, on whatever Python the user has, so it uses the standard
library of every Python 3 and reads the supported range from pyproject.toml, its one home.
"""

import re
import sys
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def supported_range():  # no annotations: this must run on any Python 3
    """(lowest supported, first unsupported) from ``requires-python = ">=3.X,<3.Y"``."""
    text = PYPROJECT.read_text(encoding="utf-8")
    found = re.search(r'requires-python\s*=\s*">=3\.(\d+),\s*<3\.(\d+)"', text)
    if not found:
        sys.exit(f'{PYPROJECT}: requires-python must read ">=3.X,<3.Y"')
    return (3, int(found.group(1))), (3, int(found.group(2)))


def main():
    lowest, beyond = supported_range()
    running = sys.version_info[:2]
    if lowest <= running < beyond:
        return
    names = ", ".join(f"3.{minor}" for minor in range(lowest[1], beyond[1]))
    sys.exit(
        f"imgpipe needs Python {names}; {sys.executable} is {running[0]}.{running[1]}. "
        f"Install one of those and run `make setup PYTHON=python3.{lowest[1]}` "
        "(or the name of that interpreter), then `make repro` or `make test` as usual."
    )


if __name__ == "__main__":
    main()
