"""``python -m local fleet``: real ``local serve`` instances in cgroups behind a real HAProxy.

The autoscaling rule is checked as the pure function both the fleet and the simulation call; the
fleet itself answers through HAProxy with the in-process top-1, loses only a killed instance's
requests in progress and replaces it, scales out under load and back in when idle, and leaves no
process or cgroup behind. No timing assertions: evaluation periods are short so that tests end soon.
"""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import sys
import threading
import time

import httpx
import psutil
import pytest

from lambda_onnx.photos import by_name
from local.fleet import AutoscalePolicy, Fleet, scaling_step
from local.fleet.haproxy import config_text, haproxy_binary
from local.fleet.instance import ConfinementError, choose_confinement
from local.lambda_env.cgroups import CgroupUnavailableError, cgroups_of, find_hierarchy
from local.measure.core.closed_loop import start_workers
from tests.helpers.process import ROOT

SERVE_ARGS = ["--runtime", "onnxruntime"]
WAIT_S = 120.0  # for an instance to boot on a busy 2-CPU machine: a deadline, not a measurement


def step(**given):
    args = dict(routable=2, booting=0, utilisation=0.5, demand=1.0, target=0.5, minimum=1, maximum=10,
                since_scale_in_s=math.inf, cooldown_s=300.0)
    args.update(given)
    return scaling_step(**args)


# --- the rule -------------------------------------------------------------------------------------------


def test_the_rule_asks_for_the_size_that_would_run_at_the_target():
    assert step(routable=2, utilisation=0.9, demand=1.8) == (4, 2)  # ceil(1.8 / 0.5)
    assert step(routable=2, utilisation=0.5, demand=1.0) == (2, 0)  # on target: nothing
    assert step(routable=4, utilisation=0.1, demand=0.4) == (1, -3)


def test_instances_still_booting_count_as_there():
    assert step(routable=2, booting=2, utilisation=0.9, demand=1.8) == (4, 0)
    assert step(routable=2, booting=1, utilisation=1.0, demand=2.0) == (4, 1)


def test_waiting_requests_grow_a_saturated_fleet():
    saturated = step(routable=2, utilisation=1.0, demand=2.0)
    queueing = step(routable=2, utilisation=1.0, demand=2.0 + 3.0)  # three instances' worth waiting
    assert saturated.desired == 4 and queueing.desired == 10


def test_min_and_max_bound_the_size():
    assert step(routable=1, utilisation=1.0, demand=50.0, maximum=3) == (3, 2)
    assert step(routable=3, utilisation=0.0, demand=0.0, minimum=2) == (2, -1)
    assert step(routable=1, utilisation=0.0, demand=0.0) == (1, 0)


def test_scale_in_waits_for_the_cooldown_and_for_utilisation_below_target():
    assert step(routable=4, utilisation=0.1, demand=0.4, since_scale_in_s=299.0) == (1, 0)
    assert step(routable=4, utilisation=0.1, demand=0.4, since_scale_in_s=300.0) == (1, -3)
    # Below the size asked for only because requests waited: not idle, so no scale-in.
    assert step(routable=4, utilisation=0.5, demand=0.4).change == 0


def test_the_simulation_calls_the_same_rule():
    from local.measure.scenario import fleet_sim

    assert fleet_sim.scaling_step is scaling_step


# --- confinement where no cgroup can be made -------------------------------------------------------------


def no_cgroups(tmp_path):
    proc = tmp_path / "cgroup"
    proc.write_text("0::/\n")
    return {"root": tmp_path, "proc_cgroup": proc}


def test_without_a_cgroup_whole_cpus_fall_back_to_affinity_and_say_why(tmp_path):
    chosen = choose_confinement(1.0, 2048, **no_cgroups(tmp_path))
    assert chosen.kind == "affinity" and "no cgroup here" in chosen.note and "cpu and memory controllers" in chosen.note


def test_without_a_cgroup_a_fractional_share_or_a_required_cgroup_is_refused(tmp_path):
    with pytest.raises(ConfinementError, match="whole CPUs"):
        choose_confinement(0.5, 1024, **no_cgroups(tmp_path))
    with pytest.raises(ConfinementError, match="no cgroup for the instances"):
        choose_confinement(1.0, 2048, "cgroup", **no_cgroups(tmp_path))
    assert choose_confinement(0.5, 1024, "none", **no_cgroups(tmp_path)).kind == "none"


