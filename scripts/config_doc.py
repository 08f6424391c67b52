"""Write docs/config.md from the schema (every key, its type, default and meaning).

python scripts/config_doc.py          # writes docs/config.md
python scripts/config_doc.py --check  # exit 1 if docs/config.md is not current
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

PAGE = Path(__file__).resolve().parents[1] / "docs" / "config.md"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that the page is current")
    args = parser.parse_args(argv)
    from dlnlab.lab.config import render

    text = render()
    if args.check:
        current = PAGE.is_file() and PAGE.read_text() == text
        print(f"{PAGE}: {'current' if current else 'stale: run python scripts/config_doc.py'}")
        return 0 if current else 1
    PAGE.write_text(text)
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
