-- `Idempotency-Key` on CSV uploads: the key, and a hash of the form and the
-- file, recorded once the upload is stored. The same key with the same form
-- and file answers with the first job; with anything else, 422.
alter table bulk_jobs
    add column idempotency_key text check (length(idempotency_key) between 1 and 255),
    add column request_hash bytea;
create unique index bulk_jobs_idempotency_key_idx
    on bulk_jobs (tenant_id, idempotency_key) where idempotency_key is not null;
