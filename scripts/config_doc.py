"""Write docs/config.md from the schema (every key, its type, default and meaning), and docs/results.md's
summary.json tables from the records that write it.

python scripts/config_doc.py          # writes docs/config.md and the tables in docs/results.md
python scripts/config_doc.py --check  # exit 1 if either is not current
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

PAGE = Path(__file__).resolve().parents[1] / "docs" / "config.md"
RESULTS = PAGE.with_name("results.md")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that the page is current")
    args = parser.parse_args(argv)
    from dlnlab.lab.config import render
    from dlnlab.lab.results import with_tables

    pages = {PAGE: render(), RESULTS: with_tables(RESULTS.read_text())}
    if args.check:
        stale = [page for page, text in pages.items() if not page.is_file() or page.read_text() != text]
        for page in pages:
            print(f"{page}: {'stale: run python scripts/config_doc.py' if page in stale else 'current'}")
        return 1 if stale else 0
    for page, text in pages.items():
        page.write_text(text)
        print(f"wrote {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
