"""What a prediction server process is told: a small module, so that starting one is quick."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

#: The routes a request can take; every logged prediction names its own.
PRIMARY, CANARY, SHADOW = "primary", "canary", "shadow"


@dataclass(frozen=True)
class VersionConfig:
    """A second version the server loads beside the primary: a canary or a shadow."""

    artifact: str
    name: str
    version: str
    artifact_sha256: str | None = None


@dataclass(frozen=True)
class Store:
    """The store the server's models came from (:class:`nbmlops.config.Settings`, as text)."""

    home: str
    tracking_uri: str
    registry_uri: str
    embedded: bool
    log_uri: str = ""


@dataclass(frozen=True)
class ServerConfig:
    """Everything a server process needs. The parent resolves the models; the server reads
    the registry only to follow ``follow`` (the primary's alias) and to promote a canary."""

    artifact: str
    name: str
    version: str
    log_uri: str
    artifact_sha256: str | None = None  # the registry's digest of the manifest, when tagged
    aliases: tuple[str, ...] = ()
    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = field(default=None, repr=False)
    unknown_categories: str = "reject"
    runtime: str = "sklearn"  # or "onnx": the primary scores with its ONNX twin in ``onnx``
    onnx: str | None = None
    max_body_bytes: int = 5 * 1024 * 1024
    max_records: int = 10_000
    max_batch_rows: int = 2_000
    max_batch_wait_ms: float = 5.0
    metrics: dict = field(default_factory=dict)
    canary: VersionConfig | None = None  # gets ``weight`` of the requests
    weight: float = 0.0
    sticky: str | None = None  # a header whose value's hash picks primary or canary
    shadow: VersionConfig | None = None  # scores ``shadow_fraction`` of requests, off the path
    shadow_fraction: float = 1.0
    # canary analysis, every ``analysis_interval`` seconds (see nbmlops.serving.analysis)
    analysis_interval: float = 30.0
    max_error_rate: float = 0.01
    max_p99_ms: float = 500.0
    min_requests: int = 20
    max_prediction_drift: float | None = None  # None: the monitor's drift thresholds
    # progressive delivery (see nbmlops.serving.options.Progressive); promote_after None: never
    step_weight: float = 0.0
    max_weight: float = 0.0
    promote_after: int | None = None
    # the alias the primary was addressed by, which the server follows (None: pinned)
    follow: str | None = None
    follow_interval: float = 2.0
    store: Store | None = None  # where the registry is, for following and promoting

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServerConfig:
        data = json.loads(text)
        data["aliases"] = tuple(data.get("aliases", ()))
        for key in ("canary", "shadow"):
            if data.get(key) is not None:
                data[key] = VersionConfig(**data[key])
        if data.get("store") is not None:
            data["store"] = Store(**data["store"])
        return cls(**data)
