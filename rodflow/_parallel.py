"""Runs over several devices and several processes, on JAX's own runtime.

Two mesh axes, and nothing but placement: every program is the same `jit`-compiled one as on
one device, and XLA's SPMD partitioner splits it.

- `grid`: the sweep's grid points (step sizes x seeds) are split across devices; each device
  runs its share of the `vmap`ped lanes.
- `data`: the examples of the loss are split across devices, the parameters (and every flow's
  state) are replicated, and the loss's mean over examples becomes a sum of per-device partial
  sums plus one all-reduce. The discrete run's gradients and every flow's gradients,
  Hessian-vector products, third derivatives and eigensolves are partitioned the same way,
  because they are all derivatives of that one loss.

Several processes (hosts) join with [`rodflow.distributed_initialize`][] (a thin wrapper of
`jax.distributed.initialize`); every process then runs the same program on the global mesh of
all their devices, results are gathered to every process, and only process 0 writes files.
"""

from __future__ import annotations

import os
from typing import Any

import equinox as eqx
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

GRID, DATA = "grid", "data"


def examples(problem) -> int | None:
    """The number of examples of a problem's loss: its `examples` attribute (the built-in
    `MSELoss` and `CrossEntropyLoss` have one: the length of their leading, per-example axis),
    or `None` for a loss that does not say how its data splits."""
    n = getattr(problem.loss, "examples", None)
    return None if n is None else int(n)


def check_layout(problem, grid_devices: int, data_devices: int, *, available: int | None = None) -> None:
    """One-line `ValueError`s for a device layout that cannot run: more devices than there are,
    or data-parallel devices for a loss that cannot be split evenly."""
    available = len(jax.devices()) if available is None else available
    if not 1 <= grid_devices * data_devices <= available:
        raise ValueError(f"`devices` must be between 1 and the {available} device(s) JAX sees, "
                         f"got {grid_devices * data_devices}.")
    if data_devices == 1:
        return
    n = examples(problem)
    if n is None:
        raise ValueError(
            f"data-parallel runs ({data_devices} data devices) need a loss that says how its data "
            "splits: an eqx.Module loss whose per-example arrays share a leading axis, with an "
            "`examples` attribute (its length) like the built-in losses; or use one data device.")
    if n % data_devices:
        raise ValueError(f"the loss's {n} examples do not split evenly over {data_devices} data devices; "
                         f"choose a device count that divides {n}, or a number of examples that it divides.")


class Layout(eqx.Module):
    """Where a run's arrays live: a `grid x data` mesh of the first `grid * data` devices.

    - `place_grid(tree)`: arrays with a leading grid axis (step sizes, initial points, carries),
      split along `grid` and replicated along `data`.
    - `place_problem(problem)`: the loss's per-example arrays (leading axis of length
      `examples(problem)`) split along `data`; the rest of the problem replicated.

    On one device both are the identity, so a single-device run is the program it always was.
    """

    grid: int = eqx.field(static=True)
    data: int = eqx.field(static=True)

    @property
    def size(self) -> int:
        return self.grid * self.data

    def mesh(self) -> Mesh:
        return Mesh(np.asarray(jax.devices()[: self.size]).reshape(self.grid, self.data), (GRID, DATA))

    def _put(self, tree, spec: PartitionSpec):
        """Place every array of `tree` with `spec` on this layout's mesh. In one process
        `jax.device_put` moves it device to device (nothing to do for an array already placed);
        across processes each process supplies its part from its host copy."""
        if self.size == 1:
            return tree
        sharding = NamedSharding(self.mesh(), spec)

        def one(leaf):
            if not eqx.is_array(leaf):
                return leaf
            if jax.process_count() == 1:
                return jax.device_put(leaf, sharding)
            host = np.asarray(to_host(leaf))
            return jax.make_array_from_callback(host.shape, sharding, lambda i: host[i])

        return jax.tree.map(one, tree)

    def place_grid(self, tree):
        return self._put(tree, PartitionSpec(GRID))

    def replicate(self, tree):
        return self._put(tree, PartitionSpec())

    def place_problem(self, problem):
        if self.size == 1:
            return problem
        n = examples(problem) if self.data > 1 else None

        def put(leaf):
            per_example = n is not None and getattr(leaf, "ndim", 0) >= 1 and leaf.shape[0] == n
            return self._put(leaf, PartitionSpec(DATA) if per_example else PartitionSpec())

        return eqx.tree_at(lambda p: p.loss, problem, jax.tree.map(put, problem.loss))


def to_host(tree):
    """Numpy copies of a tree's arrays, on every process. An array that spans devices of other
    processes (a run over several hosts) is gathered first; that is a collective, so every
    process calls this at the same point of the same program."""
    def one(leaf):
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            from jax.experimental import multihost_utils

            if leaf.sharding.is_fully_replicated:
                return np.asarray(leaf.addressable_data(0))
            return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
        return jax.device_get(leaf)

    return jax.tree.map(one, tree)


def is_writer() -> bool:
    """True on the process that writes files and draws figures (process 0; the only one when
    JAX runs in one process)."""
    return jax.process_index() == 0


def on_writer(fn, *args, **kwargs) -> None:
    """Run `fn` on process 0 only (a check that writes, e.g. preparing the output folder), and
    raise its `ValueError` on every process, so that no process goes on alone."""
    error = None
    if is_writer():
        try:
            fn(*args, **kwargs)
        except ValueError as e:
            error = e
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        failed = int(multihost_utils.broadcast_one_to_all(np.int32(error is not None)))
        if failed and error is None:
            raise ValueError("process 0 refused the run (see its message); this process stops with it.")
    if error is not None:
        raise error


def barrier(name: str) -> None:
    """Wait for every process at this point (nothing to wait for in one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def distributed_initialize(coordinator: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None, **kwargs: Any) -> None:
    """Join the processes of a multi-host run: `jax.distributed.initialize` with the arguments
    given, else the environment variables `JAX_COORDINATOR_ADDRESS` (`host:port` of process 0),
    `JAX_NUM_PROCESSES` and `JAX_PROCESS_ID`, else JAX's own cluster detection (SLURM, Open MPI,
    Kubernetes, Cloud TPU). Call it once, first, in every process, before any other JAX call.
    Every process then runs the same `compare`/`sweep`; `jax.devices()` are the devices of all of
    them, results come back to every process, and only process 0 writes `out`.
    """
    coordinator = coordinator or os.environ.get("JAX_COORDINATOR_ADDRESS")
    if num_processes is None and os.environ.get("JAX_NUM_PROCESSES"):
        num_processes = int(os.environ["JAX_NUM_PROCESSES"])
    if process_id is None and os.environ.get("JAX_PROCESS_ID"):
        process_id = int(os.environ["JAX_PROCESS_ID"])
    if (num_processes is None) != (process_id is None) or (num_processes is not None and coordinator is None):
        raise ValueError("a multi-process run needs all three of the coordinator address (host:port), "
                         "the number of processes and this process's id (flags or JAX_COORDINATOR_ADDRESS, "
                         "JAX_NUM_PROCESSES, JAX_PROCESS_ID), or none of them on a cluster JAX detects.")
    if num_processes is not None and not 0 <= process_id < num_processes:
        raise ValueError(f"the process id must be in 0..{num_processes - 1}, got {process_id}.")
    jax.distributed.initialize(coordinator, num_processes, process_id, **kwargs)
