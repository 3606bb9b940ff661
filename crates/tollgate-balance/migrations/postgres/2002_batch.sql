-- tollgate-balance: a group commit's batch in one statement (one round trip, one commit).
--
-- Operation k of the batch is element k of every array. kind is 'reserve', 'settle' or
-- 'release'. For a reserve: amount is the hold, at its created_at, expires_at its expiry.
-- For a settle or release of an open reservation: amount is the cost (0 for a release),
-- at the entry's time, and the rest the ledger entry's columns.
--
-- Outcomes, one row per operation, in order:
--   reserve: 'held' | 'refused' (unknown account or not enough available) | 'duplicate'
--   settle/release: 'closed' with the entry's id, account, released hold and balance
--     after (as the one-statement close of an open reservation, or a late settle of an
--     expired one, does), or 'not_open' (closed already, unknown): the caller then runs
--     its general state machine for it, which answers with the entry that closed it.
-- No operation raises for a condition of its own: a reserve inserts its reservation with
-- ON CONFLICT DO NOTHING (a concurrent first use of the id by another gateway waits for
-- that transaction, then reads as 'duplicate') before it takes the balance row, so one
-- operation never aborts the others, and no subtransaction is needed.
CREATE FUNCTION tollgate_ledger_batch(
    p_kind TEXT[],
    p_request_id TEXT[],
    p_account TEXT[],
    p_amount BIGINT[],
    p_at BIGINT[],
    p_expires_at BIGINT[],
    p_key_id BIGINT[],
    p_model TEXT[],
    p_input_tokens BIGINT[],
    p_output_tokens BIGINT[],
    p_cache_write_tokens BIGINT[],
    p_cache_write_1h_tokens BIGINT[],
    p_cache_read_tokens BIGINT[],
    p_upstream_request_id TEXT[],
    p_http_status BIGINT[],
    p_note TEXT[]
)
RETURNS TABLE (
    o_op INT,
    o_outcome TEXT,
    o_entry_id BIGINT,
    o_account TEXT,
    o_held BIGINT,
    o_balance_after BIGINT
)
LANGUAGE plpgsql
AS $$
DECLARE
    k INT;
    settle BOOLEAN;
BEGIN
    FOR k IN 1 .. coalesce(array_length(p_kind, 1), 0) LOOP
        o_op := k - 1;
        o_entry_id := NULL;
        o_account := NULL;
        o_held := NULL;
        o_balance_after := NULL;
        IF p_kind[k] = 'reserve' THEN
            INSERT INTO tollgate_reservations (request_id, account_id, amount, state, created_at, expires_at)
            SELECT p_request_id[k], b.account_id, p_amount[k], 'open', p_at[k], p_expires_at[k]
            FROM tollgate_balances b WHERE b.account_id = p_account[k]
            ON CONFLICT (request_id) DO NOTHING;
            IF NOT FOUND THEN
                IF EXISTS (SELECT 1 FROM tollgate_reservations r WHERE r.request_id = p_request_id[k]) THEN
                    o_outcome := 'duplicate';
                ELSE
                    o_outcome := 'refused';
                END IF;
            ELSE
                UPDATE tollgate_balances b SET reserved = b.reserved + p_amount[k]
                WHERE b.account_id = p_account[k] AND b.balance - b.reserved >= p_amount[k];
                IF FOUND THEN
                    o_outcome := 'held';
                ELSE
                    DELETE FROM tollgate_reservations r WHERE r.request_id = p_request_id[k];
                    o_outcome := 'refused';
                END IF;
            END IF;
        ELSE
            settle := p_kind[k] = 'settle';
            WITH r AS (
                SELECT t.request_id, t.account_id,
                       CASE WHEN t.state = 'open' THEN t.amount ELSE 0 END AS held
                FROM tollgate_reservations t
                WHERE t.request_id = p_request_id[k]
                  AND (t.state = 'open' OR (settle AND t.state = 'expired'))
                FOR UPDATE
            ), s AS (
                UPDATE tollgate_reservations t
                SET state = CASE WHEN settle THEN 'settled' ELSE 'released' END
                FROM r WHERE t.request_id = r.request_id
            ), b AS (
                UPDATE tollgate_balances t
                SET balance = t.balance - p_amount[k], reserved = t.reserved - r.held
                FROM r WHERE t.account_id = r.account_id
                RETURNING t.account_id, t.balance, r.held
            )
            INSERT INTO tollgate_ledger (account_id, kind, amount, reserved, balance_after,
                request_id, key_id, model, input_tokens, output_tokens, cache_write_tokens,
                cache_write_1h_tokens, cache_read_tokens, upstream_request_id, http_status,
                note, created_at)
            SELECT b.account_id, CASE WHEN settle THEN 'charge' ELSE 'release' END,
                -p_amount[k], b.held, b.balance, p_request_id[k], p_key_id[k], p_model[k],
                p_input_tokens[k], p_output_tokens[k], p_cache_write_tokens[k],
                p_cache_write_1h_tokens[k], p_cache_read_tokens[k], p_upstream_request_id[k],
                p_http_status[k], p_note[k], p_at[k]
            FROM b
            RETURNING id, account_id, reserved, balance_after
            INTO o_entry_id, o_account, o_held, o_balance_after;
            IF o_entry_id IS NULL THEN
                o_outcome := 'not_open';
            ELSE
                o_outcome := 'closed';
            END IF;
        END IF;
        RETURN NEXT;
    END LOOP;
END
$$;
