"""python -m bench NAME [args]: run bench/NAME.py's main(). Each prints one JSON object last."""

import importlib
import pkgutil
import sys
from pathlib import Path


def main() -> None:
    names = sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if not m.name.startswith("_"))
    if len(sys.argv) < 2 or sys.argv[1] not in names:
        sys.exit(f"usage: python -m bench {{{','.join(names)}}} [args]")
    name = sys.argv.pop(1)
    importlib.import_module(f"bench.{name}").main()


main()
