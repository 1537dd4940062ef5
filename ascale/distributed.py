"""Several processes on `torch.distributed`: data-parallel fits and sharded sweeps.

Launch any number of processes with PyTorch's own launcher, on one machine or several::

    torchrun --nproc_per_node 2 -m ascale fit --task ccc --out runs/ccc
    torchrun --nnodes 2 --node_rank 0 --rdzv_backend c10d --rdzv_endpoint host0:29500 \\
        --nproc_per_node 8 -m ascale sweep --task ccc --out runs/sweep

torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address; `init` joins
the process group (gloo on CPU, NCCL on CUDA) with a timeout, so a rank that dies or stalls ends
the run with an error instead of a hang (torchrun also stops the other ranks when one fails).

- `ascale.fit` splits each step's batch over the ranks (`shard`), each rank weights its loss by
  its share of the rows, and the intervention's gradients are summed over ranks before the
  optimiser steps (`reduce_step`): every rank takes the same step a single process takes on the
  whole batch, up to float rounding. Every rank holds the whole intervention (it is small).
- `ascale.sweep` deals its grid of settings out to the ranks, each fits its own settings alone
  (`alone`), and the rows are gathered into one table (`gather`).
- Only rank 0 writes outputs (`is_main`).

Without torchrun (``WORLD_SIZE`` unset or 1) every function here is a no-op for one process.
"""

import contextlib
import datetime
import math
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import torch
from torch import Tensor

from ascale.errors import AscaleError, AscaleWarning

__all__ = [
    "TERMS",
    "alone",
    "from_main",
    "gather",
    "init",
    "is_main",
    "launched",
    "local_device",
    "rank",
    "reduce_step",
    "shard",
    "world_size",
]

T = TypeVar("T")

#: the loss terms `ascale.fit` logs each step, averaged over ranks by `reduce_step`
TERMS = ("loss", "effectiveness", "faithfulness", "l1")
#: seconds a collective waits for the other ranks before failing (``ASCALE_DIST_TIMEOUT_S``)
DEFAULT_TIMEOUT_S = 600.0
#: seconds of waiting for the other ranks after which `init` says it waits (an AscaleWarning)
_SAY_WAITING_S = 2.0

_state = {"alone": False}


def launched() -> bool:
    """Whether this process was started by torchrun (or alike) as one of several."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


def init(device: str = "cpu", *, timeout_s: float | None = None) -> bool:
    """Join the process group torchrun set up (once); ``False`` when there is none.

    The backend is NCCL for a CUDA device, else gloo. `timeout_s` (default
    ``$ASCALE_DIST_TIMEOUT_S`` or 600) bounds how long a collective waits for a missing rank.
    """
    if not launched() or not torch.distributed.is_available():
        return False
    if torch.distributed.is_initialized():
        return True
    check_environment()
    if timeout_s is None:
        timeout_s = _timeout()
    cuda = torch.device(local_device(device)).type == "cuda"
    if cuda:
        torch.cuda.set_device(torch.device(local_device(device)))
    _join(
        lambda: torch.distributed.init_process_group(
            backend="nccl" if cuda else "gloo", timeout=datetime.timedelta(seconds=timeout_s)
        ),
        timeout_s,
    )
    return True


def check_environment() -> tuple[int, int]:
    """``(RANK, WORLD_SIZE)`` as torchrun set them, refused at once where no run can start
    (a rank at or beyond the world size would wait for peers that never come)."""
    values = {}
    for key, low in (("WORLD_SIZE", 1), ("RANK", 0), ("LOCAL_RANK", 0)):
        text = os.environ.get(key, "0" if key != "WORLD_SIZE" else "1")
        try:
            values[key] = int(text)
        except ValueError:
            values[key] = low - 1
        if values[key] < low:
            raise AscaleError(f"${key} is {text!r}; expected a whole number of {low} or more")
    missing = [key for key in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(key)]
    if missing:
        raise AscaleError(
            f"${' and $'.join(missing)} not set: the ranks cannot find each other (launch with "
            "torchrun, which sets them)"
        )
    rank, world = values["RANK"], values["WORLD_SIZE"]
    if rank >= world:
        raise AscaleError(
            f"$RANK is {rank} but $WORLD_SIZE is {world}: ranks are 0..{world - 1}, so this "
            "process could never be joined (launch with torchrun, which sets both)"
        )
    return rank, world


def _address() -> str:
    return f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"


def _timeout() -> float:
    """Seconds to wait for the other ranks: ``$ASCALE_DIST_TIMEOUT_S``, else 600."""
    text = os.environ.get("ASCALE_DIST_TIMEOUT_S")
    try:
        value = DEFAULT_TIMEOUT_S if text is None else float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise AscaleError(f"$ASCALE_DIST_TIMEOUT_S is {text!r}; expected seconds above 0")
    return value


def _join(start: Callable[[], None], timeout_s: float) -> None:
    """Run `start` (joining the process group, which blocks until every rank is there) in a
    helper thread while this one waits: signals (SIGTERM, Ctrl-C) still reach Python's
    handlers here, and after `timeout_s` the wait ends with an error naming it."""
    done: list[BaseException | None] = []

    def run() -> None:
        try:
            start()
            done.append(None)
        except BaseException as err:  # handed to the waiting thread
            done.append(err)

    worker = threading.Thread(target=run, name="ascale-rendezvous", daemon=True)
    worker.start()
    started = time.monotonic()
    others = f"the other {int(os.environ['WORLD_SIZE']) - 1} rank(s)"
    where = f"rank {os.environ.get('RANK', '0')}, at {_address()}"
    worker.join(_SAY_WAITING_S)
    if worker.is_alive():
        warnings.warn(
            f"{where}: waiting up to {timeout_s:g} s for {others} "
            "($ASCALE_DIST_TIMEOUT_S sets the wait; Ctrl-C or SIGTERM stops it)",
            AscaleWarning,
            stacklevel=3,
        )
    while worker.is_alive() and time.monotonic() - started < timeout_s:
        worker.join(0.1)  # short waits: a signal handler runs between them
    error = done[0] if done else TimeoutError()
    timed_out = time.monotonic() - started >= 0.9 * timeout_s  # ours, or the store's own
    if error is not None and timed_out and isinstance(error, Exception):
        raise AscaleError(
            f"{where}: waited {timeout_s:g} s for {others} and gave up "
            "($ASCALE_DIST_TIMEOUT_S sets the wait); start every rank, or check the address"
        ) from error
    if error is not None:
        raise error


def close() -> None:
    """Leave the process group (the command line does this when a command ends)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def _active() -> bool:
    return (
        not _state["alone"]
        and torch.distributed.is_available()
        and torch.distributed.is_initialized()
        and torch.distributed.get_world_size() > 1
    )


