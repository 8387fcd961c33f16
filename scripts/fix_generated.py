"""Post-process protoc output: make every generated directory a regular package.

Regular packages (with ``__init__.py``) keep imports unambiguous for mypy, setuptools and
pytest; protoc itself writes none. The files are empty so regeneration stays deterministic.
"""

import sys
from pathlib import Path


def main(root: str) -> None:
    base = Path(root)
    for directory in sorted(p for p in base.rglob("*") if p.is_dir()):
        if directory.name == "__pycache__":
            continue
        (directory / "__init__.py").touch()


if __name__ == "__main__":
    main(sys.argv[1])
