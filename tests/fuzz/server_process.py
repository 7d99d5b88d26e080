"""A netscope server in a child process, for the fuzz suite and the soak benchmark.

Why a child process: a crash must be seen as a crash (the test process
survives it and can say which request did it), and the server's resident
memory must be measured alone, without the test's own tensors and
hypothesis' bookkeeping in it. Memory is read from /proc/PID/status (VmRSS,
and VmHWM, the peak), so this is Linux only.

Run as a script (`python -m tests.fuzz.server_process CONFIG_JSON`), it
starts `netscope.server.app.Server` with the ServerConfig fields in the JSON,
prints `ADDRESS host:port` once it is SERVING, and then:

- on SIGUSR1 writes a probe of the served models to the JSON's `probe` path:
  per model, the hooks on its modules (forward, pre-forward, backward) and
  on its parameters, the parameters that hold a `.grad`, whether any module
  is in training mode; and the process-wide hooks. The soak benchmark reads
  it after its requests (hooks never outlive a request, no `.grad` is left).
- on SIGTERM stops the way `netscope serve` does (drain for `grace_s`, then
  cancel) and exits 0.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def rss_kib(pid: int, key: str = "VmRSS") -> int:
    """Resident memory of `pid` in KiB: VmRSS now, or VmHWM (the peak so far)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {key} for pid {pid}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServerProcess:
    """Start, watch and stop a server child process.

    `rss_limit_mib`: a watchdog thread polls the child's RSS every 20 ms and
    kills it (SIGKILL) past this, so a memory bomb fails a test instead of
    taking the shared machine down; `killed_for_rss` then says so."""

    config: dict
    rss_limit_mib: int = 6144
    log_path: Path | None = None
    proc: subprocess.Popen | None = None
    address: str = ""
    killed_for_rss: int = 0  # RSS in MiB at the kill, 0 if never killed
    peak_rss_mib: float = 0.0  # the watchdog's own peak over this child's life
    starts: int = 0
    _stop_watch: threading.Event = field(default_factory=threading.Event)

    def start(self, timeout: float = 180.0) -> "ServerProcess":
        cfg = dict(self.config)
        cfg["address"] = f"127.0.0.1:{free_port()}"
        env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"), PYTHONUNBUFFERED="1")
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.fuzz.server_process", json.dumps(cfg)],
                                     cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=log)
        self.starts += 1
        self.killed_for_rss = 0
        self.peak_rss_mib = 0.0
        deadline = time.monotonic() + timeout
        line = b""
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line.startswith(b"ADDRESS "):
                self.address = line.split()[1].decode()
                break
            if not line and self.proc.poll() is not None:
                break
        if not self.address or self.proc.poll() is not None:
            self.kill()
            raise RuntimeError(f"the server child did not start (last line {line!r}); see {self.log_path}")
        self._stop_watch = threading.Event()
        threading.Thread(target=self._watch, daemon=True).start()
        return self

    def _watch(self) -> None:
        proc, stop = self.proc, self._stop_watch
        while not stop.wait(0.02) and proc.poll() is None:
            try:
                mib = rss_kib(proc.pid) / 1024
            except (OSError, RuntimeError):
                return
            self.peak_rss_mib = max(self.peak_rss_mib, mib)
            if mib > self.rss_limit_mib:
                self.killed_for_rss = int(mib)
                proc.kill()
                return

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def rss_mib(self) -> float:
        return rss_kib(self.proc.pid) / 1024

    def peak_mib(self) -> float:
        """The kernel's peak RSS (VmHWM) of the child."""
        return rss_kib(self.proc.pid, "VmHWM") / 1024

    def probe(self, path: Path, timeout: float = 30.0) -> dict:
        """Ask the child for its hooks / .grad probe (SIGUSR1) and read it."""
        path = Path(path)
        path.unlink(missing_ok=True)
        self.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if path.exists():
                try:
                    return json.loads(path.read_text())
                except json.JSONDecodeError:
                    pass  # still being written
            time.sleep(0.05)
        raise TimeoutError("the server child wrote no probe")

    def stop(self, timeout: float = 60.0) -> tuple[int | None, float]:
        """SIGTERM, then wait: (exit code, seconds to exit); None if it had to be killed."""
        self._stop_watch.set()
        if not self.alive:
            return (self.proc.returncode if self.proc else None), 0.0
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None, time.monotonic() - t0
        return code, time.monotonic() - t0

    def kill(self) -> None:
        self._stop_watch.set()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


