-- Accounts: the identities keys belong to. Balances are kept by tollgate-balance under
-- the same id. Timestamps are Unix seconds.
CREATE TABLE tollgate_accounts (
    id         TEXT   PRIMARY KEY,
    status     TEXT   NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
    created_at BIGINT NOT NULL
);
