"""How many CPU threads `netscope train` gives torch when `--threads` is not given.

Torch starts one OpenMP thread per physical core of the machine, whether or not
this process may use them all (a container's CPU set) and whether or not other
processes keep them busy. An OpenMP team spins at its barriers, so a team wider
than the cores free to it waits on threads that are not running:
docs/TRAINING.md ("Threads") measured a training run on a shared two-core
machine at 1 and 2 threads. The rule: the physical cores among the CPUs this
process may run on, less the load the rest of the machine already puts on them,
and at least one.
"""
from __future__ import annotations

import os
import pathlib


def usable_cpus() -> set[int]:
    """The logical CPUs this process may run on (its affinity; all of them where unknown)."""
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return set(range(os.cpu_count() or 1))


def physical_cores(cpus: set[int] | None = None) -> int:
    """Physical cores behind the logical CPUs `cpus` (default: `usable_cpus()`): hyper-threads
    of one core count once. Reads Linux's /sys topology; elsewhere, the number of CPUs."""
    cpus = usable_cpus() if cpus is None else cpus
    cores = set()
    for cpu in cpus:
        topo = pathlib.Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add(((topo / "physical_package_id").read_text().strip(), (topo / "core_id").read_text().strip()))
        except OSError:
            return max(1, len(cpus))
    return max(1, len(cores))


def default_threads(load: float | None = None) -> int:
    """Torch threads for a training run: the usable physical cores minus the whole cores
    that the machine's one-minute load average (`load`; default `os.getloadavg()`, 0
    where unknown; shared in proportion to the CPUs usable) says are busy, at least 1.
    Whole cores, because the average lags: a run that ended a minute ago still shows
    as 0.9 of a core, and a 2-core machine that just finished one should get 2 (the
    demo: 32 s at 2 threads against 46 s at 1, idle). One whose load reaches its
    cores gets 1 (there, 2 threads took 20x longer than 1)."""
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):
            load = 0.0
    cpus = usable_cpus()
    share = max(0.0, load) * len(cpus) / max(len(cpus), os.cpu_count() or 1)
    cores = physical_cores(cpus)
    return max(1, min(cores, cores - int(share)))
