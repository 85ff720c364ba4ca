"""``python -m orchestration.dagster_cli ARGS`` is the ``dagster ARGS`` command (the same entry
point as the console script) with the project's quiet console: importing ``orchestration`` runs
``socialrec.quiet``, which drops Dagster's notice that ``dg dev`` supersedes ``dagster dev``
(``dg`` is the dagster-dg-cli package, not a dependency). ``make demo`` and ``make dagster-ui``
start the Dagster UI with it."""

import sys

from dagster._cli import main  # what the ``dagster`` console script runs

if __name__ == "__main__":
    sys.exit(main())
