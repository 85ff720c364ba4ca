"""socialrec core: framework-free (no Dagster, no BentoML imports)."""
