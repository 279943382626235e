"""The sign-off artefacts a release manager reads: summary.json, the HTML report with its SLO table and inline
SVG plots, and the SLO history from earlier runs. The top of the library beside ``cli``: it renders a finished
``gate`` run and may import every layer below."""
