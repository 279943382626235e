"""Tests of GPU telemetry parsing, judgments and the recorded capture."""
