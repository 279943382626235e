"""The recorded H100 capture (test data) and the dcgm-exporter series the local cluster serves from it."""

from __future__ import annotations

import filecmp
import shutil
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.monitoring.captures import SHARED_H100, csv_rows
from vllm_gate.monitoring.gpu import GpuReading, TelemetryError, identity_problems, utilization_problems
from vllm_gate.monitoring.nvidia_smi import QUERY_FIELDS
from vllm_gate.monitoring.recorded import (
    IDLE_FILE,
    LOAD_FILE,
    RECORDED_DIR,
    RECORDED_LABEL,
    XML_FILE,
    PodGpus,
    RecordedGpu,
    dcgm_exposition,
    load_recorded,
)

PACKAGED = Path(str(RECORDED_DIR))
COPIED = ("README.md", IDLE_FILE, LOAD_FILE, XML_FILE)
# dcgm-exporter's, and ours saying the series are recorded (so a gate reading them anywhere never takes them as live)
DCGM_LABELS = {"gpu", "UUID", "device", "modelName", "Hostname", "DCGM_FI_DRIVER_VERSION", "container",
               "namespace", "pod", "vllm_gate_recorded"}
SERIES = {"DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE", "DCGM_FI_DEV_XID_ERRORS"}


def test_label_says_test_data():
    assert "test data" in RECORDED_LABEL
    assert "not a live GPU" in RECORDED_LABEL


def test_packaged_copy_equals_the_shared_capture():
    assert sorted(p.name for p in PACKAGED.iterdir()) == sorted(COPIED)
    if not SHARED_H100.is_dir():
        pytest.skip(f"{SHARED_H100} is absent on this machine: cannot compare the packaged copy with it")
    _, mismatch, errors = filecmp.cmpfiles(SHARED_H100, PACKAGED, COPIED, shallow=False)
    assert (mismatch, errors) == ([], [])


def test_load_recorded_matches_the_files():
    col = {f: i for i, f in enumerate(QUERY_FIELDS)}  # the H100 README's field order for the nounits files
    recorded = load_recorded()
    (idle,) = csv_rows(PACKAGED / IDLE_FILE)
    load = csv_rows(PACKAGED / LOAD_FILE)
    assert recorded.driver_version == ET.parse(PACKAGED / XML_FILE).getroot().findtext("driver_version")  # noqa: S314
    assert len(recorded.load) == len(load) == 10
    for reading, row in [(recorded.idle, idle), *zip(recorded.load, load, strict=True)]:
        assert (reading.uuid, reading.name) == (row[col["uuid"]], row[col["name"]])
        assert reading.util_pct == float(row[col["utilization.gpu"]])
        assert reading.mem_used_mib == float(row[col["memory.used"]])
        assert reading.mem_free_mib == float(row[col["memory.free"]])


@pytest.mark.parametrize(("file", "old", "new", "cause"), [
    (LOAD_FILE, "GPU-89483916-4ee7-f953-0c96-036ee402eb02", "GPU-00000000-0000-0000-0000-000000000000",
     "query_load_nounits.csv row 1 has uuid 'GPU-00000000"),
    (IDLE_FILE, "81559", "81560",
     "query_idle_nounits.csv row 1 has mem_total_mib 81560.0, nvidia-smi-q.xml has 81559.0"),
    (XML_FILE, "<product_name>NVIDIA H100 80GB HBM3", "<product_name>NVIDIA H200",
     "query_idle_nounits.csv row 1 has name 'NVIDIA H100 80GB HBM3', nvidia-smi-q.xml has 'NVIDIA H200'"),
])
def test_files_of_different_gpus_are_rejected(tmp_path: Path, file: str, old: str, new: str, cause: str):
    for name in COPIED:
        shutil.copy(PACKAGED / name, tmp_path / name)
    target = tmp_path / file
    target.chmod(0o644)
    text = target.read_text()
    assert old in text
    target.write_text(text.replace(old, new, 1))
    with pytest.raises(TelemetryError) as err:
        load_recorded(tmp_path)
    assert cause in str(err.value)


