"""The `ledger` command (and `python -m ledger`), importing the CLI only when run.

Worker processes started by spawn (verify's signature and Merkle workers) run the
command's script again to set themselves up. With the script importing only this
module, they no longer load the whole CLI (the event vocabulary, pydantic, rich):
about 0.4 s of CPU each, which made `ledger verify` of 20,000 events a third slower.
"""

from __future__ import annotations

import sys


def main() -> int:
    from ledger.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
