"""A server follows the alias it was started on, and promotes its canary by moving it.

Every ``follow_interval`` seconds (2 by default) a server on ``NAME@ALIAS`` asks the registry
where the alias points. When it has moved, the new version is loaded and verified beside the
one answering (in a thread: requests go on meanwhile), the deployment switches to it in one
step on the event loop, and the old version's requests in flight finish before its batcher
stops: no request fails. A version that cannot be loaded, or that is another kind of model, is
refused: the old one goes on answering and ``/metadata`` says why.

A progressive canary is promoted here too: the alias moves under the registry's lock only if
it still points at the primary (two workers, or a person, may have moved it meanwhile), with
``previous`` set and the reason ``progressive`` recorded; the switch follows at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from nbmlops.artifact.files import DIGEST_TAG, ArtifactFiles
from nbmlops.serving.config import ServerConfig

logger = logging.getLogger("uvicorn.error")
#: How long a replaced version's requests in flight may take before its batcher stops.
DRAIN_SECONDS = 30.0


class AliasFollower:
    """Polls the registry for the primary's alias and switches the deployment to where it
    points; :meth:`promote` moves the alias to the canary's version first."""

    def __init__(self, config: ServerConfig, deployment, build) -> None:
        """``build(files, version, onnx)`` makes the :class:`~nbmlops.serving.service.Service` of a
        version (called in a thread)."""
        self.config = config
        self.deployment = deployment
        self.build = build
        self.alias = config.follow if config.store is not None else None
        self.switches: list[dict] = []
        self.error: str | None = None
        self.checked: float | None = None
        self._registry = None
        self._task: asyncio.Task | None = None
        self._lock = asyncio.Lock()
        self._refused: str | None = None  # a version already refused (not loaded again)

    def start(self) -> None:
        if self.alias is not None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.config.follow_interval)
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the old version goes on answering
                self._failed(f"could not follow {self.config.name}@{self.alias}: {exc}")

    async def check(self, reason: str = "alias") -> bool:
        """Switch to the version the alias points at, if it moved; True when it switched."""
        async with self._lock:
            version = await asyncio.to_thread(self._aliased)
            self.checked = time.time()
            if version is None or version == self.deployment.primary.version:
                self.error = None if version is not None else self.error
                return False
            if version == self._refused:
                return False
            try:
                service = await asyncio.to_thread(self._load, version)
            except Exception as exc:  # noqa: BLE001 - refused: the old version goes on
                self._refused = version
                self._failed(
                    f"{self.config.name}@{self.alias} moved to v{version}, not served: {exc}"
                )
                return False
            await self._switch(service, reason)
            return True

    async def promote(self, detail: str) -> bool:
        """Move the alias from the primary's version to the canary's (only if it still points
        at the primary) and switch to it; True when this server moved it."""
        deployment = self.deployment
        canary, primary = deployment.canary.version, deployment.primary.version
        moved = await asyncio.to_thread(self._move_alias, primary, canary, detail)
        await self.check(reason="progressive")
        return moved

    def _move_alias(self, primary: str, canary: str, detail: str) -> bool:
        from nbmlops.registry.registry import alias_lock

        registry, name = self._registry_client(), self.config.name
        with alias_lock(registry.settings, name):
            if registry.alias_version(name, self.alias) != primary:
                return False
            registry.set_alias(f"{name}@v{canary}", self.alias, reason="progressive", detail=detail)
        return True

    def _aliased(self) -> str | None:
        return self._registry_client().alias_version(self.config.name, self.alias)

    def _load(self, version: str):
        """Read, verify and load ``version`` beside the one answering."""
        registry = self._registry_client()
        registered = registry.get(self.config.name, version)
        root = registry.local_path(registered)
        label = f"{self.config.name} v{version}"
        files = ArtifactFiles.read(
            Path(root), registered.tags.get(DIGEST_TAG), label, keep_model=True
        )
        answering = self.deployment.primary.schema
        if files.schema.task != answering.task:
            raise ValueError(
                f"it is a {files.schema.task} model and this server serves a "
                f"{answering.task} one: start another server for it"
            )
        onnx = None
        if self.config.runtime == "onnx":  # the new version must have its own proven twin
            from nbmlops.exports.onnx_runtime import onnx_twin

            onnx = onnx_twin(registry, registered)
        return self.build(files, version, onnx)

    async def _switch(self, service, reason: str) -> None:
        deployment = self.deployment
        service.batcher.start()
        before = deployment.primary.version
        replaced = deployment.replace_primary(service)
        self.error, self._refused = None, None
        shown = {"ts": time.time(), "from": before, "to": service.version, "reason": reason}
        self.switches.append(shown)
        logger.warning(
            "%s@%s moved: v%s answers now (was v%s)",
            self.config.name,
            self.alias,
            service.version,
            before,
        )
        await asyncio.to_thread(
            deployment.primary.log.add_event,
            shown["ts"],
            self.config.name,
            "switch",
            service.version,
            before,
            f"{self.config.name}@{self.alias} moved from v{before} to v{service.version} "
            f"({reason}); v{service.version} answers every request",
        )
        for old in replaced:
            await old.batcher.drain(DRAIN_SECONDS)

    def _registry_client(self):
        if self._registry is None:
            from nbmlops.config import Settings
            from nbmlops.registry.registry import Registry

            store = self.config.store
            settings = Settings(
                Path(store.home),
                store.tracking_uri,
                store.registry_uri,
                store.embedded,
                store.log_uri,
            )
            self._registry = Registry(settings)
        return self._registry

    def _failed(self, message: str) -> None:
        if message != self.error:
            logger.warning("%s", message)
        self.error = message

    def to_dict(self) -> dict:
        """What ``/metadata`` shows as ``follow``."""
        return {
            "alias": self.alias,
            "interval_s": self.config.follow_interval,
            "version": self.deployment.primary.version,
            "checked": self.checked,
            "switches": list(self.switches[-10:]),
            "error": self.error,
        }
