"""A fleet of ``local serve`` instances behind HAProxy on this machine, fixed or autoscaled.

``with Fleet(model, instances=2) as fleet:`` starts HAProxy (:mod:`local.fleet.haproxy`) and two
instances (:mod:`local.fleet.instance`), each confined to its share of the CPUs, and returns once
both take traffic through ``fleet.url`` (the same ``POST /classify`` contract as one server). A
supervisor thread then, every quarter second:

- notices an instance that died (SIGKILL, an OOM kill, a crash): it takes it out of HAProxy (which
  has stopped sending it requests at its first refused connection anyway), removes its cgroup (and
  the orphaned lanes in it), counts it, and starts a replacement unless ``replace=False``;
- samples HAProxy's counters and the instances' CPU time for :meth:`Fleet.status`;
- with ``autoscale=AutoscalePolicy(...)``, every ``evaluation_s`` applies the target-tracking rule
  of :mod:`local.fleet.autoscale` (the simulation's) to the instances' CPU utilisation: CPU time
  used over the quota they had. Scale-out launches instances (taking traffic once healthy, or after
  ``boot_delay_s`` if that is longer); scale-in drains the least busy: HAProxy's drain state first
  (no new requests), then SIGTERM (the server answers what it accepted, then exits).

Leaving the ``with`` block (an error and Ctrl-C included) stops everything it started: the
instances (SIGTERM, then SIGKILL), their cgroups, HAProxy and its files.
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lambda_onnx.errors import BackendUnavailableError
from local.fleet.autoscale import EVALUATION_S, SCALE_IN_COOLDOWN_S, scaling_step
from local.fleet.haproxy import BACKEND, FRONTEND, HAProxyError, HAProxyProcess
from local.fleet.instance import (
    BOOTING,
    DEAD,
    DRAINING,
    FAILED,
    MEMORY_MB_PER_CPU,
    STOPPED,
    UP,
    Confinement,
    Instance,
    choose_confinement,
)

TICK_S = 0.25
SAMPLE_S = 1.0
DRAIN_TIMEOUT_S = 30.0  # SIGKILL after this (the server's own drain deadline comes first)
Event = Callable[[str], None]


@dataclass(frozen=True)
class AutoscalePolicy:
    """Target tracking on CPU utilisation, as :func:`~local.fleet.autoscale.scaling_step` applies it."""

    target: float = 0.5  # CPU used over quota, 0..1
    minimum: int = 1
    maximum: int = 2
    evaluation_s: float = EVALUATION_S
    cooldown_s: float = SCALE_IN_COOLDOWN_S
    boot_delay_s: float | None = None  # None: an instance takes traffic once healthy (its measured boot)

    def __post_init__(self) -> None:
        if not 0 < self.target <= 1 or not 1 <= self.minimum <= self.maximum or self.evaluation_s <= 0 or self.cooldown_s < 0:
            raise ValueError("autoscaling needs 0 < target <= 1, 1 <= min <= max, a positive evaluation period and a "
                             "cooldown of 0 or more")


@dataclass(frozen=True)
class InstanceInfo:
    name: str
    state: str  # booting, up, draining, stopped, dead, failed
    address: str
    pid: int | None
    boot_s: float | None  # spawn to first healthy answer
    exit_code: int | None  # negative: the signal that ended it


@dataclass(frozen=True)
class Kill:
    """What :meth:`Fleet.kill` did: the instance, and HAProxy's count of its requests in progress just before."""

    name: str
    in_flight: int


@dataclass(frozen=True)
class FleetStatus:
    elapsed_s: float
    up: int
    booting: int
    draining: int
    requests: int  # answered through HAProxy so far
    requests_per_s: float  # over the last second
    cpu_percent: float  # the up instances' CPU time over their quota, last second
    errors_5xx: int  # answers with a 5xx status (HAProxy's 502 for a dead server's requests, a server's 503s)
    deaths: int  # instances that died by themselves (a kill, a crash)
    unanswered: int  # at most this many requests were lost with instances that died (see :func:`unanswered`)
    replacements: int
    desired: int | None  # the autoscaler's last decision
    utilisation: float | None  # what it was based on
    boot_s: float | None  # the last measured boot (spawn to first healthy answer)
    note: str  # the latest event

    def line(self) -> str:
        parts = [f"{self.elapsed_s:6.0f} s", f"up {self.up}", f"booting {self.booting}", f"draining {self.draining}",
                 f"{self.requests_per_s:6.1f} req/s", f"CPU {self.cpu_percent:3.0f}%", f"5xx {self.errors_5xx}"]
        if self.desired is not None and self.utilisation is not None:
            parts.append(f"desired {self.desired} (util {self.utilisation:.0%})")
        if self.deaths:
            parts.append(f"died {self.deaths} (<= {self.unanswered} request(s) lost), replaced {self.replacements}")
        if self.boot_s is not None:
            parts.append(f"boot {self.boot_s:.1f} s")
        return " | ".join(parts)


