-- What a model was at a passed run: the canary conversation's prompt-token count (its tokenizer and chat
-- template) and its answers to fixed prompts at temperature 0. The next run compares with the last one
-- of the right kind asked the same way (same fingerprint: prompts, seed, limits, and what answered in a
-- rehearsal); a row goes with the certification it was recorded for.
CREATE TABLE identity_baselines (
    id                   bigserial PRIMARY KEY,
    certification_id     bigint NOT NULL REFERENCES certifications (id) ON DELETE CASCADE,
    model_name           text NOT NULL,
    fingerprint          text NOT NULL CHECK (fingerprint <> ''),
    canary_prompt_tokens integer CHECK (canary_prompt_tokens > 0),
    -- [{"prompt": ..., "answer": ...}, ...]
    answers              jsonb NOT NULL CHECK (jsonb_typeof(answers) = 'array'),
    recorded_at          timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX identity_baselines_model_recorded ON identity_baselines (model_name, recorded_at DESC);

-- What this database is for: a production registry, or the registry rehearsals write. At most one row
-- (the key can only be true). A certification marks its registry 'production'; the rehearsal registry is
-- marked 'rehearsal' when first claimed.
CREATE TABLE registry_role (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    role      text NOT NULL CHECK (role IN ('production', 'rehearsal')),
    marked_at timestamptz NOT NULL DEFAULT now()
);
