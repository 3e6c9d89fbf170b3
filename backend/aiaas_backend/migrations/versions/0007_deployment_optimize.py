"""deployments optimised at deploy: the method, its tolerance and what it measured

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.add_column(sa.Column("optimize", sa.String(16), nullable=True))
        batch.add_column(sa.Column("optimize_tolerance", sa.Float(), nullable=True))
        batch.add_column(sa.Column("optimization", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.drop_column("optimization")
        batch.drop_column("optimize_tolerance")
        batch.drop_column("optimize")
