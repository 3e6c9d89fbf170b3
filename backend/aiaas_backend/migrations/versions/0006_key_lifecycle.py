"""key lifecycle (names, expiry, revocation, last use), admins, and the append-only audit log

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_LIFECYCLE = ("name", "expires_at", "revoked_at", "last_used_at")


def _lifecycle_columns() -> list[sa.Column]:
    return [
        sa.Column("name", sa.String(200), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
    ]


def upgrade() -> None:
    op.add_column("users", sa.Column("is_admin", sa.Boolean(), nullable=False, server_default=sa.false()))
    for table in ("api_keys", "deployment_keys"):
        for column in _lifecycle_columns():
            op.add_column(table, column)
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False, index=True),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("key_kind", sa.String(16), nullable=False),
        sa.Column("key_id", sa.Integer(), nullable=False),
        sa.Column("key_prefix", sa.String(16), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True, index=True),
        sa.Column("actor", sa.String(220), nullable=False),
        sa.Column("ip", sa.String(64), nullable=True),
    )
    # Append-only in the database itself, not only by convention in the code.
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for verb in ("UPDATE", "DELETE"):
            op.execute(f"CREATE TRIGGER audit_log_no_{verb.lower()} BEFORE {verb} ON audit_log "
                       "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END")
    elif dialect == "postgresql":
        op.execute("CREATE FUNCTION audit_log_append_only() RETURNS trigger AS $$ BEGIN "
                   "RAISE EXCEPTION 'audit_log is append-only'; END $$ LANGUAGE plpgsql")
        op.execute("CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log "
                   "FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_log_append_only ON audit_log")
        op.execute("DROP FUNCTION IF EXISTS audit_log_append_only()")
    op.drop_table("audit_log")
    for table in ("api_keys", "deployment_keys"):
        with op.batch_alter_table(table) as batch:
            for name in _LIFECYCLE:
                batch.drop_column(name)
    with op.batch_alter_table("users") as batch:
        batch.drop_column("is_admin")
