"""Alembic environment: runs on the connection :meth:`engine.db.Database.upgrade` passes in.

``gateway db upgrade`` is the way to run migrations; for authoring a new
revision, ``alembic -c engine/db/alembic.ini revision --autogenerate -m "..."``
compares :data:`engine.db.schema.METADATA` with a database at ``-x url=...``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from engine.db.schema import METADATA

config = context.config
connection = config.attributes.get("connection")

if connection is None:
    url = context.get_x_argument(as_dictionary=True).get("url", "sqlite:///data/alembic.sqlite")
    connection = sa.create_engine(url).connect()

context.configure(
    connection=connection,
    target_metadata=METADATA,
    render_as_batch=True,  # SQLite cannot ALTER most things; batch mode copies the table
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
