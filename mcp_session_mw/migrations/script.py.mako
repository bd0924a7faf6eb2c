"""${message}

Revision ids are four-digit schema versions: bump SCHEMA_VERSION in
mcp_session_mw/stores/sql/schema.py to this revision's number in the same change.
Write the schema out here in full; never import the store's live table
definitions, which move on while this revision must not.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from mcp_session_mw.migrations import table_prefix

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = None
depends_on = None


def upgrade() -> None:
    prefix = table_prefix()
    ${upgrades if upgrades else "raise NotImplementedError"}


def downgrade() -> None:
    prefix = table_prefix()
    ${downgrades if downgrades else "raise NotImplementedError"}