TINY_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def save_tiny_checkpoint(store: Path, name: str = "tiny") -> str:
    """A seeded, untrained simple_cnn (32x32 input, 10 classes) saved as a
    netscope checkpoint in `store`; returns the source name to load it by.

    Why a checkpoint and not `source="simple_cnn"`: a model loaded by
    architecture name gets ImageNet preprocessing (resize 256, crop 224), so
    every picture became a 224-pixel input and the sampling methods (Score-CAM,
    ablation, occlusion) took seconds; the checkpoint's own 32-pixel recipe
    makes each of them milliseconds. It still resizes the shorter side (to
    36) before the centre crop, so 1xN strips go through the bounded resize
    of issue 12 as they do on the 224-pixel models."""
    import torch

    from netscope.training.checkpoint import save_checkpoint
    from netscope.training.models import build_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_model("simple_cnn", len(TINY_CLASSES), input_size=32)
    save_checkpoint(Path(store) / f"{name}.pt", arch="simple_cnn", num_classes=len(TINY_CLASSES),
                    class_names=TINY_CLASSES, model_state_dict=model.state_dict(), arch_kwargs={"input_size": 32},
                    preprocessing=dict(resize=36, crop=32, mean=[0.5] * 3, std=[0.25] * 3, interpolation="bilinear",
                                       channels=3))
    return name


# ---------------------------------------------------------------- the child


def _hook_count(module) -> int:
    names = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    return sum(len(getattr(module, n, {}) or {}) for n in names)


def probe_models(registry) -> dict:
    """Hooks, .grad and training flags of every served model (see the module doc)."""
    import torch.nn.modules.module as mm

    out = {"models": {}, "global_hooks": sum(len(getattr(mm, n, {})) for n in (
        "_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
        "_global_backward_pre_hooks", "_global_module_registration_hooks"))}
    for m in registry.list():
        module = m.module
        hooked = {name or "<model>": _hook_count(sub) for name, sub in module.named_modules() if _hook_count(sub)}
        param_hooks = {n: len(p._backward_hooks or {}) for n, p in module.named_parameters()
                       if getattr(p, "_backward_hooks", None)}
        grads = [n for n, p in module.named_parameters() if p.grad is not None]
        training = [name or "<model>" for name, sub in module.named_modules() if sub.training]
        out["models"][m.id] = {"module_hooks": hooked, "parameter_hooks": param_hooks, "grads": grads,
                               "training": training[:20]}
    return out


def main(argv: list[str]) -> int:
    cfg = json.loads(argv[0])
    probe_path = cfg.pop("probe", "")
    load = cfg.pop("load", [])  # LoadModel keyword dicts, e.g. a model with its own class count

    import logging

    from netscope.server.app import ModelSpec, Server, ServerConfig

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    cfg["models"] = [ModelSpec(**spec) for spec in cfg.get("models", [])]
    server = Server(ServerConfig(**cfg)).start()
    for kw in load:
        server.registry.load(**kw)
    wake = threading.Event()
    asked = {"probe": False, "stop": False}

    def on_usr1(signum, frame):
        asked["probe"] = True
        wake.set()

    def on_term(signum, frame):
        asked["stop"] = True
        wake.set()

    signal.signal(signal.SIGUSR1, on_usr1)
    signal.signal(signal.SIGTERM, on_term)
    print("ADDRESS", server.address, flush=True)
    parent = os.getppid()
    while True:
        wake.wait(0.5)
        wake.clear()
        if os.getppid() != parent:  # the test process is gone (killed by a timeout): do not linger
            server.stop(0)
            return 1
        if asked["probe"] and probe_path:
            asked["probe"] = False
            tmp = Path(probe_path + ".tmp")
            tmp.write_text(json.dumps(probe_models(server.registry)))
            tmp.replace(probe_path)
        if asked["stop"]:
            server.stop()
            return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
