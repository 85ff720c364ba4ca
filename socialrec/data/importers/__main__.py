"""``python -m socialrec.data.importers``."""

from socialrec.data.importers.cli import main

main()
