"""Dagster resources. Thin: they hand the core a Settings object or a client built from it."""

from __future__ import annotations

import dagster as dg

from socialrec.settings import Settings


class SettingsResource(dg.ConfigurableResource):
    """The socialrec Settings, read from the environment (SOCIALREC_*) at run time.

    ``data_dir`` can be pinned here (tests do); otherwise the environment decides.
    """

    data_dir: str | None = None

    def get(self) -> Settings:
        overrides = {"data_dir": self.data_dir} if self.data_dir else {}
        settings = Settings(**overrides)
        settings.ensure_dirs()
        return settings
