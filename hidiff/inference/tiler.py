"""Overlapping-window (tiled) inference for any image-to-image model.

A big image is cut into square tiles of the training size, the model runs on a
few tiles at a time, and the outputs are blended back with weights that fade
out where two tiles overlap (docs/architecture.md 3.3).  Guarantees:

* any H, W works: a side shorter than the tile is mirror-padded up to the tile
  (repeated reflection, so even 1xN strips work) and cropped back afterwards;
* memory: only ``batch`` tiles are sliced at a time, and the only image-sized
  buffers are the input and one float32 accumulator; the blending denominator
  is separable (a sum over a Cartesian grid of separable weights factorises),
  so it is two 1-D profiles instead of an HxW map;
* the result is bitwise identical for every ``batch``.  The tiler adds no
  dependence on it: tiles are accumulated one at a time in a fixed raster
  order, and stochastic inputs (HI-Diff's x_T) are drawn per tile from a seed
  that is a pure function of (image seed, image index, tile position), never
  one batch-shaped draw per chunk.  The network must not add one either.  On
  CPU, PyTorch picks kernels by batch size (oneDNN vs. native convolutions for
  batch 1, for small inputs and for 1x1 kernels on one thread from batch 16;
  MKL GEMMs by row count), so a sample's output changes in the last float32
  bits with the batch.  Batching tiles is also *slower* on CPU (4 GoPro tiles
  of 256^2, 2 threads: 11.3 s batched, 6.7 s one by one), so on a CPU device
  the network runs one tile per call whatever ``batch`` says; ``batch`` sets
  the tiles per call on accelerators.  There, hidiff's networks keep a
  sample's output independent of its batch where they can (per-sample prior
  Linears and attention reductions, :mod:`hidiff.archs.sample_wise`); set
  ``torch.use_deterministic_algorithms(True)`` and ``cudnn.benchmark=False``
  too, and ``fixed_model_batch`` so even the last chunk has ``batch`` tiles;
* on CUDA out-of-memory the tile batch is halved and the chunk retried (a
  warning is logged; see above for what a different batch can change);
* on a CPU every tile runs on one torch thread, ``workers`` of them at once,
  each in a thread of its own (0, the default: as many as the process has
  torch threads).  The network's small per-tile operations keep two threads of
  one call waiting for each other, while two single-threaded tiles side by side
  do not: on 2 cores 2 workers ran 1.56x the speed of one tile on 2 threads
  (docs/speed.md).  Since a tile's kernels are always the one-thread kernels
  and tiles are accumulated in raster order, a tiled CPU result is bitwise the
  same for every ``workers`` and every thread count (tests/test_tiler.py).
  Inside CPU autocast, whose state is per thread, tiles run one at a time in
  the caller's thread instead.

``mode='swintormer'`` reproduces the reference grid of Swintormer's test.py
(steps of ``stride``, the last tile flush with the border); with
``blend='mean'`` it is the reference-parity preset
(:meth:`TileOptions.swintormer_reference`).  Unlike the reference it does not
break on sides shorter than the tile: those are padded as in ``'hidiff'`` mode.
"""
from __future__ import annotations

import logging
import math
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from itertools import islice
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from hidiff.errors import ConfigError, DataError
from hidiff.inference.noise import tile_seed
from hidiff.utils.padding import mirror_pad, pad_to_multiple
from hidiff.utils.suggest import did_you_mean

log = logging.getLogger(__name__)

BLENDS = ("mean", "linear", "hann")
MODES = ("hidiff", "swintormer")
PRIORS = ("per_tile", "global")
DEFAULT_OVERLAP = 32
# Whole-image peak memory of the GoPro HI-Diff model in fp32, ~8.7 GB for a
# 1280x720 frame on CPU (docs/architecture.md 1.6), i.e. ~9.4 kB per pixel, rounded up.
BYTES_PER_PIXEL = 10_000
# Pass as ``tile`` to :func:`restore_image` to force one whole-image forward.
WHOLE_IMAGE = "whole"

_OOM_ERRORS: tuple = tuple({getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError),
                            torch.cuda.OutOfMemoryError})


