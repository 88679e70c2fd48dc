"""Phone-sized photos made deterministically from small ones, for tests and benchmarks.

    python scripts/phone_photos.py SRC.jpg OUT.jpg [--seed 0]

The recipe is ris.tools.phone_photos (the tests and bench_phone_photos.py use it too).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from ris.tools.phone_photos import phone_photo


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.out.write_bytes(phone_photo(args.source.read_bytes(), args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
