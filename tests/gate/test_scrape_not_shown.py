"""A verdict lists what the cluster's Prometheus could not show of the chart's scrape wiring, never passes it."""

from __future__ import annotations

import pytest

from vllm_gate.cluster.base import Capabilities
from vllm_gate.gate.run import scrape_not_shown


def _capabilities(discovery: str) -> Capabilities:
    return Capabilities(real_gpus=False, enforces_network_policy=None, pulls_images=False, engine="sim",
                        scrape_discovery=discovery)  # type: ignore[arg-type]


@pytest.mark.parametrize("wiring", ["servicemonitor", "podmonitor", "annotations"])
def test_targets_the_local_cluster_wrote_show_no_scrape_discovery(wiring):
    [line] = scrape_not_shown(_capabilities("gate-targets"), wiring)
    assert line.startswith("scrape discovery: the local cluster's Prometheus scraped targets it wrote itself")
    assert "NetworkPolicy's monitoring peer" in line


@pytest.mark.parametrize(("wiring", "kind"), [("servicemonitor", "ServiceMonitor"), ("podmonitor", "PodMonitor")])
def test_annotations_discovered_in_place_of_an_operator_object_name_that_object(wiring, kind):
    [line] = scrape_not_shown(_capabilities("annotations"), wiring)
    assert line.startswith(f"the chart's {kind} (monitoring.scrape: {wiring}): this cluster runs no Prometheus "
                           "Operator")


@pytest.mark.parametrize(("discovery", "wiring"), [("annotations", "annotations"), ("platform", "servicemonitor"),
                                                   ("platform", "annotations")])
def test_what_the_cluster_showed_is_not_listed(discovery, wiring):
    assert scrape_not_shown(_capabilities(discovery), wiring) == []
