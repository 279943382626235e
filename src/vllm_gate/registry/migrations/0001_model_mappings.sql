-- The API router's model table and the gate's certification record.
CREATE TABLE model_mappings (
    name               text PRIMARY KEY
                       CHECK (name ~ '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$' AND length(name) <= 63),
    display_name       text NOT NULL CHECK (length(btrim(display_name)) > 0),
    backend_url        text NOT NULL CHECK (backend_url ~ '^https?://'),
    upstream_model_id  text,
    max_tokens         integer CHECK (max_tokens > 0),
    input_cost_per_1k  numeric(14, 8) NOT NULL CHECK (input_cost_per_1k >= 0),
    output_cost_per_1k numeric(14, 8) NOT NULL CHECK (output_cost_per_1k >= 0),
    enabled            boolean NOT NULL DEFAULT true,
    chart_version      text,
    image              text,
    certified_at       timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);

-- One row per gate run, passed or failed. No foreign key: a model that never passed has
-- failed certifications and no mapping.
CREATE TABLE certifications (
    id          bigserial PRIMARY KEY,
    model_name  text NOT NULL,
    cluster     text NOT NULL,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL,
    verdict     text NOT NULL CHECK (verdict IN ('passed', 'failed')),
    summary     jsonb NOT NULL DEFAULT '{}'::jsonb,
    report_path text
);

CREATE INDEX certifications_model_finished ON certifications (model_name, finished_at DESC);
