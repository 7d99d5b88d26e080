"""Build and run the gRPC server: Inspector + health + reflection, TLS and tokens, graceful stop."""
from __future__ import annotations

import logging
import os
import signal
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from netscope.v1 import inspector_pb2 as pb
from netscope.v1 import inspector_pb2_grpc as pb_grpc

from .errors import ServerError
from .explain import Ceilings
from .rpc.convert import DEFAULT_DECODE_THREADS
from .imaging import DEFAULT_MAX_PIXELS
from .rpc import oip, reflection
from .runtime import torch_thread
from .models.model_options import FLAT_KEYS, ModelOptions
from .models.registry import Registry
from .rpc.security import ConfigError, configure
from .rpc.service import InspectorService, Limits

log = logging.getLogger("netscope.server")

STOP_SLACK_S = 3.0  # Server.stop returns at most this long after the grace period
EXIT_SLACK_S = 5.0  # `serve` exits at most this long after Server.stop returned

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Inspector"].full_name


@dataclass(init=False)
class ModelSpec:
    """A model to load at startup: `id=source[:weights]` on the command line,
    or a TOML `[[models]]` table, served with `options`.

    Built with the options' flat names as keywords, the TOML keys:
    `ModelSpec("r18", "resnet18", device="cuda", max_batch_size=8)`."""

    id: str
    source: str
    weights: str = ""
    options: ModelOptions = field(default_factory=ModelOptions)

    KEYS = ("id", "source", "weights") + FLAT_KEYS  # of a [[models]] table

    def __init__(self, id: str, source: str, weights: str = "", options: ModelOptions | None = None, **flat):
        """Unknown keywords are a TypeError naming the known ones."""
        self.id, self.source, self.weights = id, source, weights
        self.options = (options or ModelOptions()).replace(**flat)

    def with_options(self, **flat) -> "ModelSpec":
        return ModelSpec(self.id, self.source, self.weights, self.options.replace(**flat))

    @classmethod
    def parse(cls, text: str) -> "ModelSpec":
        if "=" not in text:
            raise ValueError(f"--model {text!r}: expected id=source[:weights], e.g. r18=resnet18:DEFAULT")
        model_id, _, rest = text.partition("=")
        source, _, weights = rest.partition(":")
        if not model_id or not source:
            raise ValueError(f"--model {text!r}: expected id=source[:weights]")
        return cls(model_id.strip(), source.strip(), weights.strip())


@dataclass
class ServerConfig:
    address: str = "127.0.0.1:50051"
    models: list[ModelSpec] = field(default_factory=list)
    store: str = "models"
    device: str = "auto"
    dtype: str = "float32"
    workers: int = 16
    max_message_mb: int = 64
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_images: int = 256  # images in one request (TOML key max_batch: deprecated alias)
    stream_batch: int = 32  # images per device batch on ExplainStream
    allow_download: bool = False
    grace_s: float = 30.0
    metrics_port: int = 0  # Prometheus /metrics over HTTP; 0: off
    decode_threads: int = DEFAULT_DECODE_THREADS  # decode + preprocess a request's images in parallel; 1: serially
    # Ceilings on explanations, by name (explain.Ceilings: batch_size, steps, samples, ..., memory_mb); unset: defaults.
    explain_limits: dict[str, int] = field(default_factory=dict)
    # Who may call what (server/rpc/security.py): PEM files; "" leaves each off.
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""  # mutual TLS: clients must present a certificate this CA signed
    auth_tokens: str = ""  # file of `TOKEN ROLE` lines (role read or admin)
    open_reflection: bool = False  # reflection without a token (health is always open)
    insecure: bool = False  # allow a non-loopback address with neither TLS nor tokens


