"""socialrec benchmarks (not tests): ``make bench`` runs them all, ``make bench-<name>`` one."""
