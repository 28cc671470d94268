"""Export the stage-2 inference graph to TorchScript and ONNX.

The graph is latent encoder -> the T-step sampler, unrolled -> U-Net, with
the initial noise x_T as an explicit input, so the exported model is a pure
function and matches eager mode exactly for the same (image, noise):

    inputs:  image (1, C, H, W) float32 in [0, 1], H and W multiples of the
             model's size divisor (8);  noise (1, N, C') float32 (HI-Diff: 1x16x256)
    output:  restored (1, 3, H, W) (not clamped)

Prior-free networks export with the image as their only input.  Padding is not
part of the graph: pad H and W to the divisor yourself (or export for the tile
size and let :mod:`hidiff.inference.tiler` cover any image with it).  Both
formats run any H, W that are multiples of the divisor: the TorchScript trace
keeps shapes symbolic, and the ONNX graph declares H and W as dynamic axes
(``dynamic=False`` fixes them to the example size).  The latent encoder's
adaptive pooling exports as shape-derived averaging matrices
(:mod:`hidiff.archs.adaptive_pool`), not fixed windows.  The fast blocks take
images whole while traced.  Window attention (SWDA, Swintormer) is the exception:
its padding and masks are worked out in Python, so its files run at the example
size only; dynamic ONNX is refused for it and the description says ``runs_at``.

Both writers are atomic and store a small JSON description (input shapes,
variant, size divisor) inside the file: ``_extra_files['hidiff.json']`` for
TorchScript, ``metadata_props['hidiff']`` for ONNX.
"""
from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch
from torch import Tensor, nn
from torch.export import Dim

from hidiff.archs.fast.stripes import whole_images
from hidiff.errors import ConfigError
from hidiff.utils.atomic import atomic_write_bytes
from hidiff.utils.optional import require

PathLike = Union[str, Path]
#: the oldest ONNX opset torch's exporter writes (torch.onnx.export(dynamo=True): older ones come out as 18)
OLDEST_ONNX_OPSET = 18


class InferenceGraph(nn.Module):
    """image [, noise] -> restored, through the pipeline's own prior and U-Net calls."""

    def __init__(self, pipeline) -> None:
        super().__init__()
        self._pipeline = pipeline
        # registered here so tracing/export sees the parameters as the graph's own
        self.net_g = pipeline.net_g
        self.net_le_dm = pipeline.net_le_dm
        self.net_d = pipeline.net_d
        self.diffusion = pipeline.diffusion

    def forward(self, image: Tensor, noise: Optional[Tensor] = None) -> Tensor:
        if self._pipeline.needs_prior:
            return self.net_g(image, self._pipeline.prior(image, noise))
        return self.net_g(image)


def example_inputs(pipeline, height: int = 256, width: int = 256, seed: int = 0) -> tuple[Tensor, ...]:
    """A random image and x_T of the exported shapes, on the pipeline's device."""
    if height % pipeline.pad_multiple or width % pipeline.pad_multiple or height <= 0 or width <= 0:
        raise ConfigError(f"export size {height}x{width}: height and width must be positive multiples of "
                          f"{pipeline.pad_multiple} (the graph has no padding)")
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(1, pipeline.in_channels, height, width, generator=g).to(pipeline.device)
    if not pipeline.needs_prior:
        return (image,)
    return image, pipeline.noise(1, generator=g)


def size_fixed_modules(module: nn.Module) -> list[str]:
    """Names of the module classes whose traced graph holds the example's image size (window attention)."""
    return sorted({type(m).__name__ for m in module.modules() if getattr(m, "size_fixed_in_graph", False)})


def _description(pipeline, inputs: tuple[Tensor, ...], metadata: Optional[Mapping[str, Any]],
                 dynamic: bool = False) -> str:
    names = ["image", "noise"][:len(inputs)]
    shapes = {n: list(t.shape) for n, t in zip(names, inputs)}
    if dynamic:
        shapes["image"][2:] = ["H", "W"]
    fixed = size_fixed_modules(pipeline.net_g)
    info = {"inputs": shapes, "output": "restored",
            "size_divisor": pipeline.pad_multiple, "value_range": "image in [0, 1]; output not clamped",
            **({"runs_at": f"{shapes['image'][2]}x{shapes['image'][3]} only ({', '.join(fixed)}: window "
                           f"padding and masks are fixed at export)"} if fixed else {}),
            **dict(metadata or {})}
    if pipeline.needs_prior:
        info["diffusion_steps"] = pipeline.diffusion.timesteps
    return json.dumps(info, sort_keys=True)


