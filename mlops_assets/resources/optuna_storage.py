"""Where Optuna keeps its studies: SQLite by default, Postgres in production (one setting)."""

from __future__ import annotations

import dagster as dg


class OptunaStorage(dg.ConfigurableResource):
    """An Optuna RDB storage URL (``sqlite:///...`` or ``postgresql+psycopg2://...``)."""

    url: str

    def open_study(
        self, name: str, seed: int = 0, warmup_steps: int = 5, sampler_seed: int | None = None
    ):  # -> optuna.Study
        """The named study, created on first use and continued afterwards (``sampler_seed``:
        the sampler's exact seed, e.g. a tuning worker's, instead of ``seed`` + trials so far)."""
        from mlops_assets.train.tuning import open_study

        return open_study(
            name, self.url, seed=seed, warmup_steps=warmup_steps, sampler_seed=sampler_seed
        )

    @property
    def display_url(self) -> str:
        """The URL without its password (safe for metadata and tags)."""
        from mlops_assets.train.tuning import redacted

        return redacted(self.url)