def unanswered(server: dict[str, str]) -> int:
    """Requests HAProxy sent to a server that it never answered, from its ``show stat`` row: sessions
    (``stot``) less answers (``hrsp_*``). An upper bound of the requests lost with it: a session
    whose connection was refused and that HAProxy then redispatched to another server (and answered
    there) counts too. HAProxy 2.6 logged none of the lost ones in our runs (it closed their client
    connections without an answer), so nothing told them apart more exactly."""
    answers = sum(int(server.get(f"hrsp_{kind}") or 0) for kind in ("1xx", "2xx", "3xx", "4xx", "5xx", "other"))
    return max(0, int(server.get("stot") or 0) - answers)


class Fleet:
    """K ``local serve`` instances behind HAProxy; see the module docstring.

    ``cpus_per_instance`` defaults to this machine's CPUs over the most instances there can be (K,
    or the autoscaler's maximum); ``serve_args`` go to every ``local serve`` as they are;
    ``confine`` is auto (a cgroup, else CPU affinity), cgroup, affinity or none; ``on_event`` gets
    one line per event (an instance up, dead, draining; a scaling decision).
    """

    def __init__(self, model: str | Path, instances: int = 2, *, serve_args: Sequence[str] = (), host: str = "127.0.0.1",
                 port: int | None = None, cpus_per_instance: float | None = None,
                 memory_mb_per_cpu: int = MEMORY_MB_PER_CPU, confine: str = "auto", replace: bool = True,
                 autoscale: AutoscalePolicy | None = None, on_event: Event | None = None, tick_s: float = TICK_S) -> None:
        if instances < 1:
            raise ValueError("a fleet needs at least one instance")
        if autoscale is not None and not autoscale.minimum <= instances <= autoscale.maximum:
            raise ValueError(f"the starting size ({instances}) must be within the autoscaler's min {autoscale.minimum} "
                             f"and max {autoscale.maximum}")
        self.model, self.initial, self.serve_args = Path(model), instances, list(serve_args)
        self.autoscale, self.replace, self.tick_s = autoscale, replace, tick_s
        self._on_event = on_event
        slots = max(instances, autoscale.maximum if autoscale else 0)
        machine = float(len(os.sched_getaffinity(0)))
        self.cpus_per_instance = cpus_per_instance or machine / slots
        self._memory_mb = max(256, round(memory_mb_per_cpu * self.cpus_per_instance))
        self._confine_mode = confine
        self.confinement: Confinement | None = None
        self.haproxy = HAProxyProcess(host, port)
        self._instances: list[Instance] = []
        self._boots: list[threading.Thread] = []
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None
        self.started_at = time.monotonic()  # t = 0 of history() and status(), on the monotonic clock
        self._history: list[tuple[float, int]] = []
        self._deaths = self._replacements = self._unanswered = 0
        self._note = ""
        self._sample: tuple[float, int, dict[str, float]] | None = None  # (time, requests, cpu seconds by instance)
        self._rates = (0.0, 0.0)  # requests/s, CPU %
        self._totals = (0, 0)  # requests, 5xx
        self._marks: dict[str, tuple[float, float]] = {}  # instance -> (time, cpu seconds) at the last evaluation
        self._next_evaluation = self._last_evaluation = math.inf
        self._last_scale_in = -math.inf
        self._decision: tuple[int, float] | None = None

    # --- the public surface ---------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """HAProxy's address: ``POST {url}/classify``."""
        return self.haproxy.url

    def start(self) -> Fleet:
        """Start HAProxy and the instances; returns once every instance takes traffic."""
        try:
            self.confinement = choose_confinement(self.cpus_per_instance, self._memory_mb, self._confine_mode)
            self._event(f"confinement: {self.confinement.note}")
            self.haproxy.start()
            self.started_at = time.monotonic()
            self._record()
            first = [self._launch() for _ in range(self.initial)]
            for thread in list(self._boots):
                thread.join()
            failed = [i for i in first if i.state == FAILED]
            if failed:
                raise BackendUnavailableError(f"instance {failed[0].name} did not start: {failed[0].error}")
            self._last_evaluation = time.monotonic()
            self._next_evaluation = self._last_evaluation + self.autoscale.evaluation_s if self.autoscale else math.inf
            self._supervisor = threading.Thread(target=self._supervise, name="fleet-supervisor", daemon=True)
            self._supervisor.start()
        except BaseException:
            self.stop()
            raise
        return self

    def instances(self) -> list[InstanceInfo]:
        """Every instance started so far, in order (the ended ones too, with their state)."""
        with self._lock:
            return [InstanceInfo(i.name, i.state, i.address, i.server.pid, i.boot_s, i.exit_code) for i in self._instances]

    def up(self) -> list[str]:
        """The names of the instances taking traffic now."""
        with self._lock:
            return [i.name for i in self._instances if i.state == UP]

    def in_flight(self) -> dict[str, int]:
        """HAProxy's count of requests in progress on each server (``scur``)."""
        stats = self.haproxy.stats()
        return {key.split("/", 1)[1]: int(row["scur"] or 0) for key, row in stats.items()
                if key.startswith(BACKEND + "/") and not key.endswith("/BACKEND")}

    def kill(self, which: int | str = 0, sig: int = signal.SIGKILL) -> Kill:
        """Send ``sig`` (SIGKILL) to an up instance (by position among :meth:`up`, or name), as a crash
        would; returns its name and the requests HAProxy had in progress on it just before."""
        with self._lock:
            ups = [i for i in self._instances if i.state == UP]
            target = next((i for i in ups if i.name == which), None) if isinstance(which, str) else ups[which]
            if target is None:
                raise ValueError(f"no up instance {which!r} (up: {[i.name for i in ups]})")
            in_flight = self.in_flight().get(target.name, 0)
            target.kill(sig)
        return Kill(target.name, in_flight)

    def status(self) -> FleetStatus:
        """What the fleet is doing now (counts, last second's rates, the autoscaler's last decision)."""
        with self._lock:
            states = [i.state for i in self._instances]
            boots = [i.boot_s for i in self._instances if i.boot_s is not None]
            desired, utilisation = self._decision if self._decision else (None, None)
            return FleetStatus(time.monotonic() - self.started_at, states.count(UP), states.count(BOOTING), states.count(DRAINING),
                               self._totals[0], self._rates[0], self._rates[1], self._totals[1], self._deaths,
                               self._unanswered, self._replacements, desired, utilisation, boots[-1] if boots else None, self._note)

    def history(self) -> list[tuple[float, int]]:
        """(seconds since :attr:`started_at`, instances running) at every change: launched and not yet
        stopped (booting, up or draining), as the simulation counts them (an instance is billed from launch)."""
        with self._lock:
            return list(self._history)

    def boot_times(self) -> list[float]:
        """Every measured boot (spawn to first healthy answer), in seconds."""
        with self._lock:
            return [i.boot_s for i in self._instances if i.boot_s is not None]

    def scale_to(self, count: int) -> None:
        """Launch or drain instances until ``count`` are running (what the autoscaler does)."""
        with self._lock:
            running = [i for i in self._instances if i.state in (BOOTING, UP)]
            for _ in range(count - len(running)):
                self._launch()
            if count < len(running):
                self._retire(len(running) - count)

    def restart_autoscaler(self, at: float | None = None) -> None:
        """Start the autoscaler afresh: its first evaluation one period after ``at`` (a
        ``time.monotonic()`` time, default now), the next ones on that clock, its utilisation counted
        from now and no scale-in before; as the simulation's autoscaler starts with its period (the
        replay lines the two up this way)."""
        if self.autoscale is None:
            return
        now = time.monotonic()
        with self._lock:
            ups = [i for i in self._instances if i.state == UP]
            self._marks = {i.name: (now, i.cpu_seconds()) for i in ups}
            self._last_evaluation, self._last_scale_in = now, -math.inf
            self._next_evaluation = (now if at is None else at) + self.autoscale.evaluation_s

    def stop(self) -> None:
        """Stop everything started (idempotent): the supervisor, every instance, HAProxy."""
        self._stopping.set()
        if self._supervisor is not None and self._supervisor is not threading.current_thread():
            self._supervisor.join()
        with self._lock:
            live = [i for i in self._instances if i.ended_at is None]
        stoppers = [threading.Thread(target=self._stop_instance, args=(i,), daemon=True) for i in live]
        for thread in stoppers:
            thread.start()
        for thread in stoppers + self._boots:
            thread.join()
        self.haproxy.close()

    def __enter__(self) -> Fleet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- launching and stopping instances -----------------------------------------------------------------

    def _launch(self) -> Instance:
        assert self.confinement is not None
        with self._lock:
            taken = {i.slot for i in self._instances if i.ended_at is None}
            slot = next(s for s in range(len(self._instances) + 1) if s not in taken)
            instance = Instance(len(self._instances) + 1, self.model, self.serve_args, self.confinement, slot)
            self._instances.append(instance)
            self._record()
            thread = threading.Thread(target=self._boot, args=(instance,), name=f"fleet-boot-{instance.name}", daemon=True)
            self._boots = [t for t in self._boots if t.is_alive()] + [thread]
        thread.start()
        return instance

    def _boot(self, instance: Instance) -> None:
        try:
            instance.boot()
        except (BackendUnavailableError, OSError, ValueError) as exc:  # ValueError: stopped as it spawned (its log closed)
            with self._lock:
                instance.state, instance.error = FAILED, getattr(exc, "message", str(exc))
                if not self._stopping.is_set():
                    self._event(f"{instance.name} failed to start: {instance.error}")
            self._stop_instance(instance)
            return
        pad = (self.autoscale.boot_delay_s or 0.0) if self.autoscale else 0.0
        if self._stopping.wait(max(0.0, instance.spawned + pad - time.monotonic())):
            return
        with self._lock:
            if instance.state != BOOTING or self._stopping.is_set():
                return
            try:
                self.haproxy.add_server(instance.name, instance.address)
            except HAProxyError as exc:
                instance.state, instance.error = FAILED, exc.message
                self._event(f"{instance.name}: {exc.message}")
                return
            instance.state, instance.up_at = UP, time.monotonic()
            self._marks[instance.name] = (instance.up_at, instance.cpu_seconds())
            self._event(f"{instance.name} up on {instance.address}, pid {instance.server.pid} (boot {instance.boot_s:.1f} s: "
                        "spawn to first healthy answer)")

    def _retire(self, count: int) -> None:
        """Drain the ``count`` up instances with the fewest requests in progress."""
        busy = self.in_flight()
        ups = sorted((i for i in self._instances if i.state == UP), key=lambda i: busy.get(i.name, 0))
        for instance in ups[:count]:
            instance.state = DRAINING
            self._record()
            try:
                self.haproxy.drain_server(instance.name)
            except HAProxyError as exc:
                self._event(f"{instance.name}: {exc.message}")
            self._event(f"{instance.name} draining (no new requests; SIGTERM: it answers what it has, then exits)")
            threading.Thread(target=self._stop_instance, args=(instance,), name=f"fleet-drain-{instance.name}", daemon=True).start()

    def _stop_instance(self, instance: Instance) -> None:
        was_routed = instance.state in (UP, DRAINING, DEAD)
        instance.stop(DRAIN_TIMEOUT_S)
        if was_routed and self.haproxy.alive():
            try:
                instance.final_stats = self.haproxy.stats().get(f"{BACKEND}/{instance.name}", {})
                self.haproxy.delete_server(instance.name)
            except HAProxyError as exc:
                self._event(f"{instance.name}: {exc.message}")
            if instance.state == DEAD:
                lost = unanswered(instance.final_stats)
                with self._lock:
                    self._unanswered += lost
                self._event(f"{instance.name}: at most {lost} request(s) it had were lost (HAProxy's sessions to it without an "
                            "answer; one that could not connect and was retried elsewhere counts too)")
        with self._lock:
            if instance.state in (BOOTING, UP, DRAINING):
                instance.state = STOPPED
            self._record()

    # --- the supervisor -------------------------------------------------------------------------------------

    def _supervise(self) -> None:
        while not self._stopping.wait(self.tick_s):
            try:
                self._check_deaths()
                now = time.monotonic()
                if self._sample is None or now - self._sample[0] >= SAMPLE_S:
                    self._take_sample(now)
                if now >= self._next_evaluation and self.autoscale is not None:
                    while self._next_evaluation <= now:  # on a fixed clock: a late tick does not shift the next ones
                        self._next_evaluation += self.autoscale.evaluation_s
                    self._evaluate(now)
            except HAProxyError as exc:  # HAProxy itself died: nothing serves any more
                if not self._stopping.is_set():
                    self._event(f"HAProxy: {exc.message}")

    def _check_deaths(self) -> None:
        with self._lock:
            dead = [i for i in self._instances if i.state in (BOOTING, UP) and i.healthy_at is not None and i.exited()]
            for instance in dead:
                code = instance.server.returncode
                instance.state, instance.exit_code = DEAD, code
                self._deaths += 1
                self._record()
                how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
                message = f"{instance.name} died ({how}); its requests in progress failed"
                if self.replace:
                    replacement = self._launch()
                    self._replacements += 1
                    message += f"; starting {replacement.name} to replace it"
                else:
                    message += "; not replaced (replace=False)"
                self._event(message)
        for instance in dead:
            threading.Thread(target=self._stop_instance, args=(instance,), daemon=True).start()

    def _take_sample(self, now: float) -> None:
        stats = self.haproxy.stats()
        front = stats.get(f"{FRONTEND}/FRONTEND", {})
        requests, errors = int(front.get("req_tot") or 0), int(front.get("hrsp_5xx") or 0)
        with self._lock:
            ups = [i for i in self._instances if i.state == UP]
        cpu = {i.name: i.cpu_seconds() for i in ups}
        if self._sample is not None:
            then, before_requests, before_cpu = self._sample
            elapsed = max(1e-9, now - then)
            used = sum(cpu[n] - before_cpu[n] for n in cpu if n in before_cpu)
            quota = self.cpus_per_instance * elapsed * sum(1 for n in cpu if n in before_cpu)
            self._rates = ((requests - before_requests) / elapsed, 100.0 * used / quota if quota else 0.0)
        self._sample, self._totals = (now, requests, cpu), (requests, errors)

    def _evaluate(self, now: float) -> None:
        assert self.autoscale is not None
        policy = self.autoscale
        with self._lock:
            ups = [i for i in self._instances if i.state == UP]
            booting = sum(1 for i in self._instances if i.state == BOOTING)
        used = capacity = 0.0
        for instance in ups:
            then, before = self._marks.get(instance.name, (now, instance.cpu_seconds()))
            cpu = instance.cpu_seconds()
            used += cpu - before
            capacity += self.cpus_per_instance * (now - then)
            self._marks[instance.name] = (now, cpu)
        utilisation = used / capacity if capacity else 1.0
        # Requests waiting beyond what the lanes hold count as demand too, as in the simulation.
        lanes = max(1, math.floor(self.cpus_per_instance))
        busy = self.in_flight()
        waiting = max(0, sum(busy.get(i.name, 0) for i in ups) - len(ups) * lanes) / lanes
        period, self._last_evaluation = now - self._last_evaluation, now  # the ticks make it a little over evaluation_s
        demand = used / (self.cpus_per_instance * period) + waiting
        desired, change = scaling_step(routable=len(ups), booting=booting, utilisation=utilisation, demand=demand,
                                       target=policy.target, minimum=policy.minimum, maximum=policy.maximum,
                                       since_scale_in_s=now - self._last_scale_in, cooldown_s=policy.cooldown_s)
        with self._lock:
            self._decision = (desired, utilisation)
            if change > 0:
                self._event(f"autoscale: CPU {utilisation:.0%} of quota (target {policy.target:.0%}), demand {demand:.2f} "
                            f"instance(s): {len(ups)} up + {booting} booting -> {desired}, launching {change}")
                for _ in range(change):
                    self._launch()
            elif change < 0:
                self._last_scale_in = now
                self._event(f"autoscale: CPU {utilisation:.0%} of quota (target {policy.target:.0%}): {len(ups)} up -> "
                            f"{desired}, draining {-change}")
                self._retire(-change)

    def _record(self) -> None:
        with self._lock:
            count = sum(1 for i in self._instances if i.state in (BOOTING, UP, DRAINING))
            if not self._history or self._history[-1][1] != count:
                self._history.append((time.monotonic() - self.started_at, count))

    def _event(self, message: str) -> None:
        self._note = message
        if self._on_event is not None:
            self._on_event(message)
