-- One row per payment. Amounts are integer minor units (cents); the service validates
-- every field before it gets here, the CHECKs are a last line of defence.
-- The UNIQUE idempotency key is what makes RequestPayment
-- idempotent across replicas: concurrent inserts with one key store exactly one row.
CREATE TABLE payments (
    payment_id          uuid        PRIMARY KEY,
    idempotency_key     text        NOT NULL,
    request_fingerprint text        NOT NULL,
    amount_minor        bigint      NOT NULL,
    currency            text        NOT NULL,
    order_id            text        NOT NULL,
    metadata            jsonb       NOT NULL DEFAULT '{}'::jsonb,
    status              text        NOT NULL,
    created_at          timestamptz NOT NULL,
    CONSTRAINT payments_idempotency_key_unique UNIQUE (idempotency_key),
    CONSTRAINT payments_amount_minor_positive CHECK (amount_minor > 0),
    CONSTRAINT payments_currency_upper CHECK (currency ~ '^[A-Z]{3}$'),
    CONSTRAINT payments_metadata_object CHECK (jsonb_typeof(metadata) = 'object'),
    CONSTRAINT payments_status_known CHECK (status IN ('PENDING', 'SUCCEEDED', 'FAILED'))
);
