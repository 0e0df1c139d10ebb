"""Devices: multi-host start-up, the device ``Mesh`` from ``config.mesh``, and sharding rules.

Data parallel by default: the batch is split over the ``data`` axis and parameters are replicated.
With ``mesh.shard_params`` large parameters (and their optimizer state) are split over the ``model``
axis along their largest divisible dimension; XLA inserts the collectives.
"""
from __future__ import annotations

import os
import sys

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from ltjax.errors import ConfigError

# Environment variables that mark a multi-process launch (jax's own cluster detection covers SLURM,
# Open MPI, Kubernetes/GKE and Cloud TPU; these cover torchrun-style and explicit launches).
_LAUNCH_ENV = ("LTJAX_COORDINATOR", "LTJAX_NUM_PROCESSES", "LTJAX_PROCESS_ID")


def initialize_distributed(dist_cfg) -> bool:
    """Start jax.distributed when the config or the launcher asks for several processes.

    Returns True when running as one of several processes.  Must run before any other jax call.
    """
    mode = dist_cfg.enabled
    if mode not in ("auto", "on", "off"):
        raise ValueError(f"distributed.enabled must be 'auto', 'on' or 'off', got {mode!r}")
    if mode == "off":
        return False
    address = dist_cfg.coordinator_address or os.environ.get("LTJAX_COORDINATOR", "")
    num = dist_cfg.num_processes or int(os.environ.get("LTJAX_NUM_PROCESSES", "0"))
    pid = dist_cfg.process_id if dist_cfg.process_id >= 0 else int(os.environ.get("LTJAX_PROCESS_ID", "-1"))
    explicit = bool(address) and num > 0 and pid >= 0
    launcher = any(v in os.environ for v in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES"))
    if mode == "auto" and not explicit and not launcher:
        return False
    if explicit:
        jax.distributed.initialize(coordinator_address=address, num_processes=num, process_id=pid)
    else:
        jax.distributed.initialize()  # cluster auto-detection (SLURM, MPI, TPU pods, ...)
    return jax.process_count() > 1


def make_mesh(mesh_cfg) -> Mesh:
    devices = jax.devices()
    n = len(devices)
    model = int(mesh_cfg.model)
    data = int(mesh_cfg.data)
    if model < 1:
        raise ConfigError(f"mesh.model must be >= 1, got {model}")
    if data == -1:
        if n % model:
            raise ConfigError(f"mesh.model={model} does not divide the {n} available devices")
        data = n // model
    if data < 1 or data * model > n:
        raise ConfigError(
            f"mesh.data * mesh.model = {data} * {model} = {data * model}, but {n} devices are available; "
            "set mesh.data=-1 to use all of them"
        )
    if data * model < n and jax.process_count() > 1:
        raise ConfigError("with several processes the mesh must use every device: set mesh.data=-1")
    # jax.devices() is ordered by process, so each process owns a contiguous block of the data axis.
    # An explicit smaller mesh (data * model < devices) uses the first devices.
    return Mesh(np.asarray(devices[: data * model]).reshape(data, model), ("data", "model"))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P("data"))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def state_shardings(abstract_state, mesh: Mesh, shard_params: bool, min_size: int = 2**14):
    """A sharding for every leaf of a (train-state) pytree of shape/dtype structs."""
    model_size = mesh.shape["model"]

    def rule(leaf):
        shape = getattr(leaf, "shape", ())
        if not shard_params or model_size == 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
            return NamedSharding(mesh, P())
        dims = sorted(range(len(shape)), key=lambda d: -shape[d])
        for d in dims:
            if shape[d] % model_size == 0:
                spec = [None] * len(shape)
                spec[d] = "model"
                return NamedSharding(mesh, P(*spec))
        return NamedSharding(mesh, P())

    return jax.tree.map(rule, abstract_state)


def enable_compilation_cache() -> None:
    """Persist compiled XLA programs under the ltjax cache (``$LTJAX_CACHE_DIR/xla`` or
    ``~/.cache/ltjax/xla``) so a resumed or repeated run skips recompiling; ``LTJAX_XLA_CACHE=0``
    turns it off and an explicit ``JAX_COMPILATION_CACHE_DIR`` takes precedence."""
    if os.environ.get("LTJAX_XLA_CACHE", "1") == "0" or os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return
    root = os.environ.get("LTJAX_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "ltjax")
    try:
        os.makedirs(os.path.join(root, "xla"), exist_ok=True)
        if not os.access(os.path.join(root, "xla"), os.W_OK):
            raise PermissionError("not writable")
    except OSError as e:  # a cache is an optimisation: say so once and run without it
        if jax.process_index() == 0:
            name = "LTJAX_CACHE_DIR" if os.environ.get("LTJAX_CACHE_DIR") else "the default cache (LTJAX_CACHE_DIR unset)"
            print(f"warning: compiled programs are not cached: {os.path.join(root, 'xla')} cannot be written "
                  f"({getattr(e, 'strerror', None) or e}); set LTJAX_CACHE_DIR to a writable folder "
                  f"(now {name}: {root}) or LTJAX_XLA_CACHE=0", file=sys.stderr, flush=True)
        return
    jax.config.update("jax_compilation_cache_dir", os.path.join(root, "xla"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
