"""The two spellings of the benchmark's PostgreSQL URLs."""

from __future__ import annotations

import sqlalchemy as sa


def psycopg2_url(url: str) -> str:
    """`url` for SQLAlchemy with the psycopg2 driver named (a bare postgresql:// may not be)."""
    parsed = sa.engine.make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg2")
    return parsed.render_as_string(hide_password=False)


def libpq_url(url: str) -> str:
    """`url` as libpq and the job's SNAPSHOT_OPS_DATABASE_URL take it (no driver name)."""
    return (
        sa.engine.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    )