# ------------------------------------------------------------------ options
@dataclass(frozen=True)
class TileOptions:
    """How to cut an image into overlapping tiles and blend them back.

    Give ``overlap`` (pixels shared by neighbouring tiles) or ``stride`` (the
    largest step between tile starts, ``size - overlap``), not both; neither
    means ``overlap = min(32, size // 2)``.
    """

    size: int = 256
    overlap: Optional[int] = None
    stride: Optional[int] = None
    blend: str = "hann"          # 'mean' (uniform, as Swintormer) | 'linear' | 'hann'
    batch: int = 1               # tiles per forward on an accelerator (a CPU runs one tile per forward)
    mode: str = "hidiff"         # 'hidiff' (balanced grid) | 'swintormer' (reference grid)
    prior: str = "per_tile"      # 'per_tile' | 'global' (one prior from the downscaled image)
    fixed_model_batch: bool = False  # pad the last chunk so the model always sees `batch` tiles
    workers: int = 0             # CPU: tiles at once, one torch thread each (0: the process's torch threads)

    def __post_init__(self) -> None:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        _validate(values, "tile")
        for name, value in values.items():
            object.__setattr__(self, name, value)

    @property
    def step(self) -> int:
        """The largest distance between consecutive tile starts."""
        if self.stride is not None:
            return self.stride
        overlap = self.overlap if self.overlap is not None else min(DEFAULT_OVERLAP, self.size // 2)
        return self.size - overlap

    @classmethod
    def from_dict(cls, d: Optional[Mapping[str, Any]], where: str = "val.tile") -> Optional["TileOptions"]:
        """Build from a YAML block; ``None``/``false`` means no tiling and returns None."""
        if d is None or d is False:
            return None
        if not isinstance(d, Mapping):
            raise ConfigError(f"{where}: expected a mapping such as {{size: 256, overlap: 32}}, got {d!r}")
        known = [f.name for f in fields(cls)]
        for key in d:
            if key not in known:
                raise ConfigError(f"{where}.{key}: unknown tiling option{did_you_mean(str(key), known)}; "
                                  f"accepted: {', '.join(known)}")
        values = {f.name: f.default for f in fields(cls)}
        values.update(d)
        _validate(values, where)
        return cls(**values)

    @classmethod
    def swintormer_reference(cls, size: int = 512, batch: int = 30) -> "TileOptions":
        """Swintormer's test.py: step 220, last tile flush, uniform averaging, chunks of 30."""
        return cls(size=size, stride=220, blend="mean", batch=batch, mode="swintormer")

    def describe(self) -> dict:
        """Plain dict for reports and logs, with the resolved stride and overlap."""
        out = asdict(self)
        out["stride"] = self.step
        out["overlap"] = self.size - self.step
        return out


def _validate(v: dict, where: str) -> None:
    """Check ``v`` in place; a whole float such as ``1e3`` becomes an int, as in the option schema."""
    def positive_int(key: str, allow_zero: bool = False) -> None:
        val = v[key]
        if isinstance(val, float) and val.is_integer():
            v[key] = val = int(val)
        low = 0 if allow_zero else 1
        if isinstance(val, bool) or not isinstance(val, int) or val < low:
            raise ConfigError(f"{where}.{key}: expected an integer >= {low}, got {val!r}")

    positive_int("size")
    positive_int("batch")
    positive_int("workers", allow_zero=True)
    for key, choices in (("blend", BLENDS), ("mode", MODES), ("prior", PRIORS)):
        if v[key] not in choices:
            raise ConfigError(f"{where}.{key}: got {v[key]!r}{did_you_mean(str(v[key]), choices)}; "
                              f"expected one of {', '.join(choices)}")
    if not isinstance(v["fixed_model_batch"], bool):
        raise ConfigError(f"{where}.fixed_model_batch: expected true or false, got {v['fixed_model_batch']!r}")
    if v["overlap"] is not None and v["stride"] is not None:
        raise ConfigError(f"{where}: give either overlap ({v['overlap']}) or stride ({v['stride']}), not both")
    if v["overlap"] is not None:
        positive_int("overlap", allow_zero=True)
        if v["overlap"] >= v["size"]:
            raise ConfigError(f"{where}.overlap: must be smaller than the tile size {v['size']}, "
                              f"got {v['overlap']}")
    if v["stride"] is not None:
        positive_int("stride")
        if v["stride"] > v["size"]:
            raise ConfigError(f"{where}.stride: must be <= the tile size {v['size']} (else pixels are "
                              f"skipped), got {v['stride']}")


# --------------------------------------------------------------------- grid
def axis_starts(n: int, tile: int, step: int, mode: str = "hidiff") -> list[int]:
    """Tile start positions along one axis of length ``n >= tile``.

    'hidiff' (balanced): the fewest tiles with every step <= ``step``, spread
    evenly, first and last flush with the borders, no near-duplicates.
    'swintormer': 0, step, 2*step, ...; the first tile that would reach the
    end is moved flush to it and the sequence stops (reference behaviour).
    """
    if n < tile:
        raise ValueError(f"axis of length {n} is shorter than the tile {tile}; pad it first")
    if n == tile:
        return [0]
    span = n - tile
    if mode == "swintormer":
        starts, s = [], 0
        while True:
            if s + tile >= n:
                starts.append(span)
                return starts
            starts.append(s)
            s += step
    k = math.ceil(span / step) + 1
    # round half up in integers: floor(i*span/(k-1) + 1/2)
    return [(2 * i * span + (k - 1)) // (2 * (k - 1)) for i in range(k)]


def axis_profiles(starts: Sequence[int], tile: int, blend: str) -> list[Tensor]:
    """One float32 weight profile of length ``tile`` per start.

    Only sides that overlap a neighbouring tile are ramped, over exactly the
    overlap length L, with values ``u = (k + 0.5) / L`` (linear) or
    ``sin^2(pi u / 2)`` (hann), strictly inside (0, 1); image borders keep 1.
    """
    profiles = []
    for i, s in enumerate(starts):
        w = torch.ones(tile, dtype=torch.float64)
        if blend != "mean":
            k = torch.arange(tile, dtype=torch.float64)
            if i > 0:
                left = starts[i - 1] + tile - s
                if left > 0:
                    w = torch.minimum(w, _ramp((k + 0.5) / left, blend))
            if i + 1 < len(starts):
                right = s + tile - starts[i + 1]
                if right > 0:
                    w = torch.minimum(w, _ramp((tile - k - 0.5) / right, blend))
        profiles.append(w.to(torch.float32))
    return profiles


def _ramp(u: Tensor, blend: str) -> Tensor:
    u = u.clamp(max=1.0)
    return u if blend == "linear" else torch.sin(0.5 * math.pi * u) ** 2


@dataclass(frozen=True)
class TileIndex:
    """One tile: image ``b`` of the batch, grid ``row``/``col``, top-left pixel ``y``/``x``.

    ``y``/``x`` are in the coordinates of the (possibly mirror-padded) image,
    which for sides >= the tile are the original coordinates.
    """

    b: int
    row: int
    col: int
    y: int
    x: int


@dataclass(frozen=True)
class TileGrid:
    """Where the tiles of an ``height x width`` image go, and their blend profiles."""

    height: int
    width: int
    padded_height: int
    padded_width: int
    tile: int
    ys: tuple[int, ...]
    xs: tuple[int, ...]

    @classmethod
    def build(cls, height: int, width: int, opts: TileOptions) -> "TileGrid":
        t = opts.size
        ph, pw = max(height, t), max(width, t)
        return cls(height, width, ph, pw, t,
                   tuple(axis_starts(ph, t, opts.step, opts.mode)),
                   tuple(axis_starts(pw, t, opts.step, opts.mode)))

    def indices(self, batch: int) -> list[TileIndex]:
        """All tiles in the fixed accumulation order: image, then row, then column."""
        return [TileIndex(b, r, c, y, x) for b in range(batch)
                for r, y in enumerate(self.ys) for c, x in enumerate(self.xs)]

    def __len__(self) -> int:
        return len(self.ys) * len(self.xs)


# --------------------------------------------------------------- the tiler
TileFn = Callable[..., Tensor]


def run_tiles(fn: TileFn, lq: Tensor, opts: TileOptions, *,
              noise_fn: Optional[Callable[[TileIndex], Tensor]] = None,
              global_prior: Optional[Tensor] = None, multiple: int = 1,
              device: Optional[Union[str, torch.device]] = None,
              progress: Optional[Callable[[int, int], None]] = None,
              batch_on_cpu: bool = False) -> Tensor:
    """Run ``fn`` over overlapping tiles of ``lq`` (B,C,H,W) and blend the outputs.

    ``fn(tiles, indices)`` maps a (b,C,t,t) chunk and its ``TileIndex`` list to
    (b,C_out,t,t).  With ``noise_fn`` it also receives ``noise=`` (the stacked
    per-tile ``noise_fn(index)``); with ``global_prior`` (one row per image) it
    receives ``prior=`` (the rows of the chunk's images).  Tiles are sent to
    ``device`` (default: lq's); accumulation stays on lq's device in float32.
    ``multiple`` is the model's size divisor: the tile must be a multiple of it.
    ``progress(done, total)`` is called after every chunk.  On a CPU device
    ``fn`` gets one tile per call unless ``batch_on_cpu`` (which exercises the
    accelerator path where there is none).  Returns (B,C_out,H,W) float32.
    """
    if lq.dim() != 4:
        raise DataError(f"run_tiles expects a (B,C,H,W) tensor, got shape {tuple(lq.shape)}")
    if multiple > 1 and opts.size % multiple:
        raise ConfigError(f"tile.size: {opts.size} is not a multiple of {multiple}, the size divisor of this "
                          f"model; use {max(multiple, opts.size // multiple * multiple)} or "
                          f"{-(-opts.size // multiple) * multiple}")
    if global_prior is not None and global_prior.shape[0] != lq.shape[0]:
        raise ValueError(f"global_prior has {global_prior.shape[0]} rows for {lq.shape[0]} images")
    batch, _, h, w = lq.shape
    grid = TileGrid.build(h, w, opts)
    src = mirror_pad(lq, grid.padded_height - h, grid.padded_width - w)
    wy = axis_profiles(grid.ys, grid.tile, opts.blend)
    wx = axis_profiles(grid.xs, grid.tile, opts.blend)
    acc_device = lq.device
    run_device = torch.device(device) if device is not None else acc_device
    den_y = _spread(wy, grid.ys, grid.padded_height).to(acc_device)
    den_x = _spread(wx, grid.xs, grid.padded_width).to(acc_device)
    if not (bool((den_y > 0).all()) and bool((den_x > 0).all())):  # impossible for a valid grid
        raise RuntimeError("tiling left pixels uncovered")
    wy = [p.to(acc_device) for p in wy]
    wx = [p.to(acc_device) for p in wx]

    todo = grid.indices(batch)
    acc: Optional[Tensor] = None
    on_cpu = run_device.type == "cpu" and not batch_on_cpu  # see the module docstring
    workers = cpu_workers(opts.workers, len(todo)) if on_cpu else 0
    if workers:
        chunks = _tiles_in_threads(fn, src, todo, grid.tile, run_device, noise_fn, global_prior, workers)
    else:
        chunks = _chunks_in_turn(fn, src, todo, grid.tile, run_device, noise_fn, global_prior,
                                 1 if on_cpu else opts.batch, opts.fixed_model_batch)
    done = 0
    for idx, out in chunks:
        out = out.to(device=acc_device, dtype=torch.float32)
        if acc is None:
            acc = torch.zeros(batch, out.shape[1], grid.padded_height, grid.padded_width,
                              dtype=torch.float32, device=acc_device)
        t = grid.tile
        for k, ti in enumerate(idx):  # one tile at a time, in list order: no order-dependent sums
            region = acc[ti.b, :, ti.y:ti.y + t, ti.x:ti.x + t]
            if opts.blend == "mean":
                region += out[k]
            else:
                region += out[k] * (wy[ti.row][:, None] * wx[ti.col][None, :])
        del out
        done += len(idx)
        if progress is not None:
            progress(done, len(todo))
    assert acc is not None
    acc.div_(den_y[:, None]).div_(den_x[None, :])
    result = acc[:, :, :h, :w]
    return result if grid.padded_height == h and grid.padded_width == w else result.contiguous()


def _spread(profiles: Sequence[Tensor], starts: Sequence[int], n: int) -> Tensor:
    """Sum of the 1-D weight profiles placed at their starts: the separable denominator."""
    total = torch.zeros(n, dtype=torch.float64)
    for p, s in zip(profiles, starts):
        total[s:s + len(p)] += p.to(torch.float64)
    return total.to(torch.float32)


def cpu_workers(requested: int, tiles: int) -> int:
    """Tiles run at once on a CPU, one torch thread each: ``requested``, or (0) the process's torch threads;
    at most ``tiles``.  0 inside CPU autocast, whose state is per thread: tiles then run in the caller's thread."""
    if torch.is_autocast_enabled("cpu"):
        return 0
    return max(1, min(requested or torch.get_num_threads(), tiles))


def _chunks_in_turn(fn: TileFn, src: Tensor, todo: Sequence[TileIndex], t: int, device: torch.device,
                    noise_fn, global_prior, chunk: int, fixed_model_batch: bool
                    ) -> Iterator[tuple[Sequence[TileIndex], Tensor]]:
    """``(indices, outputs)`` of chunks of up to ``chunk`` tiles, in order; on CUDA out-of-memory the
    batch that failed (a short last chunk's own size, unless ``fixed_model_batch``) is halved and retried."""
    done = 0
    while done < len(todo):
        idx = todo[done:done + chunk]
        model_batch = chunk if fixed_model_batch else len(idx)
        try:
            out = _run_chunk(fn, src, idx, t, device, noise_fn, global_prior, model_batch)
        except _OOM_ERRORS:
            if model_batch == 1:
                raise
            chunk = max(1, model_batch // 2)
            log.warning("out of memory with %d tiles per forward; retrying with %d", model_batch, chunk)
            if device.type == "cuda":
                torch.cuda.empty_cache()
            continue
        yield idx, out
        done += len(idx)


def _tiles_in_threads(fn: TileFn, src: Tensor, todo: Sequence[TileIndex], t: int, device: torch.device,
                      noise_fn, global_prior, workers: int) -> Iterator[tuple[Sequence[TileIndex], Tensor]]:
    """``([index], output)`` of every tile in order, ``workers`` tiles running at once, each on one torch
    thread; at most ``2 * workers`` tiles are sliced or finished but not yet taken (bounded memory)."""
    inference = torch.is_inference_mode_enabled()  # grad and inference modes are per thread

    def one(ti: TileIndex) -> Tensor:
        with torch.inference_mode(inference):
            return _run_chunk(fn, src, [ti], t, device, noise_fn, global_prior, 1)

    pool = ThreadPoolExecutor(workers, thread_name_prefix="hidiff-tile", initializer=torch.set_num_threads,
                              initargs=(1,))
    try:
        queue: deque = deque()
        rest = iter(todo)
        for ti in islice(rest, 2 * workers):
            queue.append((ti, pool.submit(one, ti)))
        while queue:
            ti, future = queue.popleft()
            out = future.result()
            following = next(rest, None)
            if following is not None:
                queue.append((following, pool.submit(one, following)))
            yield [ti], out
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _run_chunk(fn: TileFn, src: Tensor, idx: Sequence[TileIndex], t: int, device: torch.device,
               noise_fn, global_prior, model_batch: int) -> Tensor:
    """Slice one chunk of tiles, run ``fn`` on it, return the outputs of the real tiles."""
    run_idx = list(idx) + [idx[-1]] * (model_batch - len(idx))
    tiles = torch.stack([src[i.b, :, i.y:i.y + t, i.x:i.x + t] for i in run_idx]).to(device)
    extra = {}
    if noise_fn is not None:
        extra["noise"] = torch.stack([noise_fn(i) for i in run_idx]).to(device)
    if global_prior is not None:
        extra["prior"] = global_prior[[i.b for i in run_idx]].to(device)
    with torch.no_grad():
        out = fn(tiles, run_idx, **extra)
    if out.dim() != 4 or out.shape[0] != len(run_idx) or out.shape[-2:] != (t, t):
        raise ValueError(f"the tile function returned shape {tuple(out.shape)} for input "
                         f"{tuple(tiles.shape)}; expected ({len(run_idx)}, C_out, {t}, {t})")
    return out[:len(idx)]


# ------------------------------------------------------- pipeline helpers
def auto_tile_options(height: int, width: int, device: Union[str, torch.device] = "cpu", *,
                      multiple: int = 8, bytes_per_pixel: int = BYTES_PER_PIXEL) -> Optional[TileOptions]:
    """The default for an image of this size: None (whole image) or tiling options.

    CPU: whole image up to 512x512, else 256-px tiles, 32-px overlap, Hann.
    CUDA: whole image if its estimated activation memory (``bytes_per_pixel``,
    measured for the GoPro model) fits in 60% of the free memory, else the
    largest tile in 1024/768/512/384/256 that fits, as many per forward as fit.
    """
    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_available():
        budget = 0.6 * torch.cuda.mem_get_info(dev)[0]
        padded = (-(-height // multiple) * multiple) * (-(-width // multiple) * multiple)
        if padded * bytes_per_pixel <= budget:
            return None
        for t in (1024, 768, 512, 384, 256):
            t = -(-t // multiple) * multiple
            if t * t * bytes_per_pixel <= budget:
                return TileOptions(size=t, overlap=max(DEFAULT_OVERLAP, t // 8), blend="hann",
                                   batch=int(min(16, budget // (t * t * bytes_per_pixel))))
        t = -(-256 // multiple) * multiple
        return TileOptions(size=t, overlap=min(DEFAULT_OVERLAP, t // 2), blend="hann", batch=1)
    if height * width <= 512 * 512:
        return None
    t = -(-256 // multiple) * multiple
    return TileOptions(size=t, overlap=min(DEFAULT_OVERLAP, t // 2), blend="hann", batch=1)


def downscale_to(lq: Tensor, size: int) -> Tensor:
    """Shrink (B,C,H,W) so its longer side is at most ``size`` (aspect kept, antialiased)."""
    h, w = lq.shape[-2:]
    scale = size / max(h, w)
    if scale >= 1:
        return lq
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    return F.interpolate(lq, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)


def restore_image(pipeline, lq: Tensor, tile: Union[TileOptions, str, None] = None, seed: int = 0,
                  progress: Optional[Callable[[int, int], None]] = None, batch_on_cpu: bool = False) -> Tensor:
    """Restore (B,C,H,W) in [0,1] with ``pipeline``, whole or tiled; returns float32 on lq's device.

    ``tile``: TileOptions, ``None`` (automatic, :func:`auto_tile_options`) or
    ``'whole'``.  The prior noise of image ``b`` is drawn from
    ``tile_seed(seed, b, 0, 0)`` for a whole-image run and from
    ``tile_seed(seed, b, y, x)`` for the tile whose top-left pixel is (y, x), so
    a tile covering the whole image reproduces the whole-image run and no output
    depends on the tile batch (beyond float rounding, see the module docstring)
    or processing order.  It does depend on the image's index ``b``: image 1 of
    a batch gets other noise than alone, so pass one image per call, with
    ``seed`` derived per image by ``hidiff.inference.noise.image_seed`` (as
    ``test.py``, ``hidiff-deblur`` and the API do), for results that do not
    depend on the batch.
    """
    if tile is None:
        tile = auto_tile_options(lq.shape[-2], lq.shape[-1], pipeline.device, multiple=pipeline.pad_multiple)
    elif isinstance(tile, str):
        if tile != WHOLE_IMAGE:
            raise ConfigError(f"tile: expected TileOptions, None (automatic) or '{WHOLE_IMAGE}', got {tile!r}")
        tile = None
    needs_prior = pipeline.needs_prior

    def noise_for(b: int, y: int, x: int) -> Tensor:
        return pipeline.noise(1, seed=tile_seed(seed, b, y, x))[0]

    with torch.no_grad():
        if tile is None:
            noise = torch.stack([noise_for(b, 0, 0) for b in range(lq.shape[0])]) if needs_prior else None
            out = pipeline.restore(lq.to(pipeline.device), noise=noise)
            if progress is not None:
                progress(1, 1)
            return out.to(device=lq.device, dtype=torch.float32)

        global_prior = noise_fn = None
        if needs_prior and tile.prior == "global":
            small, _ = pad_to_multiple(downscale_to(lq, tile.size), pipeline.pad_multiple)
            noise = torch.stack([noise_for(b, 0, 0) for b in range(lq.shape[0])])
            global_prior = pipeline.prior(small.to(pipeline.device), noise)
        elif needs_prior:
            def noise_fn(ti: TileIndex) -> Tensor:
                return noise_for(ti.b, ti.y, ti.x)

        def run(tiles: Tensor, indices: Sequence[TileIndex], **kw: Tensor) -> Tensor:
            return pipeline.restore(tiles, **kw)

        return run_tiles(run, lq, tile, noise_fn=noise_fn, global_prior=global_prior,
                         multiple=pipeline.pad_multiple, device=pipeline.device, progress=progress,
                         batch_on_cpu=batch_on_cpu)
