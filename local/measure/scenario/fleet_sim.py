"""A server fleet as a discrete-event model (SimPy): K instances x W workers behind a load balancer
that sends each request to the instance with the fewest outstanding requests; per instance a FIFO
queue of ``queue`` places (full: 503 at once) whose requests give up after ``queue_timeout_s``
(503); a fixed K, or target-tracking autoscaling on utilisation with a boot delay.

As in :mod:`lambda_sim`, one SimPy process walks the arrivals and a request in service is one
timeout event (no process per request); the autoscaler is a SimPy process of its own, waking every
evaluation period, and each instance it launches is a boot timeout. A request that gave up in a
queue is dropped when the queue is next looked at; its outcome (503 after the timeout) does not
depend on when that is.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from typing import Any, cast

import numpy as np
import simpy

from local.fleet.autoscale import scaling_step
from local.measure import cost
from local.measure.scenario.params import FleetParams
from local.measure.scenario.results import OK, REJECTED, SideRun

PROGRESS_EVERY = 1 << 16
Progress = Callable[[int, int], None]


class _Instance:
    __slots__ = ("index", "busy", "queue", "routable", "launched", "stopped", "served_ms")

    def __init__(self, index: int, launched: float) -> None:
        self.index, self.busy = index, 0
        self.queue: deque[int] = deque()
        self.routable, self.launched = False, launched
        self.stopped: float | None = None
        self.served_ms = 0.0  # service time completed since the autoscaler last looked


def simulate_fleet(arrivals: np.ndarray, params: FleetParams, *, seed: int = 0, measure_from: float = 0.0,
                   end_s: float | None = None, on_progress: Progress | None = None) -> SideRun:
    """Every arrival (seconds, sorted) through the fleet; requests before ``measure_from`` are a warm-up."""
    times = np.asarray(arrivals, dtype=float)
    n = times.size
    rng = np.random.default_rng(seed + 1)  # not the Lambda side's stream: the sides are independent
    service = params.service_ms.draw(rng, n)
    latency = np.zeros(n)
    status = np.zeros(n, dtype=np.int16)
    busy_ms = np.zeros(n)
    wait_ms = np.zeros(n)
    start = min(0.0, float(times[0])) if n else 0.0
    end = float(end_s if end_s is not None else (times[-1] if n else 0.0))
    env = simpy.Environment(initial_time=start)
    workers, places, patience, overhead = params.lanes, params.queue, params.queue_timeout_s, params.overhead_ms
    fleet: list[_Instance] = []
    routable: list[_Instance] = []
    changes: list[tuple[float, int]] = []  # (time, +1 launched / -1 stopped)
    notes: list[str] = []
    service_list = service.tolist()

    def launch(now: float, ready: bool) -> _Instance:
        instance = _Instance(len(fleet), now)
        fleet.append(instance)
        changes.append((now, 1))
        if ready:
            instance.routable = True
            routable.append(instance)
        return instance

    for _ in range(params.instances):
        launch(start, ready=True)

    def begin(instance: _Instance, i: int, waited_s: float) -> None:
        ms = service_list[i]
        held = max(0.0, ms - overhead)  # the worker's part; the rest overlaps with other requests
        instance.busy += 1
        busy_ms[i] = held
        wait_ms[i] = waited_s * 1000.0
        latency[i] = waited_s * 1000.0 + ms
        status[i] = OK
        env.timeout(held / 1000.0, (instance, i)).callbacks.append(finish)

    def finish(event: simpy.Event) -> None:
        instance, i = cast(tuple[_Instance, int], event.value)
        instance.busy -= 1
        instance.served_ms += busy_ms[i]
        now = env.now
        queue = instance.queue
        while queue:
            j = queue.popleft()
            waited = now - arrivals_list[j]
            if waited > patience:  # gave up at its deadline
                status[j], latency[j] = REJECTED, patience * 1000.0
                continue
            begin(instance, j, waited)
            break
        if not instance.routable and instance.busy == 0 and not queue and instance.stopped is None:
            instance.stopped = now  # drained after a scale-in
            changes.append((now, -1))

    def expire(queue: deque, now: float) -> None:
        while queue and now - arrivals_list[queue[0]] > patience:
            j = queue.popleft()
            status[j], latency[j] = REJECTED, patience * 1000.0

    arrivals_list = times.tolist()

    def arrive(env: simpy.Environment):
        timeout = env.timeout
        now = start
        for i in range(n):
            t = arrivals_list[i]
            if t > now:
                yield timeout(t - now)
                now = t
            if on_progress is not None and i % PROGRESS_EVERY == 0:
                on_progress(i, n)
            best, outstanding = None, math.inf
            for instance in routable:  # least outstanding requests (the ALB's algorithm of that name)
                if instance.queue:
                    expire(instance.queue, now)
                load = instance.busy + len(instance.queue)
                if load < outstanding:
                    best, outstanding = instance, load
            if best is None:
                status[i] = REJECTED
            elif best.busy < workers:
                begin(best, i, 0.0)
            elif len(best.queue) < places:
                best.queue.append(i)
            else:
                status[i] = REJECTED
        if on_progress is not None:
            on_progress(n, n)

    def autoscale(env: simpy.Environment):
        booting = [0]
        last_scale_in = -math.inf

        def ready(event: simpy.Event) -> None:
            booting[0] -= 1
            instance = cast(_Instance, event.value)
            instance.routable = True
            routable.append(instance)

        while env.now < end:
            yield env.timeout(params.evaluation_s)
            now = env.now
            served = sum(instance.served_ms for instance in routable)
            for instance in routable:
                instance.served_ms = 0.0
            outstanding = sum(instance.busy + len(instance.queue) for instance in routable)
            capacity_ms = len(routable) * workers * params.evaluation_s * 1000.0
            utilisation = served / capacity_ms if capacity_ms else 1.0
            # Target tracking: the size that would have run at the target; requests still waiting
            # count as demand too, so a fleet that is saturated (and queueing) grows.
            needed = (served / (params.evaluation_s * 1000.0) + max(0, outstanding - len(routable) * workers)) / workers
            change = scaling_step(routable=len(routable), booting=booting[0], utilisation=utilisation, demand=needed,
                                  target=params.target_utilisation, minimum=params.min_instances, maximum=params.max_instances,
                                  since_scale_in_s=now - last_scale_in, cooldown_s=params.scale_in_cooldown_s).change
            if change > 0:
                for _ in range(change):
                    booting[0] += 1
                    env.timeout(params.boot_s, launch(now, ready=False)).callbacks.append(ready)
            elif change < 0:
                last_scale_in = now
                for instance in sorted(routable, key=lambda x: x.busy + len(x.queue))[:-change]:
                    instance.routable = False
                    routable.remove(instance)
                    if instance.busy == 0 and not instance.queue:
                        instance.stopped = now
                        changes.append((now, -1))

    env.process(arrive(env))
    if params.autoscale:
        env.process(autoscale(env))
    env.run()
    for instance in fleet:  # whatever is still queued when the period ends is answered later
        expire(instance.queue, math.inf)

    order = sorted(changes)
    step_times = np.array([t for t, _ in order], dtype=float)
    counts = np.cumsum([d for _, d in order]).astype(float)
    run = SideRun("server", times, latency, status, np.zeros(n, dtype=bool), busy_ms, wait_ms,
                  (step_times, counts),
                  measure_from=measure_from, end_s=end, notes=notes)
    seconds = 0.0
    for instance in fleet:  # every instance-second of the measured period, from launch (booting is billed) to stop
        stopped = instance.stopped if instance.stopped is not None else run.end_s
        seconds += max(0.0, min(stopped, run.end_s) - max(instance.launched, run.measure_from))
    run.instance_s = seconds
    run.cost = fleet_cost(run, params)
    return run


def fleet_cost(run: SideRun, params: FleetParams) -> dict[str, float]:
    """USD for the measured period: its instance-seconds at the platform's price (an EC2 instance type's
    hour, or a Fargate task's vCPU- and GB-hours), and the Application Load Balancer's hours and LCUs,
    each hour of the period billed its own largest LCU dimension (:func:`local.measure.cost.alb_cost`)."""
    items = {"instances": run.instance_s / 3600.0 * params.hourly_usd}
    if params.load_balancer:
        items["load_balancer"] = sum(load_balancer_cost(run, params)[k] for k in ("hours_usd", "lcus_usd"))
    return items


def load_balancer_cost(run: SideRun, params: FleetParams) -> dict[str, Any]:
    """The load balancer's bill for the measured period, from the requests that reached it each hour."""
    counted = run.arrivals[run.counted]
    span = run.duration_s
    hours = max(1, math.ceil(span / 3600.0 - 1e-9))
    counts, _ = np.histogram(counted, bins=run.measure_from + 3600.0 * np.arange(hours + 1))
    return cost.alb_cost([float(c) for c in counts], request_bytes=params.request_bytes,
                         response_bytes=params.response_bytes, last_hour=(span - 3600.0 * (hours - 1)) / 3600.0)