def rank() -> int:
    """This process's rank (0 alone or without a process group)."""
    return torch.distributed.get_rank() if _active() else 0


def world_size() -> int:
    """How many processes share the work (1 alone or without a process group)."""
    return torch.distributed.get_world_size() if _active() else 1


def is_main() -> bool:
    """Whether this process writes outputs: rank 0 of the process group, or the only one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank() == 0
    return True


def local_device(device: str) -> str:
    """``"cuda"`` under torchrun is this process's own GPU, ``cuda:$LOCAL_RANK``."""
    if device == "cuda" and launched():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return device


@contextlib.contextmanager
def alone() -> Iterator[None]:
    """Inside, this process works on its own: `ascale.fit` neither splits nor all-reduces
    (a sweep's ranks each fit their own settings)."""
    before = _state["alone"]
    _state["alone"] = True
    try:
        yield
    finally:
        _state["alone"] = before


def shard(index: Tensor) -> Tensor:
    """This rank's contiguous share of a step's rows (all of them for one process)."""
    if not _active():
        return index
    return torch.tensor_split(index, world_size())[rank()]


def broadcast_parameters(params: Sequence[Tensor]) -> None:
    """Rank 0's parameter values on every rank (a fit starts from one state everywhere)."""
    if not _active():
        return
    with torch.no_grad():
        for p in params:
            torch.distributed.broadcast(p.data, src=0)


def reduce_step(
    terms: dict[str, Tensor] | None, params: Sequence[Tensor], n_rows: int
) -> dict[str, Tensor] | None:
    """Sum the gradients of `params` over ranks; the step's terms and flags for all its rows.

    Each rank's loss was weighted by its share of the step's `n_rows` before ``backward``, so
    the summed gradient is the gradient of the whole batch's loss. `terms` are this rank's
    (``None`` for a rank with no rows this step); the returned terms are the weighted sums,
    ``flipped`` holds the flags of all `n_rows` rows in step order. One process: unchanged.
    """
    if not _active():
        return terms
    device = params[0].device
    grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])  # one all-reduce for every parameter
    torch.distributed.all_reduce(flat)
    offset = 0
    for p in params:
        p.grad = flat[offset : offset + p.numel()].view_as(p).clone()
        offset += p.numel()
    sizes = [len(c) for c in torch.tensor_split(torch.arange(n_rows), world_size())]
    start, mine = sum(sizes[: rank()]), sizes[rank()]
    share = mine / n_rows
    packed = torch.zeros(len(TERMS) + n_rows, dtype=torch.float64, device=device)
    if terms is not None:
        packed[: len(TERMS)] = torch.stack([terms[k].detach().double() * share for k in TERMS])
        flags = terms["flipped"].to(device, torch.float64)
        packed[len(TERMS) + start : len(TERMS) + start + mine] = flags
    torch.distributed.all_reduce(packed)
    out = {k: packed[i].float() for i, k in enumerate(TERMS)}
    out["flipped"] = packed[len(TERMS) :] > 0.5
    return out


def from_main(value: float) -> float:
    """Rank 0's `value` on every rank: a decision taken on it (stop here) is the same on all,
    even where a GPU's kernels make the ranks' own values differ in the last bits."""
    if not _active():
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return float(box[0])


def gather(items: list[T]) -> list[T]:
    """Every rank's `items` (picklable), concatenated in rank order, on every rank."""
    if not _active():
        return items
    everyone: list[Any] = [None] * world_size()
    torch.distributed.all_gather_object(everyone, items)
    return [item for part in everyone for item in part]


def my_share(n: int) -> list[int]:
    """The indices of `n` tasks this rank takes (dealt round-robin; all of them alone)."""
    return list(range(rank(), n, world_size()))


def check_launch(command: str) -> None:
    """Refuse a command that runs in one process only when torchrun started several."""
    if launched() and command not in ("fit", "sweep"):
        raise AscaleError(
            f"`ascale {command}` runs in one process; launch it without torchrun (fit and "
            "sweep use several processes)"
        )
