"""Turning outcomes into a decision: the certification contract (required checks, CERTIFIED / NOT
CERTIFIED / PARTIAL / INTERRUPTED / REHEARSAL), which specs a run certifies, regression against the last passed
run, and what actually served the model. May import every layer below it (``base`` .. ``registry``)."""
