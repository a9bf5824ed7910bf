"""Gateway throughput and latency with wrk: ``python bench/gateway.py [--duration 10] [--connections 32]``.

Starts a private mosquitto, influxd and recorder (or uses ``--mqtt-port``; ``--no-recorder`` skips the durable
scenario) and a gateway process (or uses ``--url``), then drives wrk with Lua scripts:

* ``POST /write?ack=broker`` (``bench/gateway_write.lua``): the seed body with a fresh timestamp per request;
  each 202 means the broker acknowledged it (QoS 1 PUBACK): the fast path
* ``POST /write`` (durable, the default): each 200 means the recorder confirmed the record in InfluxDB
* ``POST /mqtt/publish`` (``bench/gateway_command.lua``) ``{"command": "DISCHARGE 50kW"}``

Prints req/s, p50/p90/p99 latency, non-2xx answers, the gateway's (and the recorder's) CPU use, and the ratio
to the issue's baseline (Flask + gunicorn writing to InfluxDB per request: ~485 req/s). The fast path and the
command route have a target (>= 2,400 req/s with p99 < 20 ms on this 2-core box); the durable write is
reported against the same baseline, which also waited for the database. The load average is printed too: wrk,
the broker, the gateway, the recorder and influxd share the two cores with whatever else runs.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from deploy import stack  # noqa: E402

BASELINE_RPS = 485.0
TARGET_RPS = 2400.0
TARGET_P99_MS = 20.0
#: (name, path, script, has the 2,400 req/s target, needs the recorder)
SCENARIOS = (
    ("POST /write ack=broker", "/write?ack=broker", "gateway_write.lua", True, False),
    ("POST /write (stored)", "/write", "gateway_write.lua", False, True),
    ("POST /mqtt/publish", "/mqtt/publish", "gateway_command.lua", True, False),
)
_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


@dataclass(frozen=True)
class Result:
    """One wrk run."""

    name: str
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: int
    gateway_cpu: float | None
    recorder_cpu: float | None = None
    targeted: bool = True

    @property
    def meets_target(self) -> bool:
        if not self.targeted:
            return self.non_2xx == 0
        return self.rps >= TARGET_RPS and self.p99_ms < TARGET_P99_MS and self.non_2xx == 0


def _ms(text: str) -> float:
    match = re.fullmatch(r"([0-9.]+)(us|ms|s)", text)
    if match is None:
        raise ValueError(f"cannot read latency {text!r}")
    return float(match.group(1)) * _UNITS_MS[match.group(2)]


def parse_wrk(name: str, output: str, gateway_cpu: float | None) -> Result:
    """The numbers of ``wrk --latency`` output."""
    def find(pattern: str, default: str | None = None) -> str:
        match = re.search(pattern, output)
        if match is None:
            if default is None:
                raise ValueError(f"wrk output lacks {pattern!r}:\n{output}")
            return default
        return match.group(1)

    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    return Result(
        name=name,
        rps=float(find(r"Requests/sec:\s+([0-9.]+)")),
        p50_ms=_ms(find(r"\s50%\s+([0-9.]+\w+)")),
        p90_ms=_ms(find(r"\s90%\s+([0-9.]+\w+)")),
        p99_ms=_ms(find(r"\s99%\s+([0-9.]+\w+)")),
        requests=int(find(r"(\d+) requests in")),
        non_2xx=int(find(r"Non-2xx or 3xx responses:\s+(\d+)", "0")),
        socket_errors=sum(int(n) for n in socket_errors.groups()) if socket_errors else 0,
        gateway_cpu=gateway_cpu,
    )


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_wrk(url: str, script: Path, *, threads: int, connections: int, duration: float, path: str = "") -> str:
    """wrk's output for one run (``path`` is passed to the script: gateway_write.lua requests it)."""
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration:g}s", "--latency", "-s", str(script), url]
    if path:
        argv += ["--", path]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr}{done.stdout}")
    return done.stdout


def _healthy(base: str) -> bool:
    try:
        with urllib.request.urlopen(base + "/health", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@contextlib.contextmanager
def broker(port: int | None, workdir: Path) -> Iterator[tuple[str, int]]:
    """A broker to publish to: the given one, or a private mosquitto started now."""
    if port is not None:
        yield "127.0.0.1", port
        return
    with stack.start_mosquitto(workdir / "mosquitto", die_with_parent=True) as started:
        yield started.host, started.port


ROOT_TOPIC = "bench/bess/v1"


@contextlib.contextmanager
def recorder(mqtt: tuple[str, int], workdir: Path, enabled: bool) -> Iterator[int | None]:
    """influxd and a recorder process storing the gateway's writes (for the durable scenario); yields its pid."""
    if not enabled:
        yield None
        return
    with stack.start_influxd(workdir / "influxdb", die_with_parent=True) as influxd:
        stack.create_database(influxd.url, "bench")
        node_id = f"recorder-bench-{os.getpid()}"
        env = {**os.environ, "BESS_MQTT_HOST": mqtt[0], "BESS_MQTT_PORT": str(mqtt[1]),
               "BESS_INFLUX_URL": influxd.url, "BESS_INFLUX_DB": "bench", "BESS_TOPIC_ROOT": ROOT_TOPIC,
               "BESS_NODE_ID": node_id, "BESS_LOG_LEVEL": "WARNING"}
        log = (workdir / "recorder.log").open("wb")
        proc = subprocess.Popen([sys.executable, "-m", "nodes.recorder"], cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT,
                                preexec_fn=stack.parent_death_preexec())  # noqa: PLW1509 (main thread only)
        try:
            topic = f"{ROOT_TOPIC}/node/{node_id}/status"
            deadline = time.monotonic() + 30
            while b'"online"' not in stack.read_retained(mqtt[0], mqtt[1], topic, 1.0).get(topic, b""):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"recorder did not come online; log:\n{stack.tail(workdir / 'recorder.log')}")
                time.sleep(0.1)
            yield proc.pid
        finally:
            stack.stop_process(proc, 20)
            log.close()


