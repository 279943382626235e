"""The platform's model registry in PostgreSQL: ``model_mappings`` (what the API router reads),
certifications, identity baselines, run history, its migrations and role (production or rehearsal), and the
local PostgreSQL server behind the rehearsal registry. May import the layers below it (``base`` to ``monitoring``;
it needs only ``base`` and ``spec``)."""
