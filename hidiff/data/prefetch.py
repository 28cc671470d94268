"""Prefetchers that overlap data loading with compute.

* :class:`CPUPrefetcher` fetches batches in a background thread into a
  bounded queue (useful when the main process does the collation, e.g. with
  ``num_workers: 0``).
* :class:`CUDAPrefetcher` copies the next batch to the GPU on a side CUDA
  stream while the current one is being used.

Both wrap a DataLoader and keep its interface: iterate, ``len()``, ``.sampler``.
"""
from __future__ import annotations

import queue
import threading
from typing import Any, Iterator, Optional

import torch

from hidiff.errors import ConfigError

_DONE = object()


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class _LoaderView:
    """What both prefetchers expose of the loader they wrap: its sampler, dataset and length."""

    loader: Any

    @property
    def sampler(self):
        return self.loader.sampler

    @property
    def dataset(self):
        return self.loader.dataset

    def __len__(self) -> int:
        return len(self.loader)


class CPUPrefetcher(_LoaderView):
    """Iterate a loader in a background thread, ``depth`` batches ahead."""

    def __init__(self, loader, depth: int = 2) -> None:
        if depth < 1:
            raise ConfigError(f"prefetch depth must be >= 1, got {depth}")
        self.loader = loader
        self.depth = depth

    def __iter__(self) -> Iterator[Any]:
        q: "queue.Queue[Any]" = queue.Queue(maxsize=self.depth)
        stop = threading.Event()

        def put(item: Any) -> bool:
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def work() -> None:
            try:
                for batch in self.loader:
                    if not put(batch):
                        return
                put(_DONE)
            except BaseException as exc:  # handed to the consumer, re-raised there
                put(_Failure(exc))

        thread = threading.Thread(target=work, name="hidiff-cpu-prefetch", daemon=True)
        thread.start()
        try:
            while True:
                item = q.get()
                if item is _DONE:
                    return
                if isinstance(item, _Failure):
                    raise item.exc
                yield item
        finally:
            stop.set()
            thread.join(timeout=5)


def move_to(batch: Any, device: torch.device, non_blocking: bool = True) -> Any:
    """Move every tensor of a (nested) batch to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, dict):
        return {k: move_to(v, device, non_blocking) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to(v, device, non_blocking) for v in batch)
    return batch


class CUDAPrefetcher(_LoaderView):
    """Yield batches already on ``device``, copied one batch ahead on a side stream."""

    def __init__(self, loader, device: Optional[torch.device] = None) -> None:
        if not torch.cuda.is_available():
            raise ConfigError("prefetch: 'cuda' was requested but CUDA is not available on this machine; "
                              "use prefetch: cpu or prefetch: null")
        self.loader = loader
        self.device = torch.device(device) if device is not None else torch.device("cuda", torch.cuda.current_device())
        if self.device.type != "cuda":
            raise ConfigError(f"CUDAPrefetcher needs a CUDA device, got {self.device}")

    def __iter__(self) -> Iterator[Any]:
        stream = torch.cuda.Stream(device=self.device)
        it = iter(self.loader)

        def preload() -> Any:
            try:
                batch = next(it)
            except StopIteration:
                return _DONE
            with torch.cuda.stream(stream):
                return move_to(batch, self.device)

        nxt = preload()
        while nxt is not _DONE:
            torch.cuda.current_stream(self.device).wait_stream(stream)
            batch = nxt
            for t in _tensors(batch):
                t.record_stream(torch.cuda.current_stream(self.device))
            nxt = preload()
            yield batch


def _tensors(batch: Any) -> Iterator[torch.Tensor]:
    if isinstance(batch, torch.Tensor):
        yield batch
    elif isinstance(batch, dict):
        for v in batch.values():
            yield from _tensors(v)
    elif isinstance(batch, (list, tuple)):
        for v in batch:
            yield from _tensors(v)
