"""What the autoscaling test reads from the cluster while its load runs: the HPA, its Deployment and the Service's
endpoints every 2 s; the wait for min_replicas; the autoscaler held at min_replicas while one replica's capacity is
measured."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from kubernetes import client
from kubernetes.client.rest import ApiException
from urllib3.exceptions import HTTPError

from vllm_gate.base.errors import GateError
from vllm_gate.base.waiting import PROGRESS_EVERY_S, wait_until
from vllm_gate.checks.autoscaling import current_value
from vllm_gate.checks.scaling import ScalePoint
from vllm_gate.load.samples import LoadRun
from vllm_gate.spec import Autoscaling

POLL_S = 2.0
REQUEST_TIMEOUT_S = 10
MISSED_READINGS = 5  # readings in a row that failed: the watch stops, and the test fails saying why
KEDA_KIND = ("keda.sh", "v1alpha1", "scaledobjects")

Progress = Callable[[str], None]


def read_point(api: client.ApiClient, namespace: str, name: str, service: str, metric: str) -> ScalePoint:
    """The HPA ``name`` and its Deployment (the chart names both after the release), and ``service``'s endpoints."""
    try:
        hpa = api.sanitize_for_serialization(client.AutoscalingV2Api(api).read_namespaced_horizontal_pod_autoscaler(
            name, namespace, _request_timeout=REQUEST_TIMEOUT_S))
        deployment = client.AppsV1Api(api).read_namespaced_deployment(name, namespace,
                                                                      _request_timeout=REQUEST_TIMEOUT_S)
        slices = client.DiscoveryV1Api(api).list_namespaced_endpoint_slice(
            namespace, label_selector=f"kubernetes.io/service-name={service}", _request_timeout=REQUEST_TIMEOUT_S)
    except ApiException as exc:
        raise GateError(f"autoscaling: reading HorizontalPodAutoscaler {namespace}/{name}, its Deployment or "
                        f"Service {service}'s endpoints failed: HTTP {exc.status} {exc.reason}") from None
    except (HTTPError, OSError) as exc:
        raise GateError(f"autoscaling: reading HorizontalPodAutoscaler {namespace}/{name}, its Deployment or "
                        f"Service {service}'s endpoints failed: {type(exc).__name__}") from None
    status = hpa.get("status") or {}
    # An endpoint whose ready condition is unset counts as ready (the EndpointSlice API's rule); a pod is counted
    # once, though a dual-stack Service has a slice per address family.
    serving = len({e.target_ref.name if e.target_ref else tuple(e.addresses) for s in slices.items
                   for e in s.endpoints or [] if e.conditions is None or e.conditions.ready is not False})
    try:
        metric_value = current_value(hpa, metric)
    except ValueError:
        metric_value = None  # a quantity the client cannot parse: not read
    ready = deployment.status.ready_replicas if deployment.status else None
    return ScalePoint(time.time(), int(status.get("desiredReplicas") or 0), int(status.get("currentReplicas") or 0),
                      int(ready or 0), serving, metric_value)


def tolerant(read: Callable[[], ScalePoint]) -> Callable[[], ScalePoint]:
    """``read``, tried again (2 s apart) when it fails, up to MISSED_READINGS times in a row: one refused or slow
    API call is not the autoscaler's failure."""
    def reading() -> ScalePoint:
        for _ in range(MISSED_READINGS - 1):
            try:
                return read()
            except GateError:
                time.sleep(POLL_S)
        return read()
    return reading


def settled(point: ScalePoint, replicas: int) -> bool:
    return point.serving <= replicas and point.desired <= replicas


def wait_settled(read: Callable[[], ScalePoint], replicas: int, timeout_s: float, why: str,
                 describe: Callable[[ScalePoint], str], progress: Progress) -> ScalePoint:
    """Wait until ``replicas`` pods serve and the HPA wants no more; GateError naming what it saw after
    ``timeout_s``. Says every 10 s what it waits for (``why``: for what)."""
    last: list[ScalePoint] = []
    reading = tolerant(read)

    def state() -> str | None:
        last[:] = [reading()]
        return None if settled(last[0], replicas) and last[0].serving == replicas else describe(last[0])

    waiting = wait_until(state, timeout_s, lambda on, elapsed: progress(
        f"autoscaling: waiting for {replicas} replica(s) {why} ({on}), {elapsed:.0f}/{timeout_s:.0f} s"),
        poll_s=POLL_S)
    if waiting is not None:
        raise GateError(f"autoscaling: {replicas} replica(s) wanted {why}, not settled within {timeout_s:.0f} s "
                        f"({waiting})")
    return last[0]


