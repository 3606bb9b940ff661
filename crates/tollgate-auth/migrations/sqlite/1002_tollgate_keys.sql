-- API keys. Only the SHA-256 of a key is stored, never the key. Timestamps are Unix
-- seconds; allowed_models is a JSON array of model ids, NULL for any model; limits are
-- NULL when the key has none of its own.
CREATE TABLE tollgate_keys (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id     TEXT    NOT NULL REFERENCES tollgate_accounts (id),
    name           TEXT,
    prefix         TEXT    NOT NULL,
    hash           BLOB    NOT NULL UNIQUE CHECK (length(hash) = 32),
    allowed_models TEXT,
    rpm            INTEGER,
    itpm           INTEGER,
    otpm           INTEGER,
    tpd            INTEGER,
    status         TEXT    NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    created_at     INTEGER NOT NULL,
    expires_at     INTEGER,
    last_used_at   INTEGER
);

CREATE INDEX tollgate_keys_account_id ON tollgate_keys (account_id);
