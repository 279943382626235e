"""docs/gpu-requirements.md is what the sizing code generates for every spec in models/."""

from __future__ import annotations

from vllm_gate.base.tools import MODELS_DIR, PROJECT_ROOT
from vllm_gate.sizing.calibration import CALIBRATION
from vllm_gate.sizing.guide import GUIDE_PATH, REGENERATE, guide
from vllm_gate.spec import available, load_spec


def test_committed_guide_matches_the_code():
    committed = (PROJECT_ROOT / GUIDE_PATH).read_text()
    assert committed == guide(MODELS_DIR), (
        f"{GUIDE_PATH} is not what the sizing code generates; regenerate it: {REGENERATE}")


def test_guide_covers_every_spec_calibration_point_and_the_formula():
    text = guide(MODELS_DIR)
    for name in available(MODELS_DIR):
        assert f"## {name}\n" in text
        assert load_spec(name, MODELS_DIR).architecture.source in text
    for point in CALIBRATION:
        # Every point's row: its error and whether it set a constant, beside its source.
        row = next(line for line in text.splitlines() if point.source in line)
        assert f"| {point.error:+.2%} | {'in' if point.in_sample else 'held out'} |" in row
    assert "2 x num_hidden_layers x num_key_value_heads x head_dim" in text


def test_every_spec_in_models_states_its_architecture():
    for name in available(MODELS_DIR):
        arch = load_spec(name, MODELS_DIR).architecture
        assert arch is not None, f"models/{name}.yaml has no architecture section"
        assert "huggingface.co" in arch.source
