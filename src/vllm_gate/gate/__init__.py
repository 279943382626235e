"""One gate run: how it is planned from the options (``plan``), its state (``run``: what was deployed, what each
check said, its verdict), the evidence it leaves beside the report (``evidence``), the decision at its end
(``decision``: undo, register or record), its exit code (``exit_code``) and the lines the terminal shows
(``terminal_lines``). May import every layer below it; ``report`` and the pytest plugin import it."""
