"""Running prediction servers: start one in its own process, wait until ready, list, stop.

The parent (a kernel, a script, the CLI) resolves the model in the registry and hands the server
a :class:`~nbmlops.serving.config.ServerConfig`; the server process never touches the registry.
Servers started from a process stop when it exits, and a server whose parent dies stops itself.
Each running server has a record, ``servers/PORT.server.json`` under the store, readable by its
owner only (it holds the token, so that a handle read back can call the server).
"""

from __future__ import annotations

import atexit
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path

from nbmlops.artifact.files import DIGEST_TAG, manifest_digest
from nbmlops.artifact.registration import is_registered_copy, read_registered_copy
from nbmlops.config import Settings
from nbmlops.errors import ArtifactModifiedError, ServingError, UsageError
from nbmlops.registry.refs import followed_alias
from nbmlops.registry.registry import Registry
from nbmlops.serving.client import (
    ServerHandle,
    process_created,
    record_path,
    send_signal,
    terminate,
)
from nbmlops.serving.config import CANARY, PRIMARY, SHADOW, ServerConfig, Store, VersionConfig
from nbmlops.serving.options import ServeOptions

READY_TIMEOUT = 120.0
#: The token a server requires when none is passed: unlike ``--token``, not visible in ``ps``.
TOKEN_ENV = "NBMLOPS_TOKEN"


_started: list[ServerHandle] = []


def build_config(model: str, settings: Settings, options: ServeOptions) -> ServerConfig:
    """Resolve ``model`` (and a canary or shadow) in the registry and check the security
    defaults and the rollout options.

    Without ``options.token``, the server requires the one in ``NBMLOPS_TOKEN``, if set: an
    explicit token wins over the environment.
    """
    options.check()
    token = options.token or os.environ.get(TOKEN_ENV) or None
    if not _is_loopback(options.host) and not token and not options.insecure:
        raise UsageError(
            f"--host {options.host} exposes the model beyond this machine; set "
            f"{TOKEN_ENV}=SECRET in the environment or pass --token SECRET (clients then send "
            "'Authorization: Bearer SECRET'), or pass --insecure to allow it"
        )
    if is_registered_copy(model):
        registry, follow = None, None
        version, artifact = _registered_copy(model, options)
        registered = version.artifact_sha256
    else:
        registry = Registry(settings)
        version, artifact, registered = _resolve(registry, model)
        follow = followed_alias(model, version.aliases)
    others = {}
    for option, address in (("--canary", options.canary), ("--shadow", options.shadow)):
        if address is not None:
            others[option] = _second_version(registry, option, address, version)
    analysis, progressive, weight = (
        options.analysis(),
        options.progressive(),
        options.start_weight(),
    )
    if progressive is not None and progressive.promote_after is not None and follow is None:
        raise UsageError(
            f"--promote-after moves the alias the primary was served from, and {model!r} "
            f"names no alias: serve {version.name}@production (or another alias)"
        )
    config = ServerConfig(
        artifact=str(artifact),
        artifact_sha256=registered,
        name=version.name,
        version=version.version,
        aliases=version.aliases,
        log_uri=settings.log_uri,
        host=options.host,
        port=options.port or free_port(options.host),
        token=token,
        unknown_categories=options.unknown_categories,
        runtime=options.runtime,
        onnx=_onnx_twin(registry, version) if options.runtime == "onnx" else None,
        metrics=dict(version.metrics),
        canary=others.get("--canary"),
        weight=weight,
        sticky=options.sticky or None,
        shadow=others.get("--shadow"),
        shadow_fraction=1.0 if options.shadow_fraction is None else options.shadow_fraction,
        analysis_interval=analysis.interval,
        max_error_rate=analysis.max_error_rate,
        max_p99_ms=analysis.max_p99_ms,
        min_requests=analysis.min_requests,
        max_prediction_drift=analysis.max_prediction_drift,
        step_weight=progressive.step_weight if progressive else 0.0,
        max_weight=progressive.max_weight if progressive else weight,
        promote_after=progressive.promote_after if progressive else None,
        follow=follow,
        store=None
        if registry is None
        else Store(
            str(settings.home),
            settings.tracking_uri,
            settings.registry_uri,
            settings.embedded,
            settings.log_uri,
        ),
    )
    limits = {"max_records": options.max_records, "max_body_bytes": options.max_body_bytes}
    return replace(config, **{k: v for k, v in limits.items() if v is not None})


