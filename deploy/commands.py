"""``up``, ``down`` and ``status``: what ``deploy/up|down|status`` do (through ``deploy/stack.py``'s command line).

``up`` checks every setting first (:mod:`deploy.preflight`, :mod:`deploy.node_settings`), then starts the broker
and the database (or uses the ones that answer), then every node that exists (:mod:`deploy.launch`), and prints
what runs and how to use it. ``down`` stops exactly what ``up`` started, by pid file. Standard library only.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time

from deploy import auth, influx_auth, preflight, seed
from deploy.accounts import process_user
from deploy.apt import ensure_packages
from deploy.bridge_access import ask_bridge
from deploy.errors import PortInUseError, SettingsError, StackError
from deploy.influx_http import InfluxError, create_database, influx_ping, influx_statement
from deploy.launch import RECORDER_ONLY, is_running, nodes_to_restart, plan_nodes, start_node, wait_online
from deploy.mqtt_probe import MiniMqtt, MqttError, mqtt_connack, read_retained
from deploy.node_settings import check_node_settings, node_python, node_settings, settings_problems
from deploy.processes import HOST, read_live_pid, tail, terminate_pids
from deploy.servers import Service, websockets_refusal
from deploy.settings import UpConfig
from nodes.contract.names import ALL_NODE_NAMES, NODE_NAMES, OPT_IN_NODES


def _config_changed(service: Service) -> bool:
    """True if the config file a running ``service`` was started with differs from what we would write now."""
    try:
        return service.config_path.read_text() != service.config_text()
    except OSError:
        return False


def _bring_up(service: Service, answers: bool, timeout: float) -> str:
    """Start ``service`` unless something already answers at its address; describe what happened.

    One of ours whose generated configuration changed (a newer deploy/stack.py: another message size limit,
    client ids bound to users) is restarted, since mosquitto re-reads only some settings on SIGHUP.
    """
    assert service.pid_path is not None
    ours = read_live_pid(service.pid_path, str(service.config_path))
    address = f"{service.host}:{service.ports[0]}"
    if answers:
        if ours and _config_changed(service):
            killed = terminate_pids([ours], timeout=15.0)
            service.pid_path.unlink(missing_ok=True)
            service.start(timeout)
            how = " (it needed SIGKILL)" if killed else ""
            return f"restarted (pid {service.pid}): its generated configuration changed{how}"
        if ours:
            return f"already running (pid {ours}, started by deploy/up)"
        service.pid_path.unlink(missing_ok=True)
        return f"already answering at {address} (not started by deploy/up; left alone)"
    if ours:
        raise StackError(f"{service.kind} (pid {ours}) runs but does not answer at {address}; see {service.log}")
    service.pid_path.unlink(missing_ok=True)
    try:
        service.start(timeout)
    except PortInUseError as exc:
        raise StackError(f"{exc}, but not by a {service.kind} we can use; free it or set another port") from None
    return f"started (pid {service.pid})"


def _forget_status(cfg: UpConfig, name: str, credentials: auth.Credentials | None) -> str:
    """Clear the retained status of a node stopped for good (no longer wanted with these settings): its
    ``offline`` would otherwise stand forever, and the alarms node would keep a node_offline alarm up for a node
    nobody runs. Sent as that node (secure mode: only it may write its status). A note for ``up``'s line."""
    topic = f"{cfg.topic_root}/node/{name}/status"
    login = credentials.login(name) if credentials is not None and name in credentials.passwords else (None, None)
    try:
        with MiniMqtt(HOST, cfg.mqtt_port, client_id=login[0], username=login[0], password=login[1]) as client:
            client.publish(topic, b"", qos=1, retain=True)
    except (OSError, MqttError) as exc:
        return f"; its retained status could not be cleared ({exc})"
    return "; its retained status cleared"