def test_the_haproxy_configuration_is_valid_and_says_what_the_fleet_needs(tmp_path):
    text = config_text("127.0.0.1", 8080, tmp_path / "admin.sock")
    for line in ("balance leastconn", "option httpchk GET /health", "retry-on conn-failure", "option redispatch",
                 "level admin", "timeout server"):
        assert line in text
    (tmp_path / "haproxy.cfg").write_text(text)
    check = subprocess.run([haproxy_binary(), "-c", "-f", str(tmp_path / "haproxy.cfg")], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


# --- the fleet ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def confinable():
    haproxy_binary()
    try:
        return find_hierarchy()
    except CgroupUnavailableError as exc:
        pytest.skip(f"no cgroup here: {exc.message}")


def classify(client: httpx.Client, url: str, photo: bytes) -> httpx.Response:
    return client.post(f"{url}/classify", content=photo, headers={"content-type": "image/png"}, timeout=60)


def top1(response: httpx.Response) -> str:
    return response.json()["predictions"][0]["label"]


def tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def assert_all_gone(processes: list[psutil.Process]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        left = [p for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        if not left:
            return
        time.sleep(0.1)
    pytest.fail(f"left running: {[(p.pid, ' '.join(p.cmdline()[:6])) for p in left]}")


@pytest.mark.slow
def test_local_fleet_answers_through_haproxy_and_ctrl_c_stops_everything(lite0, lite0_classifier, confinable):
    photo = by_name("chelsea").read()
    expected = lite0_classifier.predict(photo).predictions[0].label
    command = subprocess.Popen([sys.executable, "-m", "local", "fleet", "--model", str(lite0), "--instances", "2",
                                "--status-every", "1"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines: list[str] = []
    try:
        assert command.stdout is not None
        for line in command.stdout:
            lines.append(line)
            if "fleet ready" in line or "error" in line:
                break
        found = re.search(r"POST (http://127\.0\.0\.1:\d+)/classify", "".join(lines))
        assert found, "".join(lines)
        url = found.group(1)
        started = tree(command.pid)
        names = [" ".join(p.cmdline()[:5]) for p in started]
        assert any("haproxy" in n for n in names) and sum("local serve" in n for n in names) == 2, names
        assert any("cgroup" in line and "1 CPU quota" in line for line in lines), "".join(lines)
        with httpx.Client() as client:
            answers = [classify(client, url, photo) for _ in range(6)]
        assert [a.status_code for a in answers] == [200] * 6
        assert {top1(a) for a in answers} == {expected}
        command.send_signal(signal.SIGINT)
        out, _ = command.communicate(timeout=60)
    finally:
        if command.poll() is None:  # a failed assertion above: let it stop what it started, then make sure
            command.send_signal(signal.SIGINT)
            try:
                command.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                command.kill()
                command.communicate()
    assert command.returncode == 0, "".join(lines) + out
    assert "stopped: " in out
    assert_all_gone(started)
    assert cgroups_of(command.pid, confinable) == []


@pytest.mark.slow
def test_a_killed_instance_costs_only_its_requests_in_flight_and_is_replaced(lite0, lite0_classifier, confinable):
    photo = by_name("chelsea").read()
    expected = lite0_classifier.predict(photo).predictions[0].label
    queue, clients = 8, 6  # the survivor alone holds the whole load: no 503 for lack of room
    outcomes: list[tuple[int, str]] = []  # (status, top-1 or error), 0 for no answer
    lock = threading.Lock()
    with Fleet(lite0, 2, serve_args=[*SERVE_ARGS, "--max-queue", str(queue)]) as fleet:
        started = [p for i in fleet.instances() for p in tree(i.pid)] + tree(fleet.haproxy.pid)
        sessions = [httpx.Client() for _ in range(clients)]

        def send(worker: int, seq: int, t0: float) -> tuple[int, str]:
            try:
                answer = classify(sessions[worker], fleet.url, photo)
            except httpx.HTTPError as exc:
                return 0, type(exc).__name__
            return answer.status_code, top1(answer) if answer.status_code == 200 else answer.text[:80]

        def keep(outcome: tuple[int, str]) -> None:
            with lock:
                outcomes.append(outcome)

        run = start_workers(clients, send, duration_s=600, on_result=keep, pause_after=lambda o: 0.0 if o[0] == 200 else 0.05)
        try:
            while len(outcomes) < 20:
                time.sleep(0.05)
            kill = fleet.kill(0)
            deadline = time.monotonic() + WAIT_S
            while not (len(fleet.up()) == 2 and kill.name not in fleet.up()) and time.monotonic() < deadline:
                time.sleep(0.2)
            after = len(outcomes)
            while len(outcomes) < after + 20:  # the replacement takes its share
                time.sleep(0.05)
            started += [p for i in fleet.instances() if i.state == "up" for p in tree(i.pid)]
        finally:
            run.stop.set()
            run.wait(120)
            for session in sessions:
                session.close()
        status, instances = fleet.status(), fleet.instances()
    failed = [o for o in outcomes if o[0] != 200]
    right = [o for o in outcomes if o[0] == 200]
    print(f"{len(outcomes)} requests; {kill.name} had {kill.in_flight} in progress just before the kill; {len(failed)} "
          f"failed: {failed}; HAProxy's sessions to it without an answer: {status.unanswered}")
    assert len(fleet.up()) == 0
    assert {o[1] for o in right} == {expected}
    # Every failure was a request the dead instance had taken (HAProxy's own account of what it sent
    # there and got no answer for): none on the survivor, none sent after HAProxy took it out.
    assert len(failed) <= status.unanswered <= queue + 1
    assert all(o[0] in (0, 502, 504) for o in failed)
    assert status.deaths == 1 and status.replacements == 1
    dead = next(i for i in instances if i.name == kill.name)
    assert dead.state == "dead" and dead.exit_code == -signal.SIGKILL
    assert [i.state for i in instances].count("up") == 2
    assert_all_gone(started)
    assert cgroups_of(os.getpid(), confinable) == []


@pytest.mark.slow
def test_autoscaling_scales_out_under_load_and_in_when_idle(lite0, lite0_classifier, confinable):
    photo = by_name("chelsea").read()
    expected = lite0_classifier.predict(photo).predictions[0].label
    policy = AutoscalePolicy(target=0.5, minimum=1, maximum=2, evaluation_s=2.0, cooldown_s=4.0)
    events: list[str] = []
    outcomes: list[tuple[int, str]] = []
    with Fleet(lite0, 1, serve_args=SERVE_ARGS, autoscale=policy, on_event=events.append) as fleet:
        assert fleet.cpus_per_instance == len(os.sched_getaffinity(0)) / 2
        with httpx.Client() as trickle_client:
            heavy = [httpx.Client() for _ in range(3)]

            def send(worker: int, seq: int, t0: float) -> tuple[int, str]:
                answer = classify(heavy[worker], fleet.url, photo)
                return answer.status_code, top1(answer) if answer.status_code == 200 else answer.text[:80]

            load = start_workers(3, send, duration_s=600, on_result=outcomes.append)
            try:
                deadline = time.monotonic() + WAIT_S
                while len(fleet.up()) < 2 and time.monotonic() < deadline:
                    time.sleep(0.2)
                assert len(fleet.up()) == 2, events
                started = [p for i in fleet.instances() for p in tree(i.pid)] + tree(fleet.haproxy.pid)
            finally:
                load.stop.set()
                load.wait(120)
                for session in heavy:
                    session.close()
            # A trickle (well under the target) while the autoscaler drains an instance: nothing is lost.
            deadline = time.monotonic() + WAIT_S
            while len(fleet.up()) > 1 and time.monotonic() < deadline:
                answer = classify(trickle_client, fleet.url, photo)
                outcomes.append((answer.status_code, top1(answer) if answer.status_code == 200 else answer.text))
                time.sleep(0.5)
            while any(i.state == "draining" for i in fleet.instances()) and time.monotonic() < deadline:
                time.sleep(0.2)
            history, instances = fleet.history(), fleet.instances()
    assert len([i for i in instances if i.state == "up"]) == 1, events
    assert any(i.state == "stopped" for i in instances), events
    assert max(count for _, count in history) == 2 and history[-1][1] == 1, history
    assert any("launching 1" in e for e in events) and any("draining 1" in e for e in events), events
    assert outcomes and all(o == (200, expected) for o in outcomes)
    assert_all_gone(started)
    assert cgroups_of(os.getpid(), confinable) == []
