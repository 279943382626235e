"""Evidence files land in the run's directory whichever of them is written first."""

from __future__ import annotations

from pathlib import Path

from vllm_gate.gate import evidence


def test_the_samples_are_copied_into_an_evidence_directory_nothing_had_made_yet(tmp_path: Path):
    # A server whose /metrics answers 404 leaves no metrics file to make the directory first (issue 21, item 6).
    samples = tmp_path / "load" / "samples.jsonl"
    samples.parent.mkdir()
    samples.write_text('{"ok": true}\n')
    directory = tmp_path / "reports" / "llama3-20261206T000000Z"
    copied = evidence.copy(directory, evidence.SAMPLES, samples)
    assert copied == directory / "samples.jsonl"
    assert copied.read_text() == '{"ok": true}\n'