def _print_auth_help(cfg: UpConfig, credentials: auth.Credentials, database: influx_auth.InfluxCredentials) -> None:
    script = cfg.root / "deploy" / "auth.py"
    password = f'"$(python3 {script} password {{user}} {credentials.directory})"'
    print("  secure     on (BESS_MQTT_AUTH=1): the broker and the database refuse anonymous clients")
    print("  mqtt auth  each node logs in as itself (BESS_MQTT_USERNAME/_PASSWORD); the client id is the user name")
    print("             (one connection per user: nobody takes over another's session)")
    print(f"             passwords {credentials.credentials_file} (0600), ACL {credentials.acl_file}")
    devices = (f", devices {' '.join(credentials.devices)} (each only its own battery/<id>/...)"
               if credentials.devices else "")
    bridge = credentials.bridge
    bridged = (f", {auth.BRIDGE_USER} (battery {bridge.battery} and its device's topics), device {bridge.device_user} "
               f"(the {bridge.profile} device behind the bridge)" if bridge is not None else "")
    print(f"             users: {' '.join(auth.NODE_USERS)}, read-only {auth.MONITOR_USER} (you) and "
          f"{auth.PROBE_USER} (deploy's probes){devices}{bridged}")
    print(f"  home asst. Home Assistant's MQTT integration logs in as {auth.HASS_USER}, password "
          f"{password.format(user=auth.HASS_USER)}")
    print(f"  watch      mosquitto_sub -p {cfg.mqtt_port} -u {auth.MONITOR_USER} "
          f"-P {password.format(user=auth.MONITOR_USER)} -t '{cfg.topic_root}/#' -v")
    if bridge is not None:
        _print_bridge_help(bridge, password.format(user=bridge.device_user), str(credentials.credentials_file))
    if credentials.devices:
        device = credentials.devices[0]
        print(f"  device     mosquitto_pub -p {cfg.mqtt_port} -u {device} -P {password.format(user=device)} -q 1 \\")
        print(f"               -t '{cfg.topic_root}/battery/{device}/telemetry' -m '<Telemetry JSON>'")
    db_password = f'"$(python3 {script} password {influx_auth.MONITOR_USER} {database.directory})"'
    print(f"  db auth    users {influx_auth.ADMIN_USER} (deploy only), {influx_auth.RECORDER_USER} (the recorder only: "
          f"{cfg.influx_db}), {influx_auth.MONITOR_USER} (you: reads {cfg.influx_db}); passwords "
          f"{database.credentials_file} (0600)")
    print(f"  query      curl -G -u {influx_auth.MONITOR_USER}:{db_password} {cfg.influx_url}/query "
          f"--data-urlencode db={cfg.influx_db} --data-urlencode 'q=SHOW MEASUREMENTS'")


def _print_bridge_help(bridge: auth.BridgeAccess, password: str, where: str) -> None:
    """Who the bridge and its device are on the broker, and where the device's password is (never the password)."""
    print(f"  bridge     logs in as {auth.BRIDGE_USER}: battery {bridge.battery} only; reads "
          f"{' '.join(bridge.bridge_read)}; writes {' '.join(bridge.bridge_write)}")
    print(f"  its device the {bridge.profile} device (or its broker link) logs in as {bridge.device_user}: publishes "
          f"{' '.join(bridge.device_publish)}; reads {' '.join(bridge.device_read)}")
    print(f"             password: {password} (kept in {where}, 0600; put it into the device's or the link's MQTT "
          "settings)")


def _open_database(cfg: UpConfig, database: influx_auth.InfluxCredentials | None) -> list[str]:
    """Create the stack's database; in secure mode also its users and privileges. Returns what changed."""
    if database is not None:
        where = f"InfluxDB on port {cfg.influx_port}"
        return influx_auth.secure_database(cfg.influx_run(), cfg.influx_db, database, where=where)
    try:
        create_database(cfg.influx_url, cfg.influx_db)
    except InfluxError as exc:
        if "HTTP 401" in str(exc) or "HTTP 403" in str(exc):
            raise StackError(f"the InfluxDB on port {cfg.influx_port} requires authentication: run with "
                             "BESS_MQTT_AUTH=1 (secure mode), or deploy/down and up again") from None
        raise
    return []


