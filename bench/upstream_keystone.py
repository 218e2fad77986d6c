"""Run upstream OpenStack Keystone (from its PyPI package) for side-by-side benchmarks.

Everything lives under ``bench/.upstream/`` (gitignored):

* ``venv/``          a separate virtualenv with the versions pinned in
                     ``bench/upstream-requirements.txt`` (keystone + gunicorn);
* ``keystone.conf``  SQLite backend, Fernet tokens, password hashing at Keystone's
                     defaults;
* ``run/``           the SQLite database and the Fernet key repositories, made anew on
                     every :func:`start`;
* ``gunicorn.conf.py`` and the logs.

Keystone is served by gunicorn (sync workers, 2 by default) on a free port of
127.0.0.1, with the WSGI application the installed version ships
(``keystone.wsgi.api:application``, or ``keystone.server.wsgi`` on older releases).

Two quirks of running Keystone under gunicorn are handled here:

* Keystone's oslo.config parses ``sys.argv`` when the application is loaded, so
  gunicorn's own command-line options make it exit with "unrecognized arguments".
  Gunicorn is therefore started with no arguments at all; its settings (including the
  application, ``wsgi_app``) come from ``gunicorn.conf.py`` named by the
  ``GUNICORN_CMD_ARGS`` environment variable.
* Gunicorn >= 25.1 opens a control socket in ``$HOME/.gunicorn``; it is turned off.

Use from Python::

    server = start()                 # configure, spawn, wait for the first token
    ...                              # server.base_url is http://127.0.0.1:PORT/v3
    stop(server)

or from the shell: ``python bench/upstream_keystone.py serve`` (Ctrl-C stops it),
``python bench/upstream_keystone.py install``, ``python bench/upstream_keystone.py check``.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import grp
import hashlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

BENCH_DIR = Path(__file__).resolve().parent
UPSTREAM_DIR = BENCH_DIR / ".upstream"
VENV_DIR = UPSTREAM_DIR / "venv"
STATE_DIR = UPSTREAM_DIR / "run"
REQUIREMENTS = BENCH_DIR / "upstream-requirements.txt"
STAMP = VENV_DIR / ".bench-requirements.sha256"

ADMIN_USER = "admin"
ADMIN_PROJECT = "admin"
DEFAULT_PASSWORD = "bench-admin-pw"
REGION = "RegionOne"
DEFAULT_WORKERS = 2

_LIVE: list[UpstreamKeystone] = []


@dataclass
class UpstreamKeystone:
    """A running (or just spawned) gunicorn serving upstream Keystone."""

    port: int
    admin_password: str
    process: subprocess.Popen[bytes]
    spawned_at: float
    """``time.perf_counter()`` taken right before the gunicorn process was spawned."""
    setup_seconds: float
    """Time spent in ``keystone-manage`` (db_sync, fernet_setup, bootstrap)."""
    log_path: Path
    versions: dict[str, str] = field(default_factory=dict)
    startup_seconds: float | None = None
    """Spawn to first 201 from POST /v3/auth/tokens, once :func:`wait_ready` ran."""

    @property
    def base_url(self) -> str:
        """The identity API root, ``http://127.0.0.1:PORT/v3``."""
        return f"http://127.0.0.1:{self.port}/v3"

    @property
    def pid(self) -> int:
        """Pid of the gunicorn master (also the id of its process group)."""
        return self.process.pid


def _venv_bin(name: str) -> Path:
    return VENV_DIR / "bin" / name


def _log(msg: str) -> None:
    print(f"[upstream] {msg}", file=sys.stderr, flush=True)


