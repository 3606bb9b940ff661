-- tollgate-balance: balances, open reservations and the ledger (SQLite).
-- Versions 2001+ belong to tollgate-balance; tollgate-auth uses 1001+ in the same database.
-- Times are milliseconds since the Unix epoch; money is integer micro-units.

CREATE TABLE tollgate_balances (
    account_id TEXT PRIMARY KEY NOT NULL,
    currency   TEXT NOT NULL,
    balance    INTEGER NOT NULL DEFAULT 0,
    reserved   INTEGER NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    created_at INTEGER NOT NULL
);

CREATE TABLE tollgate_reservations (
    request_id TEXT PRIMARY KEY NOT NULL,
    account_id TEXT NOT NULL REFERENCES tollgate_balances (account_id),
    amount     INTEGER NOT NULL CHECK (amount >= 0),
    state      TEXT NOT NULL CHECK (state IN ('open', 'settled', 'released', 'expired')),
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);

CREATE INDEX tollgate_reservations_open_by_expiry
    ON tollgate_reservations (expires_at) WHERE state = 'open';

CREATE TABLE tollgate_ledger (
    id                    INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id            TEXT NOT NULL REFERENCES tollgate_balances (account_id),
    kind                  TEXT NOT NULL CHECK (kind IN ('topup', 'charge', 'release', 'expire')),
    amount                INTEGER NOT NULL,
    reserved              INTEGER NOT NULL,
    balance_after         INTEGER NOT NULL,
    request_id            TEXT,
    key_id                INTEGER,
    model                 TEXT,
    input_tokens          INTEGER NOT NULL DEFAULT 0,
    output_tokens         INTEGER NOT NULL DEFAULT 0,
    cache_write_tokens    INTEGER NOT NULL DEFAULT 0,
    cache_write_1h_tokens INTEGER NOT NULL DEFAULT 0,
    cache_read_tokens     INTEGER NOT NULL DEFAULT 0,
    upstream_request_id   TEXT,
    http_status           INTEGER,
    note                  TEXT,
    created_at            INTEGER NOT NULL
);

CREATE INDEX tollgate_ledger_by_account ON tollgate_ledger (account_id, id);

-- One charge, one release, one expiry at most per request: settling twice cannot double-charge.
CREATE UNIQUE INDEX tollgate_ledger_once_per_request
    ON tollgate_ledger (request_id, kind) WHERE request_id IS NOT NULL;