@contextlib.contextmanager
def gateway(url: str | None, mqtt: tuple[str, int], workdir: Path) -> Iterator[tuple[str, int | None]]:
    """A gateway to load: the given URL, or a ``python -m nodes.gateway`` process started now."""
    if url is not None:
        yield url.rstrip("/"), None
        return
    port = stack.free_port()
    env = {
        **os.environ,
        "BESS_MQTT_HOST": mqtt[0],
        "BESS_MQTT_PORT": str(mqtt[1]),
        "BESS_GATEWAY_PORTS": str(port),
        "BESS_TOPIC_ROOT": ROOT_TOPIC,
        "BESS_NODE_ID": f"gateway-bench-{os.getpid()}",
        "BESS_LOG_LEVEL": "WARNING",
    }
    log = (workdir / "gateway.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "nodes.gateway"], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT,
                            preexec_fn=stack.parent_death_preexec())  # noqa: PLW1509 (main thread only)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while not _healthy(base):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gateway did not become healthy; log:\n{stack.tail(workdir / 'gateway.log')}")
            time.sleep(0.1)
        yield base, proc.pid
    finally:
        stack.stop_process(proc, 10)
        log.close()


def introduce_battery(base: str) -> None:
    """Write one record for the default battery, as the seed's first curl line does: commands to a battery the
    gateway has never seen are refused (404), and the command scenario commands that battery."""
    body = b'{"SOC": 700, "target_discharge": 50, "target_charge": 100, "timestamp": "2025-01-16T10:00:00Z"}'
    request = urllib.request.Request(base + "/write?ack=broker", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        if response.status != 202:
            raise RuntimeError(f"the priming write answered {response.status}")


def report(results: list[Result]) -> None:
    """Print the table and the verdict."""
    print(f"\n{'scenario':<24} {'req/s':>8} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'non-2xx':>8} "
          f"{'gw CPU':>7} {'rec CPU':>7} {'x baseline':>10}  target")
    for r in results:
        cpu = f"{r.gateway_cpu:.0%}" if r.gateway_cpu is not None else "-"
        rec = f"{r.recorder_cpu:.0%}" if r.recorder_cpu is not None else "-"
        verdict = ("met" if r.meets_target else "MISSED") if r.targeted else ("-" if r.meets_target else "non-2xx")
        print(f"{r.name:<24} {r.rps:>8.0f} {r.p50_ms:>8.2f} {r.p90_ms:>8.2f} {r.p99_ms:>8.2f} {r.non_2xx:>8d} "
              f"{cpu:>7} {rec:>7} {r.rps / BASELINE_RPS:>9.1f}x  {verdict}")
    print(f"\nbaseline {BASELINE_RPS:.0f} req/s (Flask + gunicorn + InfluxDB per request); target >= "
          f"{TARGET_RPS:.0f} req/s with p99 < {TARGET_P99_MS:.0f} ms. Load average now: "
          + " ".join(f"{x:.2f}" for x in os.getloadavg()))


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit 1 if a scenario missed the target or got non-2xx answers."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per scenario (default 10)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--warmup", type=float, default=2.0, help="unreported warm-up seconds per scenario")
    parser.add_argument("--mqtt-port", type=int, help="use this broker on 127.0.0.1 instead of starting one")
    parser.add_argument("--url", help="load this gateway (e.g. http://127.0.0.1:5000) instead of starting one")
    parser.add_argument("--no-recorder", action="store_true",
                        help="skip the durable scenario (no influxd, no recorder)")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed (Debian: apt-get install wrk)", file=sys.stderr)
        return 2
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp:
        workdir = Path(tmp)
        with (broker(args.mqtt_port, workdir) as mqtt,
              recorder(mqtt, workdir, not args.no_recorder and args.url is None) as rec_pid,
              gateway(args.url, mqtt, workdir) as (base, pid)):
            print(f"gateway {base} (pid {pid or 'external'}), broker {mqtt[0]}:{mqtt[1]}, recorder pid "
                  f"{rec_pid or '-'}; wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s")
            introduce_battery(base)
            for name, path, script, targeted, needs_recorder in SCENARIOS:
                if needs_recorder and rec_pid is None and args.url is None:
                    continue
                lua = Path(__file__).resolve().parent / script
                if args.warmup > 0:
                    run_wrk(base + path, lua, threads=args.threads, connections=args.connections,
                            duration=args.warmup, path=path)
                cpu_before, started = (_cpu_seconds(pid) if pid else 0.0), time.monotonic()
                rec_before = _cpu_seconds(rec_pid) if rec_pid else 0.0
                output = run_wrk(base + path, lua, threads=args.threads, connections=args.connections,
                                 duration=args.duration, path=path)
                elapsed = time.monotonic() - started
                cpu = (_cpu_seconds(pid) - cpu_before) / elapsed if pid else None
                rec_cpu = (_cpu_seconds(rec_pid) - rec_before) / elapsed if rec_pid else None
                result = dataclasses.replace(parse_wrk(name, output, cpu), recorder_cpu=rec_cpu, targeted=targeted)
                results.append(result)
                print(f"{name}: {result.rps:.0f} req/s, p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms")
    report(results)
    return 0 if all(r.meets_target for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
