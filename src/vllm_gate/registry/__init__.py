"""The platform's model registry: ``model_mappings`` and ``certifications`` in PostgreSQL."""