def cmd_up(cfg: UpConfig) -> int:
    """Check every setting, then start broker, database and every node that exists (restarting nodes whose
    settings changed); wait for them; print a summary."""
    # everything that can be refused is refused before anything starts (exit 2, one line each)
    preflight.check_location(cfg)
    if cfg.mqtt_ws_port is not None and not cfg.mqtt_auth:
        raise SettingsError(websockets_refusal(cfg.mqtt_ws_port))
    preflight.check_devices(cfg)
    base_env = {**cfg.environ, **cfg.node_env()}
    preflight.check_bridge(cfg, base_env)
    plan = plan_nodes(cfg.root, base_env, cfg.batteries)
    present = list(plan.run)
    absent = [name for name in NODE_NAMES if name not in present and name not in plan.skipped]
    node_envs = {name: {**base_env, **plan.overrides.get(name, {})} for name in present}
    preflight.check_exposure(base_env)
    checks = check_node_settings(cfg, node_envs)
    problems = settings_problems(checks)
    if problems:
        raise SettingsError("\n".join(problems))
    # secure mode: the device topics the bridge's profile needs, from the bridge package itself
    bridge = ask_bridge(cfg, node_envs["bridge"]) if cfg.mqtt_auth and "bridge" in present else None
    preflight.check_bridge_topics(cfg, bridge)

    ensure_packages()
    account, why_root = cfg.broker_account()
    cfg.prepare_var(account)
    credentials = (
        auth.ensure_credentials(cfg.var_dir, cfg.topic_root, list(cfg.batteries), bridge=bridge,
                                prefixes=auth.prefixes_from(cfg.environ))
        if cfg.mqtt_auth
        else None
    )
    database = influx_auth.ensure_credentials(cfg.var_dir) if cfg.secure else None
    mismatch = preflight.broker_auth_mismatch(cfg, credentials) or preflight.influx_mismatch(cfg)
    if mismatch:
        raise StackError(mismatch)
    cfg.write_stack_file()
    broker = cfg.mosquitto(credentials)
    broker_note = _bring_up(broker, mqtt_connack(HOST, cfg.mqtt_port) is not None, timeout=15.0)
    assert broker.pid_path is not None
    ours = read_live_pid(broker.pid_path, str(broker.config_path))
    if credentials is not None and ours is not None and broker.pid is None:
        # ours from an earlier `up`: SIGHUP makes mosquitto re-read the password and ACL files just rewritten
        # (new batteries, another topic root); it reads its own copies, so refresh those first
        broker.install_auth_files()
        os.kill(ours, signal.SIGHUP)
        broker_note += "; reloaded its password and ACL files"
    broker_user = process_user(ours) if ours is not None else None
    influx = cfg.influxd()
    influx_note = _bring_up(influx, influx_ping(cfg.influx_url), timeout=30.0)
    changed = _open_database(cfg, database)

    login: tuple[str | None, str | None] = (None, None)
    if credentials is not None:
        login = credentials.login(auth.PROBE_USER)
    wanted: dict[str, tuple[dict[str, str], dict[str, str]]] = {}  # name -> (process env, recorded settings)
    for name in present:
        node_env = node_envs[name]
        env = node_env if name == "recorder" else {k: v for k, v in node_env.items() if k not in RECORDER_ONLY}
        if credentials is not None:
            env = {**env, **credentials.node_env(name)}
        if database is not None and name == "recorder":
            env = {**env, **database.recorder_env()}
        wanted[name] = (env, node_settings(env, checks.get(name)))
    running, notes, restart = nodes_to_restart(cfg, wanted)
    for name in ALL_NODE_NAMES:  # a node that ran before and is not wanted now (the bridge took its battery, ...)
        pid = read_live_pid(cfg.run_dir / f"{name}.pid", f"nodes.{name}")
        if name not in wanted and pid is not None:
            restart[name] = pid
            why = plan.skipped.get(name) or (f"{OPT_IN_NODES[name]} is not set" if name in OPT_IN_NODES
                                              else "not wanted with these settings")
            notes[name] = f"stopped: {why} (was pid {pid})"
    if restart:
        killed = set(terminate_pids(restart.values(), timeout=15.0))
        for name, pid in restart.items():
            (cfg.run_dir / f"{name}.pid").unlink(missing_ok=True)
            if pid in killed:
                notes[name] += " (the old process needed SIGKILL)"
    for name in restart:
        if name not in wanted:
            notes[name] += _forget_status(cfg, name, credentials)
    stopped = {name: notes[name] for name in restart if name not in wanted}
    started_at: dict[str, float] = {}
    python = node_python(cfg.root)
    for name in present:
        if name in running:
            continue
        env, settings = wanted[name]
        running[name] = start_node(cfg, python, name, env, settings)
        started_at[name] = time.time()
        notes.setdefault(name, "started")

    outcome = wait_online(cfg, running, started_at, login) if running else {}
    failed = [name for name, result in outcome.items() if not is_running(result)]

    print()
    print("BESS local stack")
    websockets = f"  websockets {broker.ws_url} (authenticated; reachable from the network)" if broker.ws_url else ""
    runs_as = f"; runs as {broker_user}" if broker_user else ""
    print(f"  mqtt       {broker.url}{websockets}  -- {broker_note}{runs_as}")
    if why_root and broker_user == "root":
        print(f"  WARNING: mosquitto runs as root: {why_root}")
    database_auth = "authentication on" if database is not None else "no authentication (BESS_MQTT_AUTH=1: secure)"
    print(f"  influxdb   {cfg.influx_url}  db={cfg.influx_db}  -- {influx_note}; {database_auth}"
          + "".join(f"; {note}" for note in changed))
    for name in (name for name in ALL_NODE_NAMES if name in running):
        log_path = cfg.log_dir / f"{name}.log"
        print(f"  {name:<10} pid {running[name]}: {outcome.get(name)}  ({notes[name]}; log {log_path})")
    for name, why in {**plan.skipped, **stopped}.items():
        print(f"  {name:<10} {why}")
    if "bridge" in running and "simulator" in plan.overrides:
        print(f"  simulator  simulates {plan.overrides['simulator']['BESS_BATTERIES']} (the bridge's battery is real)")
    if not running:
        print("  nodes      none yet: no nodes/<name>/__main__.py exists")
    if absent:
        print(f"  not present: {' '.join(absent)}")
    for name in present:
        check = checks.get(name)
        if check is None or check.variables is None:
            why = check.unchecked if check is not None and check.unchecked else "no config Struct found"
            print(f"  WARNING: {name}: settings not validated before start ({why[:300]})")
    remembered = cfg.from_memory()
    if remembered:
        print(f"  remembered {' '.join(remembered)}  (from {cfg.stack_file})")
    print()
    print(f"  dashboard  http://127.0.0.1:{cfg.dashboard_port}/")
    print("  gateway    " + "  ".join(f"http://127.0.0.1:{p}" for p in cfg.gateway_ports))
    if credentials is None or database is None:
        print(f"  watch      mosquitto_sub -p {cfg.mqtt_port} -t '{cfg.topic_root}/#' -v")
    else:
        _print_auth_help(cfg, credentials, database)
    print(f"  data/logs  {cfg.var_dir}   (0750, logs 0640; stop with deploy/down; data is kept)")
    print()
    print("Try:")
    for line in seed.SEED_CURL_LINES:
        print("  " + seed.for_ports(line, cfg.gateway_ports).replace("\n", "\n  "))
    if failed:
        print()
        for name in failed:
            print(f"ERROR: {name}: {outcome[name]}; last lines of {cfg.log_dir / (name + '.log')}:", file=sys.stderr)
            print(tail(cfg.log_dir / f"{name}.log", 15), file=sys.stderr)
        return 1
    return 0


