"""Monitoring: GPU telemetry readings, their sources (nvidia-smi, recorded DCGM series) and judgments."""