def _quiet_env() -> dict[str, str]:
    """Environment for the upstream venv's tools: eventlet's deprecation banner muted."""
    env = dict(os.environ)
    env["PYTHONWARNINGS"] = "ignore"
    env.pop("VIRTUAL_ENV", None)
    env.pop("PYTHONPATH", None)
    return env


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ensure_venv(force: bool = False) -> dict[str, str]:
    """Create ``bench/.upstream/venv`` and install the pinned Keystone + gunicorn into it.

    Does nothing when the venv already holds what ``upstream-requirements.txt`` pins
    (checked through a hash stamp). Returns the installed versions of the packages that
    matter for the comparison.
    """
    wanted = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    have = STAMP.read_text().strip() if STAMP.exists() else ""
    if force or not _venv_bin("python").exists() or have != wanted:
        UPSTREAM_DIR.mkdir(parents=True, exist_ok=True)
        if not _venv_bin("python").exists():
            _log(f"creating venv {VENV_DIR}")
            subprocess.run([sys.executable, "-m", "venv", str(VENV_DIR)], check=True)
        _log(f"pip install -r {REQUIREMENTS.name} (log: {UPSTREAM_DIR / 'pip.log'})")
        with open(UPSTREAM_DIR / "pip.log", "wb") as out:
            # The machine's pip config adds a constraints file (torch caps only); it does
            # not touch anything Keystone needs, so no override is passed.
            result = subprocess.run(
                [str(_venv_bin("python")), "-m", "pip", "install", "-r", str(REQUIREMENTS)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=_quiet_env(),
            )
        if result.returncode != 0:
            tail = (UPSTREAM_DIR / "pip.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"pip install of upstream Keystone failed:\n{tail}")
        STAMP.write_text(wanted + "\n")
    return installed_versions()


def installed_versions() -> dict[str, str]:
    """Versions of keystone, gunicorn and the libraries that shape its performance."""
    code = (
        "import json, importlib.metadata as m, sys\n"
        "out = {'python': sys.version.split()[0]}\n"
        "for n in ('keystone', 'gunicorn', 'SQLAlchemy', 'oslo.db', 'cryptography',"
        " 'bcrypt', 'Flask'):\n"
        "    try:\n"
        "        out[n] = m.version(n)\n"
        "    except m.PackageNotFoundError:\n"
        "        pass\n"
        "print(json.dumps(out))\n"
    )
    result = subprocess.run(
        [str(_venv_bin("python")), "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env=_quiet_env(),
    )
    return dict(json.loads(result.stdout))


def wsgi_app_name() -> str:
    """The WSGI entry point the installed Keystone ships, in gunicorn's ``module:attr`` form."""
    site = subprocess.run(
        [
            str(_venv_bin("python")),
            "-c",
            "import keystone, os; print(os.path.dirname(keystone.__file__))",
        ],
        capture_output=True,
        text=True,
        check=True,
        env=_quiet_env(),
    ).stdout.strip()
    if (Path(site) / "wsgi" / "api.py").exists():
        return "keystone.wsgi.api:application"
    if (Path(site) / "server" / "wsgi.py").exists():
        return "keystone.server.wsgi:initialize_public_application()"
    raise RuntimeError(f"no known WSGI entry point in {site}")


def write_config(port: int) -> Path:
    """Write ``bench/.upstream/keystone.conf`` for a server on ``port``; return its path.

    SQLite database and Fernet key repositories under ``bench/.upstream/run/``;
    everything else (password hashing, caching, token lifetime) at Keystone's defaults.
    """
    UPSTREAM_DIR.mkdir(parents=True, exist_ok=True)
    conf = UPSTREAM_DIR / "keystone.conf"
    conf.write_text(
        "# Written by bench/upstream_keystone.py; remade on every start.\n"
        "[DEFAULT]\n"
        f"log_file = {UPSTREAM_DIR / 'keystone.log'}\n"
        f"public_endpoint = http://127.0.0.1:{port}/\n"
        "\n[database]\n"
        f"connection = sqlite:///{STATE_DIR / 'keystone.db'}\n"
        "\n[token]\n"
        "provider = fernet\n"
        "\n[fernet_tokens]\n"
        f"key_repository = {STATE_DIR / 'fernet-keys'}\n"
        "\n[fernet_receipts]\n"
        f"key_repository = {STATE_DIR / 'fernet-receipts'}\n"
        "\n[credential]\n"
        f"key_repository = {STATE_DIR / 'credential-keys'}\n"
    )
    return conf


def _manage(conf: Path, *args: str) -> None:
    cmd = [str(_venv_bin("keystone-manage")), "--config-file", str(conf), *args]
    result = subprocess.run(cmd, capture_output=True, text=True, env=_quiet_env())
    if result.returncode != 0:
        raise RuntimeError(
            f"keystone-manage {args[0]} failed ({result.returncode}):\n{result.stderr[-3000:]}"
        )


def configure(port: int, admin_password: str) -> float:
    """Make a fresh Keystone: config, ``db_sync``, ``fernet_setup``, ``bootstrap``.

    Wipes ``bench/.upstream/run/`` first. Returns the seconds the three
    ``keystone-manage`` steps took.
    """
    conf = write_config(port)
    if STATE_DIR.exists():
        shutil.rmtree(STATE_DIR)
    STATE_DIR.mkdir(parents=True)
    user = pwd.getpwuid(os.getuid()).pw_name
    group = grp.getgrgid(os.getgid()).gr_name
    began = time.perf_counter()
    _manage(conf, "db_sync")
    _manage(conf, "fernet_setup", "--keystone-user", user, "--keystone-group", group)
    _manage(
        conf,
        "bootstrap",
        "--bootstrap-password",
        admin_password,
        "--bootstrap-username",
        ADMIN_USER,
        "--bootstrap-project-name",
        ADMIN_PROJECT,
        "--bootstrap-role-name",
        "admin",
        "--bootstrap-service-name",
        "keystone",
        "--bootstrap-region-id",
        REGION,
        "--bootstrap-public-url",
        f"http://127.0.0.1:{port}/v3",
    )
    return time.perf_counter() - began


def _write_gunicorn_conf(port: int, workers: int) -> Path:
    path = UPSTREAM_DIR / "gunicorn.conf.py"
    path.write_text(
        "# Written by bench/upstream_keystone.py. Gunicorn gets no command-line arguments\n"
        "# because Keystone's oslo.config would parse (and reject) them.\n"
        f"wsgi_app = {wsgi_app_name()!r}\n"
        f"bind = '127.0.0.1:{port}'\n"
        f"workers = {workers}\n"
        "worker_class = 'sync'\n"
        "timeout = 120\n"
        "control_socket_disable = True\n"
    )
    return path


def spawn(port: int, admin_password: str, workers: int, setup_seconds: float) -> UpstreamKeystone:
    """Spawn gunicorn (in its own process group) for an already :func:`configure`-d Keystone.

    Returns at once; the server is not ready yet (see :func:`wait_ready`).
    """
    gconf = _write_gunicorn_conf(port, workers)
    env = _quiet_env()
    env["OS_KEYSTONE_CONFIG_DIR"] = str(UPSTREAM_DIR)
    env["OS_KEYSTONE_CONFIG_FILES"] = "keystone.conf"
    env["GUNICORN_CMD_ARGS"] = f"--config={gconf}"
    log_path = UPSTREAM_DIR / "gunicorn.log"
    with open(log_path, "wb") as log:
        spawned_at = time.perf_counter()
        proc = subprocess.Popen(
            [str(_venv_bin("gunicorn"))],
            cwd=str(UPSTREAM_DIR),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = UpstreamKeystone(
        port=port,
        admin_password=admin_password,
        process=proc,
        spawned_at=spawned_at,
        setup_seconds=setup_seconds,
        log_path=log_path,
    )
    _LIVE.append(server)
    return server


def token_request_body(
    user: str, password: str, project: str, domain: str = "Default", by_id: bool = False
) -> dict[str, Any]:
    """The JSON body of a password-authenticated, project-scoped POST /v3/auth/tokens.

    The user's and the project's domain are named by ``domain``'s name, or by its id
    when ``by_id`` is true.
    """
    dom = {"id" if by_id else "name": domain}
    return {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {"user": {"name": user, "domain": dom, "password": password}},
            },
            "scope": {"project": {"name": project, "domain": dom}},
        }
    }


def poll_first_token(
    base_url: str,
    body: dict[str, Any],
    process: subprocess.Popen[bytes],
    spawned_at: float,
    timeout: float = 120.0,
    interval: float = 0.05,
) -> float:
    """Poll POST ``base_url``/auth/tokens every ``interval`` s until it answers 201.

    Returns the seconds from ``spawned_at`` (a ``time.perf_counter()`` value) to that
    first 201. Raises ``RuntimeError`` if the process exits first or ``timeout`` passes.
    """
    deadline = spawned_at + timeout
    url = base_url.rstrip("/") + "/auth/tokens"
    last = "no answer yet"
    with httpx.Client(timeout=5.0, trust_env=False) as client:
        while True:
            code = process.poll()
            if code is not None:
                raise RuntimeError(f"server exited with code {code} before issuing a token")
            try:
                resp = client.post(url, json=body)
                if resp.status_code == 201:
                    return time.perf_counter() - spawned_at
                last = f"HTTP {resp.status_code}: {resp.text[:200]}"
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
            if time.perf_counter() > deadline:
                raise RuntimeError(f"no token after {timeout:.0f} s; last answer: {last}")
            time.sleep(interval)


def wait_ready(server: UpstreamKeystone, timeout: float = 120.0) -> float:
    """Block until ``server`` issues its first token; record and return the startup time."""
    body = token_request_body(ADMIN_USER, server.admin_password, ADMIN_PROJECT, "Default")
    try:
        server.startup_seconds = poll_first_token(
            server.base_url, body, server.process, server.spawned_at, timeout
        )
    except RuntimeError as exc:
        tail = server.log_path.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"upstream Keystone did not come up: {exc}\n{tail}") from exc
    return server.startup_seconds


def start(
    port: int | None = None,
    admin_password: str = DEFAULT_PASSWORD,
    workers: int = DEFAULT_WORKERS,
    wait: bool = True,
) -> UpstreamKeystone:
    """Install (if needed), configure afresh and start upstream Keystone under gunicorn.

    With ``wait`` (the default) returns once the first token was issued, with
    ``startup_seconds`` set. The server is stopped at interpreter exit if :func:`stop`
    was not called.
    """
    versions = ensure_venv()
    port = port or free_port()
    setup_seconds = configure(port, admin_password)
    server = spawn(port, admin_password, workers, setup_seconds)
    server.versions = versions
    if wait:
        try:
            wait_ready(server)
        except BaseException:
            stop(server)
            raise
    return server


def stop(server: UpstreamKeystone, grace: float = 10.0) -> None:
    """Stop gunicorn and all its workers: SIGTERM to the process group, SIGKILL after ``grace``."""
    kill_group(server.process, grace)
    if server in _LIVE:
        _LIVE.remove(server)


def kill_group(
    process: subprocess.Popen[Any], grace: float = 10.0, first: int = signal.SIGTERM
) -> None:
    """Send ``first`` to the process group led by ``process``; SIGKILL what is left after ``grace``.

    ``process`` must have been started with ``start_new_session=True`` (so its pid is
    also its process group id). Safe to call more than once.
    """
    pgid = process.pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, first)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace)
    # Workers may outlive the leader: make sure the whole group is gone.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)