def _exposition(tick: int, recorded: RecordedGpu | None = None) -> dict[str, list]:
    pods = [PodGpus("models", "llama3-0", "vllm", "gpu-node-0", 2),
            PodGpus("models", "mistral-0", "vllm", "gpu-node-1", 1),
            PodGpus("models", "cpu-only", "vllm", "gpu-node-1", 0)]  # asked for no GPU: no series
    text = dcgm_exposition(pods, lambda ns, pod: (ns, pod) == ("models", "llama3-0"), tick, recorded)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert set(families) == SERIES
    for family in families.values():
        assert family.type == "gauge"
        assert "test data" in family.documentation
    return {name: f.samples for name, f in families.items()}


def test_dcgm_exposition_labels_and_values():
    recorded = load_recorded()
    tick = 13
    busy_row = recorded.load[tick % len(recorded.load)]
    series = _exposition(tick)
    for name, samples in series.items():
        assert [(s.labels["pod"], s.labels["gpu"]) for s in samples] == [
            ("llama3-0", "0"), ("llama3-0", "1"), ("mistral-0", "0")]
        for s in samples:
            assert set(s.labels) == DCGM_LABELS
            assert s.labels["device"] == f"nvidia{s.labels['gpu']}"
            assert s.labels["vllm_gate_recorded"] == "true"
            assert (s.labels["UUID"], s.labels["modelName"]) == (recorded.idle.uuid, recorded.idle.name)
            assert s.labels["DCGM_FI_DRIVER_VERSION"] == recorded.driver_version
            assert (s.labels["namespace"], s.labels["container"]) == ("models", "vllm")
            assert s.labels["Hostname"] == {"llama3-0": "gpu-node-0", "mistral-0": "gpu-node-1"}[s.labels["pod"]]
            row = busy_row if s.labels["pod"] == "llama3-0" else recorded.idle
            expected = {"DCGM_FI_DEV_GPU_UTIL": row.util_pct, "DCGM_FI_DEV_FB_USED": row.mem_used_mib,
                        "DCGM_FI_DEV_FB_FREE": row.mem_free_mib, "DCGM_FI_DEV_XID_ERRORS": 0.0}[name]
            assert s.value == expected


def test_dcgm_exposition_cycles_the_load_rows_by_tick():
    """The capture's rows hardly differ, so plant distinct utilizations to see which row each tick serves."""
    recorded = load_recorded()
    planted = replace(recorded, load=tuple(replace(r, util_pct=float(i + 1)) for i, r in enumerate(recorded.load)))
    for tick in range(2 * len(planted.load) + 1):
        util = _exposition(tick, planted)["DCGM_FI_DEV_GPU_UTIL"]
        assert [s.value for s in util] == [tick % len(planted.load) + 1] * 2 + [recorded.idle.util_pct]


def test_dcgm_series_feed_the_judgments():
    """Readings rebuilt from the served series pass identity and utilization for the busy pod, not the idle one."""
    samples = _exposition(0)
    by_key: dict[tuple[str, str], dict[str, float]] = {}
    names: dict[tuple[str, str], tuple[str, str]] = {}
    for name, family in samples.items():
        for s in family:
            by_key.setdefault((s.labels["pod"], s.labels["gpu"]), {})[name] = s.value
            names[(s.labels["pod"], s.labels["gpu"])] = (s.labels["UUID"], s.labels["modelName"])
    readings = {key: GpuReading(index=int(key[1]), uuid=names[key][0], name=names[key][1],
                                util_pct=v["DCGM_FI_DEV_GPU_UTIL"], mem_used_mib=v["DCGM_FI_DEV_FB_USED"],
                                mem_free_mib=v["DCGM_FI_DEV_FB_FREE"], xid=v["DCGM_FI_DEV_XID_ERRORS"])
                for key, v in by_key.items()}
    busy = [readings[("llama3-0", "0")], readings[("llama3-0", "1")]]
    idle = [readings[("mistral-0", "0")]]
    assert identity_problems(busy, 2, "h100") == []
    assert utilization_problems(busy) == []
    assert utilization_problems(idle) != []