def cmd_down(cfg: UpConfig) -> int:
    """Stop what ``up`` started, by pid file: nodes first (in parallel), then the servers. Data is kept."""
    preflight.check_location(cfg)
    services = {"mosquitto": cfg.mosquitto(), "influxd": cfg.influxd()}
    node_pids: dict[str, int] = {}
    for pid_path in sorted(cfg.run_dir.glob("*.pid")):
        name = pid_path.stem
        if name in services:
            continue
        pid = read_live_pid(pid_path, f"nodes.{name}")
        if pid is not None:
            node_pids[name] = pid
        else:
            pid_path.unlink(missing_ok=True)
    killed = terminate_pids(node_pids.values(), timeout=15.0)
    stopped = len(node_pids)
    for name, pid in node_pids.items():
        (cfg.run_dir / f"{name}.pid").unlink(missing_ok=True)
        print(f"stopped {name} (pid {pid}){' with SIGKILL' if pid in killed else ''}")
    for env_path in cfg.run_dir.glob("*.env"):  # settings of processes that no longer run (and may hold secrets)
        if read_live_pid(cfg.run_dir / f"{env_path.stem}.pid", f"nodes.{env_path.stem}") is None:
            env_path.unlink(missing_ok=True)
    for name, service in services.items():
        assert service.pid_path is not None
        pid = read_live_pid(service.pid_path, str(service.config_path))
        if pid is None:
            service.pid_path.unlink(missing_ok=True)
            continue
        killed = terminate_pids([pid], timeout=15.0)
        service.pid_path.unlink(missing_ok=True)
        stopped += 1
        print(f"stopped {name} (pid {pid}){' with SIGKILL' if killed else ''}")
    if not stopped:
        print("nothing to stop: no process started by deploy/up is running")
    return 0


