-- An optional allowlist of client networks (CIDRs, canonical text such as
-- `10.0.0.0/8` or `2001:db8::/32`) per API key. Null or empty: any address.
alter table api_keys add column allowed_networks text[];
