"""One gate run: its state (``run``: what was deployed, what each check said, its verdict), the evidence it
leaves beside the report (``evidence``) and the decision at its end (``decision``: register or undo). May import
every layer below it; only ``report``, ``cli`` and the pytest plugin import it."""