def export_torchscript(pipeline, path: PathLike, *, height: int = 256, width: int = 256,
                       metadata: Optional[Mapping[str, Any]] = None) -> Path:
    """Trace the graph at (height, width) and atomically write a TorchScript file.

    The fast blocks take the image whole while traced: their row stripes depend on the size.
    """
    graph = InferenceGraph(pipeline).eval()
    inputs = example_inputs(pipeline, height, width)
    with torch.no_grad(), warnings.catch_warnings(), whole_images(graph):
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)  # shape checks become constants
        warnings.filterwarnings("ignore", category=FutureWarning)
        traced = torch.jit.trace(graph, inputs, check_trace=False)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)  # torch.jit is deprecated in favour of export
        torch.jit.save(traced, buf, _extra_files={"hidiff.json": _description(pipeline, inputs, metadata)})
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def export_onnx(pipeline, path: PathLike, *, height: int = 256, width: int = 256, opset: int = 18,
                optimize: bool = True, dynamic: bool = True,
                metadata: Optional[Mapping[str, Any]] = None) -> Path:
    """Export the graph to ONNX (torch.export based) and write it atomically.

    (height, width) is the example size.  With ``dynamic`` the image's H and W
    are dynamic axes (any multiple of the size divisor up to 2**16); otherwise
    the graph is fixed to the example size.  The fast blocks take the image whole while
    exported: their row stripes depend on the size.
    """
    onnx = require("onnx", "export", "ONNX export")
    require("onnxscript", "export", "ONNX export")  # torch.onnx.export(dynamo=True) imports it
    # refused before the minutes of tracing: an opset the installed onnx does not define cannot be written (an
    # opset within the range may still fail to convert; the check after the export catches that)
    newest = onnx.defs.onnx_opset_version()
    if not OLDEST_ONNX_OPSET <= opset <= newest:
        raise ConfigError(f"ONNX opset {opset} cannot be written: torch's exporter writes opset {OLDEST_ONNX_OPSET} "
                          f"or newer, up to {newest}, the newest that the installed onnx {onnx.__version__} "
                          f"defines; nothing was written")
    fixed = size_fixed_modules(pipeline.net_g)
    if dynamic and fixed:
        raise ConfigError(f"{', '.join(fixed)} work out window padding and attention masks from the image size "
                          f"in Python, so a graph with dynamic H and W would keep the {height}x{width} example's "
                          f"and give wrong images at other sizes; nothing was written. Export a fixed size "
                          f"(--static-onnx; the file then runs at {height}x{width} only)")

    graph = InferenceGraph(pipeline).eval()
    inputs = example_inputs(pipeline, height, width)
    names = ["image", "noise"][:len(inputs)]
    shapes = None
    if dynamic:
        k = pipeline.pad_multiple
        image_axes = {2: k * Dim("h_blocks", min=1, max=2 ** 16 // k), 3: k * Dim("w_blocks", min=1, max=2 ** 16 // k)}
        shapes = {"image": image_axes, "noise": None} if len(inputs) == 2 else {"image": image_axes}
    with torch.no_grad(), warnings.catch_warnings(), whole_images(graph):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(graph, inputs, dynamo=True, input_names=names, output_names=["restored"],
                                    opset_version=opset, optimize=optimize, dynamic_shapes=shapes, verbose=False)
    model = program.model_proto
    wrote = {o.domain: o.version for o in model.opset_import}.get("", None)
    if wrote != opset:
        raise ConfigError(f"ONNX opset {opset} was asked for but torch's exporter wrote opset {wrote}; nothing "
                          f"was written; use --opset {wrote}")
    onnx.helper.set_model_props(model, {"hidiff": _description(pipeline, inputs, metadata, dynamic)})
    atomic_write_bytes(path, model.SerializeToString())
    return Path(path)


def run_torchscript(path: PathLike, *inputs: Tensor) -> Tensor:
    """Load an exported TorchScript file and run it once.

    The JIT's profiling optimiser is switched off: it spends seconds on the
    first calls and only pays off for a long-lived module.
    """
    with warnings.catch_warnings(), torch.jit.optimized_execution(False), torch.no_grad():
        warnings.filterwarnings("ignore", category=FutureWarning)  # torch.jit is deprecated in favour of export
        module = torch.jit.load(str(path), map_location=inputs[0].device)
        return module(*inputs)


def run_onnx(path: PathLike, *inputs: Tensor) -> Tensor:
    """Run an exported ONNX file with onnxruntime on the CPU."""
    ort = require("onnxruntime", "export", "Running an ONNX file")

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {i.name: t.detach().cpu().numpy() for i, t in zip(session.get_inputs(), inputs)}
    return torch.from_numpy(session.run(None, feeds)[0])


def parity(pipeline, path: PathLike, kind: str, *, height: int = 256, width: int = 256,
           seed: int = 1) -> float:
    """Max |exported - eager| on a fresh random (image, noise) of the exported size."""
    inputs = example_inputs(pipeline, height, width, seed=seed)
    with torch.no_grad():
        eager = InferenceGraph(pipeline).eval()(*inputs).cpu()
    runner = {"torchscript": run_torchscript, "onnx": run_onnx}[kind]
    return float((runner(path, *inputs).cpu() - eager).abs().max())


def read_description(path: PathLike) -> dict:
    """The JSON description stored in an exported file (either format)."""
    p = Path(path)
    if p.suffix == ".onnx":
        onnx = require("onnx", "export", "Reading an ONNX file")
        props = {e.key: e.value for e in onnx.load(str(p), load_external_data=False).metadata_props}
        return json.loads(props["hidiff"])
    extra = {"hidiff.json": ""}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        torch.jit.load(str(p), _extra_files=extra)
    return json.loads(extra["hidiff.json"])
