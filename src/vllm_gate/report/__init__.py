"""The sign-off report's pure pieces: inline SVG plots, plotted series from load samples, the SLO table."""