def _registered_copy(folder: str, options: ServeOptions):
    """A version copied out of the registry with its registration (``nbmlops export --format
    docker``), served as it is: no alias to follow, no second version, no ONNX twin."""
    needs_registry = {
        "--canary": options.canary,
        "--shadow": options.shadow,
        "--runtime onnx": options.runtime == "onnx",
    }
    given = next((option for option, set_ in needs_registry.items() if set_), None)
    if given is not None:
        raise UsageError(
            f"{given} needs the registry, and {folder} is a copy of one version served without "
            f"it: serve the version from the registry (e.g. NAME@production {given})"
        )
    return read_registered_copy(Path(folder))


def serve(
    model: str,
    *,
    port: int | None = None,
    host: str = "127.0.0.1",
    workers: int = 1,
    token: str | None = None,
    insecure: bool = False,
    unknown_categories: str = "reject",
    runtime: str = "sklearn",
    max_records: int | None = None,
    max_body_bytes: int | None = None,
    canary: str | None = None,
    weight: float | None = None,
    sticky: str | None = None,
    shadow: str | None = None,
    shadow_fraction: float | None = None,
    step_weight: float | None = None,
    max_weight: float | None = None,
    promote_after: int | None = None,
    analysis_interval: float | None = None,
    max_error_rate: float | None = None,
    max_p99_ms: float | None = None,
    min_requests: int | None = None,
    max_prediction_drift: float | None = None,
    settings: Settings | None = None,
    timeout: float = READY_TIMEOUT,
) -> ServerHandle:
    """Start a prediction server for ``model`` in its own process and wait until it is ready.

    Without ``token``, the server requires the one in ``NBMLOPS_TOKEN`` when that is set. A
    server on ``NAME@ALIAS`` (or a bare ``NAME`` served from ``production``) follows the alias:
    when it moves, the new version answers within seconds, without a restart or a failed
    request.

    ``runtime="onnx"`` scores the primary with its parity-proven ONNX twin (see
    :func:`nbmlops.export`) through onnxruntime: same API, checks, log and metrics.

    Rollout: ``canary`` (another version of the same model) answers ``weight`` of the requests
    (default 0.1), picked at random or, with ``sticky`` (a header name), by a hash of that
    header's value; ``shadow`` scores ``shadow_fraction`` of them (default 1) off the response
    path. A request the canary fails is answered by the primary.

    Every ``analysis_interval`` seconds (default 30) the canary's error rate and p99 latency over
    that interval are checked against ``max_error_rate`` (0.01) and ``max_p99_ms`` (500), and its
    predictions against the primary's by the monitor's drift test (``max_prediction_drift``: its
    effect size limit); a breach sets its weight to 0 at once (an automatic rollback, shown by
    the monitor). An interval with fewer than ``min_requests`` (20) canary requests is
    inconclusive. Progressive delivery: each passing interval adds ``step_weight`` up to
    ``max_weight`` (default 0.5); after ``promote_after`` passing intervals at ``max_weight``
    the canary's version takes the primary's alias (``previous`` set, reason ``progressive``).
    """
    settings = settings or Settings.from_env()
    options = ServeOptions(
        host=host,
        port=port,
        workers=workers,
        token=token,
        insecure=insecure,
        unknown_categories=unknown_categories,
        runtime=runtime,
        max_records=max_records,
        max_body_bytes=max_body_bytes,
        canary=canary,
        weight=weight,
        sticky=sticky,
        shadow=shadow,
        shadow_fraction=shadow_fraction,
        step_weight=step_weight,
        max_weight=max_weight,
        promote_after=promote_after,
        analysis_interval=analysis_interval,
        max_error_rate=max_error_rate,
        max_p99_ms=max_p99_ms,
        min_requests=min_requests,
        max_prediction_drift=max_prediction_drift,
    )
    handle, proc = _start(model, settings, os.getpid(), options, background=True)
    _wait_ready(handle, proc, timeout)
    _write_record(record_path(_servers_dir(settings), handle.port), handle)
    _started.append(handle)
    return handle


