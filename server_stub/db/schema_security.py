"""Schema of migration 6: per-user token cut-off and server-wide device id claims.

- `users.tokens_valid_after`: access and refresh tokens issued before it are refused (a password
  reset sets it), checked on every token resolution.
- `device_claims`: which tenant holds a tracker/phone device id. Device ids must be unique across
  the server because the OsmAnd protocol has no token: the id alone names the tenant.
"""

from __future__ import annotations

from server_stub.db.schema_pg import SYSTEM_CONTEXT, TENANT
from server_stub.db.schema_sqlite import NOW

TOKENS_AND_DEVICES_PG = f"""
    ALTER TABLE users ADD COLUMN tokens_valid_after timestamptz;
    CREATE TABLE device_claims (
        device_id text PRIMARY KEY,
        customer_id text NOT NULL REFERENCES customers (id),
        claimed_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX device_claims_customer ON device_claims (customer_id);
    -- Claims are checked before any tenant is chosen (system context); inside a tenant's
    -- transaction only its own are visible.
    ALTER TABLE device_claims ENABLE ROW LEVEL SECURITY;
    ALTER TABLE device_claims FORCE ROW LEVEL SECURITY;
    CREATE POLICY tenant_or_system ON device_claims
        USING ({SYSTEM_CONTEXT} OR customer_id = {TENANT}) WITH CHECK ({SYSTEM_CONTEXT} OR customer_id = {TENANT});
"""

TOKENS_AND_DEVICES_SQLITE = f"""
    ALTER TABLE users ADD COLUMN tokens_valid_after REAL;
    CREATE TABLE device_claims (
        device_id TEXT PRIMARY KEY,
        customer_id TEXT NOT NULL REFERENCES customers (id),
        claimed_at REAL NOT NULL DEFAULT {NOW}
    );
    CREATE INDEX device_claims_customer ON device_claims (customer_id);
"""