@atexit.register
def _stop_all() -> None:
    for server in list(_LIVE):
        stop(server, grace=3.0)


def main(argv: list[str] | None = None) -> int:
    """Command line: ``install``, ``check`` (start, one token, stop) or ``serve``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("install", help="create bench/.upstream/venv and install Keystone")
    for name, text in (
        ("check", "start Keystone, issue one token, report startup time, stop"),
        ("serve", "start Keystone and keep it running until Ctrl-C"),
    ):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("--port", type=int, help="port on 127.0.0.1 (default: a free one)")
        cmd.add_argument("--admin-password", default=DEFAULT_PASSWORD)
        cmd.add_argument("--workers", type=int, default=DEFAULT_WORKERS)
    args = parser.parse_args(argv)

    if args.command == "install":
        for name, version in ensure_venv(force=True).items():
            print(f"{name} {version}")
        return 0

    server = start(args.port, args.admin_password, args.workers)
    try:
        print(f"upstream Keystone {server.versions.get('keystone')} at {server.base_url}")
        print(f"  keystone-manage setup {server.setup_seconds:.2f} s")
        print(f"  spawn to first token  {server.startup_seconds:.2f} s")
        print(f"  admin / {server.admin_password} (project admin, domain Default)")
        if args.command == "serve":
            print("Ctrl-C stops it.")
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
            with contextlib.suppress(KeyboardInterrupt):
                server.process.wait()
    finally:
        stop(server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
