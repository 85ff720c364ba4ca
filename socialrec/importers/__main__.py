"""``python -m socialrec.importers``."""

from socialrec.importers.cli import main

main()