class Server:
    """A running netscope server. `stop()` flips health to NOT_SERVING, lets
    in-flight calls finish (new ones get UNAVAILABLE) and shuts down."""

    def __init__(self, config: ServerConfig, registry: Registry | None = None):
        """Raises security.ConfigError (a ValueError) for a bad TLS or tokens
        file, or a non-loopback address in the clear without `insecure`."""
        self.config = config
        security = configure(config.address, tls_cert=config.tls_cert, tls_key=config.tls_key,
                             tls_client_ca=config.tls_client_ca, auth_tokens=config.auth_tokens,
                             open_reflection=config.open_reflection, insecure=config.insecure)
        self.registry = registry or Registry(config.store, allow_download=config.allow_download,
                                             default_device=config.device, default_dtype=config.dtype)
        limit = config.max_message_mb * 1024 * 1024
        self.grpc = grpc.server(
            futures.ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="rpc"),
            options=[("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit),
                     ("grpc.so_reuseport", 0)],
            interceptors=security.interceptors,
        )
        if config.decode_threads < 0:
            raise ValueError(f"decode_threads must be >= 0 (0 or 1: decode serially); got {config.decode_threads}")
        self.service = InspectorService(self.registry, Limits(config.max_pixels, config.max_images, limit,
                                                              config.stream_batch,
                                                              Ceilings().with_overrides(config.explain_limits)),
                                        decode_threads=config.decode_threads)
        pb_grpc.add_InspectorServicer_to_server(self.service, self.grpc)
        # The Open Inference Protocol (KServe v2) on the same port, over the same registry and path.
        self._serving = False
        self.inference = oip.InferenceService(self.service, ready=lambda: self._serving)
        oip.oip_grpc.add_GRPCInferenceServiceServicer_to_server(self.inference, self.grpc)
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.grpc)
        reflection.enable([SERVICE_NAME, oip.SERVICE_NAME, health.SERVICE_NAME], self.grpc)
        if security.credentials is not None:
            self.port = self.grpc.add_secure_port(config.address, security.credentials)
        else:
            self.port = self.grpc.add_insecure_port(config.address)
        if self.port == 0:
            raise OSError(f"could not bind {config.address}")
        self._stopped = threading.Event()
        self._metrics_http = None

    @property
    def address(self) -> str:
        host = self.config.address.rsplit(":", 1)[0]
        return f"{host}:{self.port}"

    def _set_health(self, status) -> None:
        self._serving = status == health_pb2.HealthCheckResponse.SERVING  # OIP's ServerReady says the same
        for name in ("", SERVICE_NAME, oip.SERVICE_NAME):
            self.health.set(name, status)

    def start(self) -> "Server":
        """Start answering (health NOT_SERVING), load the configured models, then SERVING."""
        self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        self.grpc.start()
        log.info("listening on %s", self.address)
        if self.config.metrics_port:
            host = self.config.address.rsplit(":", 1)[0].strip("[]")
            self._metrics_http, _ = self.service.metrics.serve_http(self.config.metrics_port, host)
            log.info("metrics on http://%s:%d/metrics", host, self.config.metrics_port)
        for spec in self.config.models:
            self.registry.load(spec.id, spec.source, spec.options, weights=spec.weights)
        self._set_health(health_pb2.HealthCheckResponse.SERVING)
        log.info("serving %s", ", ".join(m.id for m in self.registry.list()) or "no models yet")
        return self

    def stop(self, grace: float | None = None) -> None:
        """Health NOT_SERVING and new calls UNAVAILABLE at once; in-flight calls
        drain for up to `grace` seconds (default config.grace_s), then gRPC
        cancels what is left, and their torch work stops at its next check
        point (server/runtime/cancel.py). Returns within grace + STOP_SLACK_S, joining
        nothing unbounded."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        grace = self.config.grace_s if grace is None else grace
        start = time.monotonic()
        self._serving = False
        self.health.enter_graceful_shutdown()
        log.info("draining in-flight calls (up to %.3g s); new calls get UNAVAILABLE", grace)
        if not self.grpc.stop(grace).wait(grace + STOP_SLACK_S):
            log.warning("calls still running %.3g s after the grace period; stopping anyway", STOP_SLACK_S)
        # The cancelled calls' torch work stops at its next check point: let it, so the
        # process never exits while the torch thread is inside torch's C++ (that aborts).
        if not torch_thread.wait_idle(max(0.0, start + grace + STOP_SLACK_S - time.monotonic())):
            log.warning("the torch thread is still busy; stopping anyway")
        self.service.close()
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
        log.info("stopped in %.2f s", time.monotonic() - start)

    def wait(self) -> None:
        self.grpc.wait_for_termination()


def serve(config: ServerConfig, exit_watchdog: bool = True) -> int:
    """Run until SIGTERM/SIGINT, then drain and return 0; 2 when it cannot start.
    Meant to be a process's last act: with `exit_watchdog`, should a thread
    still hold the process EXIT_SLACK_S after the stop, it exits anyway."""
    try:
        server = Server(config)
    except ConfigError as exc:
        log.error("cannot start: %s", exc)
        return 2
    done = threading.Event()

    def on_signal(signum, frame):
        log.info("received %s", signal.Signals(signum).name)
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        server.start()
    except ServerError as exc:
        log.error("could not load a startup model: %s", exc)
        server.stop(0)
        return 2
    while not done.wait(0.5):
        pass
    server.stop()
    if exit_watchdog:
        _exit_soon(EXIT_SLACK_S)
    return 0


def _exit_soon(seconds: float) -> None:
    """Should anything still hold the interpreter `seconds` from now (a
    non-daemon thread stuck in work with no check point), name it and exit
    0 anyway: the server has stopped, and a stop must not take minutes."""

    def watchdog():
        time.sleep(seconds)
        # Pool threads are daemon, yet joined at exit (concurrent.futures): name every thread left.
        stuck = [t.name for t in threading.enumerate()
                 if t.is_alive() and t is not threading.main_thread() and t is not threading.current_thread()]
        log.warning("exiting with threads still running %.3g s after the stop (work with no check point?): %s",
                    seconds, ", ".join(sorted(stuck)) or "none")
        logging.shutdown()
        os._exit(0)

    threading.Thread(target=watchdog, name="netscope-exit-watchdog", daemon=True).start()