def _influx_auth_state(cfg: UpConfig) -> str:
    """What an anonymous query to the stack's InfluxDB gets, described for ``status``."""
    status, _ = influx_statement(cfg.influx_url, "SHOW DATABASES", None)
    if status == 401:
        state = "authentication on: anonymous queries refused"
        database = influx_auth.load_credentials(cfg.var_dir)
        if database is not None:
            monitor, _ = influx_statement(cfg.influx_url, "SHOW DATABASES", database.login(influx_auth.MONITOR_USER))
            state += f", {influx_auth.MONITOR_USER} {'logs in' if monitor == 200 else f'refused ({monitor})'}"
        return state
    if status == 200:
        return "no authentication" + ("; WARNING: secure mode expects it" if cfg.secure else "")
    return f"an anonymous query gets HTTP {status}"


def cmd_status(cfg: UpConfig) -> int:
    """Print what runs: servers (ours or not), nodes by pid file and their retained status."""
    preflight.check_location(cfg)
    broker, influx = cfg.mosquitto(), cfg.influxd()
    user, password = cfg.probe_login()
    if cfg.remembered:
        mode = "on" if cfg.mqtt_auth else "off"
        print(f"stack      {cfg.var_dir} (settings from {cfg.stack_file.name}: mqtt auth {mode}, "
              f"topic root {cfg.topic_root})")
    broker_code = mqtt_connack(HOST, cfg.mqtt_port, username=user, password=password)
    for service, answers in ((broker, broker_code is not None), (influx, influx_ping(cfg.influx_url))):
        assert service.pid_path is not None
        pid = read_live_pid(service.pid_path, str(service.config_path))
        owner = f"ours, pid {pid}, runs as {process_user(pid) or '?'}" if pid else "not started by deploy/up"
        if service is broker and broker_code:
            owner += f"; refuses {'user ' + user if user else 'anonymous clients'} (code {broker_code})"
        elif service is broker and user and answers:
            owner += f"; authentication on, read as {user}"
        elif service is influx and answers:
            owner += "; " + _influx_auth_state(cfg)
        print(f"{service.kind:<10} {'answering' if answers else 'DOWN'} at port {service.ports[0]} ({owner})")
    statuses: dict[str, bytes] = {}
    with contextlib.suppress(OSError, MqttError):
        statuses = read_retained(
            HOST, cfg.mqtt_port, f"{cfg.topic_root}/node/+/status", timeout=3.0, username=user, password=password
        )
    for name in ALL_NODE_NAMES:
        pid = read_live_pid(cfg.run_dir / f"{name}.pid", f"nodes.{name}")
        payload = statuses.get(f"{cfg.topic_root}/node/{name}/status", b"").decode("utf-8", "replace")
        if pid is None and not payload:
            continue
        print(f"{name:<10} {'pid ' + str(pid) if pid else 'not running'}  status: {payload or '-'}")
    return 0
