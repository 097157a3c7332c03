"""A local federation on 127.0.0.1: one Flower SuperLink and one SuperNode per site, as real processes.

For tests and for trying federated training on one machine; a real deployment starts the same two commands on
different machines (README, "Federated training"). Everything lives under one state folder:

    <dir>/flwr-home/config.toml   the Flower Configuration the coordinator's `flwr run` reads (FLWR_HOME)
    <dir>/superlink/              its database, log and PID file
    <dir>/nodes/<site>/           each SuperNode's FLWR_HOME (installed Flower Apps), log and PID file
    <dir>/federation.json         the connection: SuperLink address, FLWR_HOME, connection name, sites and PIDs

Run with the site environment's Python (`make site-env`), from the project folder:

    .site-env/bin/python -m federated.humane_fl.nodes up --dir .federation --site a=/abs/site_a --site b=/abs/site_b
    .site-env/bin/python -m federated.humane_fl.nodes status --dir .federation
    .site-env/bin/python -m federated.humane_fl.nodes down --dir .federation

Only the standard library: the module starts Flower's own executables, found beside this Python.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

CONNECTION = "humane"
HOST = "127.0.0.1"
STATE_FILE = "federation.json"
# Telemetry off and every Flower state folder inside the state dir (never ~/.flwr).
QUIET = {"FLWR_TELEMETRY_ENABLED": "0", "DO_NOT_TRACK": "true"}


class NodesError(RuntimeError):
    """A process did not start or a state folder is not usable (the message says which)."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def bin_dir() -> Path:
    """The folder of this Python's executables (flower-superlink, flower-supernode, flwr)."""
    return Path(sys.executable).parent


def flower_env(flwr_home: Path) -> dict[str, str]:
    """The environment of a Flower process: its own FLWR_HOME, telemetry off, Flower's executables on PATH."""
    env = {**os.environ, **QUIET, "FLWR_HOME": str(flwr_home)}
    env["PATH"] = f"{bin_dir()}{os.pathsep}{env.get('PATH', '')}"
    return env


def write_config(flwr_home: Path, address: str, name: str = CONNECTION) -> Path:
    """The Flower Configuration (`$FLWR_HOME/config.toml`) naming one insecure SuperLink connection on loopback."""
    flwr_home.mkdir(parents=True, exist_ok=True)
    path = flwr_home / "config.toml"
    path.write_text(f'[superlink]\ndefault = "{name}"\n\n[superlink.{name}]\naddress = "{address}"\ninsecure = true\n')
    return path


def _spawn(cmd: list[str], folder: Path, env: dict[str, str]) -> int:
    """Start a process in its own session (so `down` stops it with its children), log and PID in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "log.txt", "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=folder, start_new_session=True)
    (folder / "pid").write_text(str(proc.pid))
    return proc.pid


def alive(pid: int) -> bool:
    """True while the process exists (and is not a zombie of ours)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return True


def _wait_port(port: int, pid: int, log: Path, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not alive(pid):
            raise NodesError(f"the SuperLink exited at start; see {log}")
        with socket.socket() as sock:
            if sock.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.3)
    raise NodesError(f"the SuperLink did not listen on {HOST}:{port} within {timeout:.0f} s; see {log}")


def online_nodes(flwr_home: Path) -> int:
    """How many SuperNodes the SuperLink lists as online (`flwr supernode ls`); -1 when it does not answer."""
    result = subprocess.run(
        [str(bin_dir() / "flwr"), "supernode", "ls", CONNECTION, "--format", "json"],
        capture_output=True,
        text=True,
        env=flower_env(flwr_home),
        timeout=60,
    )
    try:
        nodes = json.loads(result.stdout)["nodes"]
    except (ValueError, KeyError, TypeError):
        return -1
    return sum(node.get("status") == "online" for node in nodes)


def start_superlink(state: Path, port: int) -> int:
    """Start the SuperLink (insecure: loopback only) and wait until it listens."""
    folder = state / "superlink"
    cmd = [
        str(bin_dir() / "flower-superlink"),
        "--insecure",
        "--host",
        HOST,
        "--port",
        str(port),
        "--database",
        str(folder / "state.db"),
        "--disable-runtime-dependency-installation",
    ]
    pid = _spawn(cmd, folder, flower_env(state / "flwr-home"))
    _wait_port(port, pid, folder / "log.txt", 60)
    return pid


def start_supernode(state: Path, site: str, workspace: Path, superlink: str) -> int:
    """Start one site's SuperNode; `--node-config` names the site and its workspace folder."""
    folder = state / "nodes" / site
    node_config = f"site='{site}' workspace='{workspace}'"
    cmd = [
        str(bin_dir() / "flower-supernode"),
        "--insecure",
        "--superlink",
        superlink,
        "--host",
        HOST,
        "--port",
        str(free_port()),
        "--node-config",
        node_config,
    ]
    return _spawn(cmd, folder, flower_env(folder / "flwr-home"))


