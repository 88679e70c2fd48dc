"""Write docs/configuration.md from the services' config dataclasses (the one source of truth).

Usage: python scripts/gen_config_docs.py [--check]

The page's text is ris.tools.config_docs.render(); --check fails when the committed page
differs (run by the tests).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ris.tools.config_docs import render

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "configuration.md"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the page is stale")
    args = parser.parse_args()
    text = render()
    if args.check:
        if not OUT.exists() or OUT.read_text() != text:
            print("docs/configuration.md is stale: run python scripts/gen_config_docs.py")
            return 1
        print("docs/configuration.md is up to date")
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