def serve_foreground(model: str, settings: Settings, options: ServeOptions) -> int:
    """``nbmlops serve``: run a server until Ctrl-C or SIGTERM; returns its exit code."""
    handle, proc = _start(model, settings, os.getpid(), options, background=False)
    record = record_path(_servers_dir(settings), handle.port)

    def forward(signum, frame):
        send_signal(handle.pid, handle.pid_created, signal.SIGTERM)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        _wait_ready(handle, proc, READY_TIMEOUT)
        _write_record(record, handle)
        print(f"{handle!r}\nCtrl-C stops it.", flush=True)
        return proc.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        record.unlink(missing_ok=True)
        if proc.poll() is None:
            terminate(handle.pid, handle.pid_created)


def _start(model, settings, parent_pid, options: ServeOptions, background):
    """Spawn the server process first (it imports its libraries meanwhile), then resolve the
    model in the registry and hand the process its configuration."""
    servers = _servers_dir(settings)
    log_file = servers / f"server-{time.time_ns()}.log"
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "nbmlops.serving.worker",
                str(options.workers),
                str(parent_pid or 0),
            ],
            stdin=subprocess.PIPE,
            stdout=log if background else None,
            stderr=subprocess.STDOUT if background else None,
            start_new_session=True,
        )
    try:
        config = build_config(model, settings, options)
        for running in list_servers(settings):
            if running.port == config.port:
                raise UsageError(
                    f"port {config.port} is already serving {running.model} "
                    f"v{running.version}; pick another --port or stop it with "
                    f"%mlops_serve --stop {config.port}"
                )
        proc.stdin.write((config.to_json() + "\n").encode())
        proc.stdin.close()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    handle = ServerHandle(
        model=config.name,
        version=config.version,
        host=config.host,
        port=config.port,
        pid=proc.pid,
        log_file=str(log_file),
        token=config.token,
        started=time.time(),
        example=_example_record(config),
        pid_created=process_created(proc.pid),
        routes=_routes(config),
    )
    return handle, proc


def _routes(config: ServerConfig) -> tuple[dict, ...]:
    """The routes a server was started with, for its handle and ``--list``."""
    routes = [{"route": PRIMARY, "version": config.version, "weight": 1.0 - config.weight}]
    if config.canary is not None:
        canary = {"route": CANARY, "version": config.canary.version, "weight": config.weight}
        routes.append({**canary, "sticky": config.sticky})
    if config.shadow is not None:
        fraction = config.shadow_fraction
        routes.append({"route": SHADOW, "version": config.shadow.version, "fraction": fraction})
    return tuple(routes)


def _onnx_twin(registry: Registry, version) -> str:
    from nbmlops.exports.onnx_runtime import onnx_twin

    return str(onnx_twin(registry, version))


def _resolve(registry: Registry, model: str):
    """The registered version of ``model``, its local artifact and its registered digest."""
    version = registry.resolve(model)
    artifact = registry.local_path(version)
    registered = version.tags.get(DIGEST_TAG)
    manifest = artifact / "manifest.json"
    if registered is not None and manifest.is_file() and manifest_digest(artifact) != registered:
        # refused here, in one line, before a process starts; the server checks every file
        raise ArtifactModifiedError(
            str(artifact),
            "manifest.json",
            f"is not the one registered for {version.name} v{version.version} (tag {DIGEST_TAG})",
        )
    return version, artifact, registered