def _parse_sites(items: list[str]) -> dict[str, Path]:
    sites: dict[str, Path] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise NodesError(f"--site {item!r}: expected NAME=/absolute/path/to/site/folder")
        if not name.replace("_", "").replace("-", "").isalnum():
            raise NodesError(f"--site {item!r}: a site name is letters, digits, '_' or '-'")
        folder = Path(path)
        if not folder.is_absolute() or not (folder / "params.yaml").is_file():
            raise NodesError(f"--site {item!r}: not an absolute path to a site folder with a params.yaml")
        sites[name] = folder
    if len(sites) != len(items):
        raise NodesError("--site: each site name once")
    return sites


def up(state: Path, sites: dict[str, Path], timeout: float = 120) -> dict[str, Any]:
    """Start the SuperLink and one SuperNode per site; return (and write) the connection once all are online."""
    state = state.resolve()
    if (state / STATE_FILE).exists() and any(alive(p) for p in read_state(state)["pids"].values()):
        raise NodesError(f"{state} already runs a federation; stop it first (down --dir {state})")
    port = free_port()
    address = f"{HOST}:{port}"
    flwr_home = state / "flwr-home"
    write_config(flwr_home, address)
    pids = {"superlink": start_superlink(state, port)}
    info = {
        "address": address,
        "connection": CONNECTION,
        "flwr_home": str(flwr_home),
        "pids": pids,
        "sites": {name: str(path) for name, path in sites.items()},
        "bin": str(bin_dir()),
    }
    _write_state(state, info)
    for name, workspace in sites.items():
        pids[f"site:{name}"] = start_supernode(state, name, workspace, address)
        _write_state(state, info)
    deadline = time.time() + timeout
    while (online := online_nodes(flwr_home)) < len(sites):
        dead = [key for key, pid in pids.items() if not alive(pid)]
        if dead or time.time() > deadline:
            why = f"exited: {dead}" if dead else f"{max(online, 0)} of {len(sites)} online after {timeout:.0f} s"
            raise NodesError(f"the federation did not come up ({why}); logs under {state}")
        time.sleep(1)
    return info


def _write_state(state: Path, info: dict[str, Any]) -> None:
    tmp = state / f".{STATE_FILE}.tmp"
    tmp.write_text(json.dumps(info, indent=2))
    tmp.replace(state / STATE_FILE)


def read_state(state: Path) -> dict[str, Any]:
    """The connection `up` wrote."""
    path = state / STATE_FILE
    if not path.is_file():
        raise NodesError(f"{path} not found: no federation was started with --dir {state}")
    return json.loads(path.read_text())


def stop(pid: int, grace: float = 10) -> None:
    """Stop one process we started and its session (its SuperExec and app processes): SIGTERM, then SIGKILL."""
    if not alive(pid):
        return
    try:
        os.killpg(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    deadline = time.time() + grace
    while alive(pid) and time.time() < deadline:
        time.sleep(0.2)
    if alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


def down(state: Path) -> list[str]:
    """Stop every process of the federation by its PID (SuperNodes first); return what was stopped."""
    info = read_state(state)
    stopped = []
    for key, pid in sorted(info["pids"].items(), key=lambda kv: kv[0] == "superlink"):
        if alive(pid):
            stop(pid)
            stopped.append(key)
    return stopped


def kill_site(state: Path, site: str) -> int:
    """SIGKILL one site's SuperNode and its session at once (a site that vanishes mid-run); return its PID."""
    pid = read_state(state)["pids"].get(f"site:{site}")
    if pid is None:
        raise NodesError(f"no site {site!r} in {state / STATE_FILE}")
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    return pid


def describe(info: dict[str, Any]) -> str:
    """What the coordinator uses: the Flower Configuration folder and the connection's name."""
    return (
        f"SuperLink {info['address']} with {len(info['sites'])} SuperNodes ({', '.join(info['sites'])})\n"
        f"coordinator: FLWR_HOME={info['flwr_home']} {info['bin']}/flwr run federated {info['connection']} "
        f"--stream --run-config '...'"
    )


def main(argv: list[str] | None = None) -> int:
    """`up`, `status`, `down` and `kill` (one site's node) of a local federation."""
    parser = argparse.ArgumentParser(prog="python -m federated.humane_fl.nodes", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["up", "status", "down", "kill"])
    parser.add_argument("--dir", type=Path, required=True, help="state folder (logs, PIDs, FLWR_HOME)")
    parser.add_argument("--site", action="append", default=[], help="NAME=/abs/site/folder (up; repeat per site)")
    parser.add_argument("--timeout", type=float, default=120, help="seconds for every node to come online (up)")
    args = parser.parse_args(argv)
    state: Path = args.dir.resolve()
    try:
        if args.command == "up":
            state.mkdir(parents=True, exist_ok=True)
            try:
                info = up(state, _parse_sites(args.site), args.timeout)
            except BaseException:
                if (state / STATE_FILE).exists():
                    down(state)
                raise
            print(describe(info))
        elif args.command == "status":
            info = read_state(state)
            print(describe(info))
            for key, pid in info["pids"].items():
                print(f"{key}: pid {pid} {'running' if alive(pid) else 'stopped'}")
            print(f"online SuperNodes: {online_nodes(Path(info['flwr_home']))}")
        elif args.command == "down":
            print(f"stopped: {', '.join(down(state)) or 'nothing was running'}")
        else:
            for site in args.site:
                print(f"killed site {site} (pid {kill_site(state, site)})")
    except NodesError as err:
        print(f"nodes: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