def _set_max(api: client.ApiClient, namespace: str, name: str, keda: bool, replicas: int) -> None:
    """Set the autoscaler's ceiling: KEDA's ScaledObject (which owns its HPA), or the HPA."""
    timeout = {"_request_timeout": REQUEST_TIMEOUT_S}
    try:
        if keda:
            client.CustomObjectsApi(api).patch_namespaced_custom_object(
                *KEDA_KIND, namespace, name, {"spec": {"maxReplicaCount": replicas}}, **timeout)
        else:
            client.AutoscalingV2Api(api).patch_namespaced_horizontal_pod_autoscaler(
                name, namespace, {"spec": {"maxReplicas": replicas}}, **timeout)
    except (ApiException, HTTPError, OSError) as exc:
        what = "ScaledObject" if keda else "HorizontalPodAutoscaler"
        reason = f"HTTP {exc.status} {exc.reason}" if isinstance(exc, ApiException) else type(exc).__name__
        raise GateError(f"autoscaling: setting {what} {namespace}/{name}'s maximum to {replicas} failed: "
                        f"{reason}") from None


@contextmanager
def pinned(api: client.ApiClient, namespace: str, name: str, policy: Autoscaling, *, keda: bool, during: str,
           settle: Callable[[], ScalePoint], progress: Progress) -> Iterator[None]:
    """The autoscaler held at min_replicas (its maximum lowered, then set back to the spec's) ``during`` a load that
    measures one replica (the SLO load test, the capacity search): pods it added would make the numbers several
    replicas'. ``settle`` waits until only those serve."""
    kind = "ScaledObject" if keda else "HorizontalPodAutoscaler"
    _set_max(api, namespace, name, keda, policy.min_replicas)
    progress(f"autoscaling: {kind} {namespace}/{name} held at {policy.min_replicas} replica(s) for {during} "
             f"(max_replicas {policy.max_replicas} set back after)")
    try:
        settle()
        yield
    except BaseException:
        try:
            _set_max(api, namespace, name, keda, policy.max_replicas)
        except GateError as exc:  # said, and the failure that brought us here goes on
            progress(f"{exc.summary}: {kind} {namespace}/{name} still holds {policy.min_replicas} replica(s)")
        raise
    _set_max(api, namespace, name, keda, policy.max_replicas)


def point_line(point: ScalePoint, metric: str) -> str:
    value = "not read" if point.metric is None else f"{point.metric:g}"
    return (f"HPA wants {point.desired}, has {point.current}; {point.ready} Ready, {point.serving} in the Service; "
            f"{metric} {value} per pod")


@dataclass(frozen=True)
class Watched:
    load: LoadRun
    started: float
    ended: float
    points: tuple[ScalePoint, ...]


def watch_scaling(run_load: Callable[[], LoadRun], read: Callable[[], ScalePoint], *, min_replicas: int,
                  after_s: Callable[[int], float], describe: Callable[[ScalePoint], str],
                  progress: Progress) -> Watched:
    """Run the load (here: Ctrl-C stops it as any load test) while a thread reads the scaling state every 2 s; after
    it, read on until min_replicas serve again having scaled out, for at most ``after_s(peak pods)`` (counted from
    when its pods are gone: past the last request's end, which the judgement counts from). Says every 10 s what it
    is waiting for; fails when the readings keep failing."""
    points: list[ScalePoint] = []
    failed: list[GateError] = []
    stop = threading.Event()
    started = time.time()

    def watch() -> None:
        said, missed = 0.0, 0
        while not stop.is_set():
            try:
                points.append(read())
                missed = 0
            except GateError as exc:
                missed += 1
                if missed >= MISSED_READINGS:
                    failed.append(exc)
                    progress(f"{exc.summary} ({missed} readings in a row): the autoscaling test stops reading")
                    return
            except Exception as exc:  # a thread's error is lost unless kept: the test fails with it
                failed.append(GateError(f"autoscaling: reading the scaling state failed: {type(exc).__name__}: "
                                        f"{exc}"))
                return
            if points and time.monotonic() - said >= PROGRESS_EVERY_S:
                said = time.monotonic()
                progress(f"autoscaling: load running {time.time() - started:.0f} s: {describe(points[-1])}")
            stop.wait(POLL_S)

    watcher = threading.Thread(target=watch, name="scaling-watch", daemon=True)
    watcher.start()
    try:
        run = run_load()
    finally:
        stop.set()
        watcher.join(3 * REQUEST_TIMEOUT_S + POLL_S)  # one reading's three API calls at most
    if failed:
        raise failed[0]
    ended = time.time()
    peak = max((max(p.current, p.serving) for p in points), default=0)
    if peak > min_replicas:
        limit = after_s(peak)
        reading = tolerant(read)

        def state() -> str | None:
            points.append(reading())
            return None if settled(points[-1], min_replicas) else describe(points[-1])

        wait_until(state, limit, lambda on, elapsed: progress(
            f"autoscaling: waiting for the scale-in, the load over {elapsed:.0f}/{limit:.0f} s ago: {on}"),
            poll_s=POLL_S)
    return Watched(run, started, ended, tuple(points))