def _second_version(registry: Registry, option: str, address: str, primary) -> VersionConfig:
    """A canary or shadow: another version of the primary's model (so that the log and the
    monitor compare them under one name)."""
    version, artifact, registered = _resolve(registry, address)
    if version.name != primary.name:
        raise UsageError(
            f"{option} {address!r} is {version.name} v{version.version}, another model than "
            f"{primary.name}: give another version of {primary.name}, e.g. "
            f"{option} {primary.name}@candidate"
        )
    if version.version == primary.version:
        raise UsageError(
            f"{option} {address!r} is {version.name} v{version.version}, the version being "
            f"served: give another version, e.g. {option} {version.name}@candidate"
        )
    return VersionConfig(str(artifact), version.name, version.version, registered)


def list_servers(settings: Settings | None = None) -> list[ServerHandle]:
    """Servers started from this store that are still running; a record whose process is gone
    (or whose pid now belongs to another process) is removed."""
    settings = settings or Settings.from_env()
    directory = settings.home / "servers"
    handles = []
    for path in sorted(directory.glob("*.server.json")) if directory.is_dir() else []:
        try:
            text = path.read_text()
        except OSError:
            continue  # another user's server, or a record removed meanwhile
        try:
            handle = ServerHandle(**json.loads(text))
        except (ValueError, TypeError):
            path.unlink(missing_ok=True)
            continue
        if handle.alive:
            handles.append(handle)
        else:
            path.unlink(missing_ok=True)
    return handles


def stop_servers(
    target: str | None = "all", settings: Settings | None = None
) -> list[ServerHandle]:
    """Stop servers by model name or address, port, or ``all``; returns those stopped."""
    running = list_servers(settings)
    if target in (None, "", "all"):
        chosen = running
    elif target.isdigit():
        chosen = [h for h in running if h.port == int(target)]
    else:
        name = target.split("@", 1)[0].removeprefix("models:/").split("/", 1)[0]
        chosen = [h for h in running if h.model == name]
    if not chosen and target not in (None, "", "all"):
        known = ", ".join(f"{h.model} v{h.version} on {h.port}" for h in running) or "none"
        raise UsageError(f"no running server matches {target!r}; running: {known}")
    for handle in chosen:
        handle.stop()
    return chosen


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.bind((host if host not in ("0.0.0.0", "::") else "", 0))
        return sock.getsockname()[1]


def _wait_ready(handle: ServerHandle, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = Path(handle.log_file).read_text(errors="replace").strip().splitlines()[-8:]
            raise ServingError(
                f"the server for {handle.model} v{handle.version} exited with code "
                f"{proc.returncode} before it was ready; its log ({handle.log_file}) ends:\n"
                + "\n".join(tail)
            )
        try:
            with urllib.request.urlopen(handle.url + "/ready", timeout=1) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.05)
    terminate(handle.pid, handle.pid_created)
    raise ServingError(
        f"the server for {handle.model} was not ready after {timeout:.0f} s; see {handle.log_file}"
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _write_record(path: Path, handle: ServerHandle) -> None:
    """Write a server's record readable by its owner only: mkstemp creates the file with mode
    0600 (``os.open`` with that mode, so it is never wider, not even for an instant), and the
    finished file is renamed into place."""
    fd, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(handle.to_record(), out)
        os.replace(partial, path)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise


def _servers_dir(settings: Settings) -> Path:
    directory = settings.home / "servers"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _example_record(config: ServerConfig) -> dict:
    """One plausible record from the training sample, for the curl example."""
    root = Path(config.artifact)
    profile = json.loads((root / "profile.json").read_text())
    dtypes = {
        c["name"]: c["dtype"] for c in json.loads((root / "schema.json").read_text())["columns"]
    }
    example = {}
    for column in profile["columns"]:
        value = column["sample"][0] if column["sample"] else None
        if value is not None and dtypes[column["name"]].startswith("int"):
            value = int(value)
        example[column["name"]] = value
    return example


@atexit.register
def _stop_started() -> None:
    for handle in _started:
        if handle.alive:
            handle.stop()
