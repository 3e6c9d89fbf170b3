"""dataset_packed_chunks: small dataset chunks stored many to a pack object

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dataset_packed_chunks",
        sa.Column("digest", sa.String(64), primary_key=True),
        sa.Column("pack", sa.String(64), nullable=False, index=True),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("dataset_packed_chunks")
