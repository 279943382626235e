-- The revision a promotion switched away from, kept for promotion.keep_previous_s so that
-- `ias-admin model rollback NAME` can switch the row back while it still runs. Empty when none is kept.
ALTER TABLE model_mappings ADD COLUMN previous_backend_url text;
ALTER TABLE model_mappings ADD COLUMN previous_kept_until timestamptz;
