"""The StageModel contract between stage-specific logic and the generic trainer."""
from __future__ import annotations

from typing import Dict, Iterable, Optional, Sequence

from torch import Tensor, nn

from hidiff.archs import ARCH_REGISTRY
from hidiff.errors import ConfigError, ConfigProblems
from hidiff.losses import L1Loss, build_loss
from hidiff.registry import DATASET_REGISTRY
from hidiff.utils.kwargs import keyword_value

#: every ``train.<x>_opt`` loss block an option file may give
LOSS_BLOCKS = ("pixel_opt", "pixel_diff_opt", "perceptual_opt")


class StageModel(nn.Module):
    """One training stage.

    * Registered submodules (``self.trainable``) are exactly the networks being
      optimised; the trainer wraps this whole object in one DDP.
    * ``self.frozen`` is a plain dict, so DDP never sees frozen networks;
      ``.to()`` / ``.float()`` still move them.
    * ``forward(batch)`` returns the loss terms, including ``'total'``.
    * ``pipeline()`` is the restoration path with the current networks: a
      ``RestorationPipeline``, or stage 1's ``OraclePipeline`` (``needs_gt``).
    """

    #: networks written as ``models/net_<x>_<iter>.pth``
    save_names: Sequence[str] = ()
    #: networks the option file must declare
    required_networks: Sequence[str] = ()
    #: reads ``diffusion_schedule`` (a file for any other stage may not carry one)
    uses_diffusion: bool = False
    #: the ``train.<x>_opt`` loss blocks this stage reads (a file may not give any other: it would be ignored)
    loss_blocks: Sequence[str] = ("pixel_opt", "perceptual_opt")
    #: network_g must take HI-Diff's prior (True), must not (False), or either (None)
    g_takes_prior: Optional[bool] = None

    def __init__(self, trainable: Dict[str, nn.Module], frozen: Optional[Dict[str, nn.Module]] = None,
                 pad_multiple: int = 8) -> None:
        super().__init__()
        self.trainable = nn.ModuleDict(trainable)
        frozen = dict(frozen or {})
        for net in frozen.values():
            net.requires_grad_(False)
        object.__setattr__(self, "frozen", frozen)
        self.pad_multiple = pad_multiple

    # ----------------------------------------------------------- construction
    @classmethod
    def check_options(cls, options) -> None:
        """Fail at load time if the option file lacks a network this stage needs, gives a block this stage
        would ignore, stacks dual-pixel views in another order than network_g expects, or (training) gives a
        network_g that ignores the prior this stage trains, or needs one it does not have."""
        problems: list = []
        missing = [n for n in cls.required_networks if n not in options.networks]
        if missing:
            problems.append(f"model_type {options.model_type}: missing block(s) "
                            f"{', '.join('network_' + m for m in missing)}")
        if options.diffusion_schedule is not None and not cls.uses_diffusion:
            problems.append(f"diffusion_schedule: model_type {options.model_type} has no diffusion prior, so "
                            f"this block would be ignored; remove it")
        train = getattr(options, "train", None)
        for name in LOSS_BLOCKS:
            if name not in cls.loss_blocks and train is not None and getattr(train, name, None) is not None:
                why = " has no diffusion prior (pixel_diff_opt is stage 2's loss on the generated prior) and" \
                    if name == "pixel_diff_opt" and not cls.uses_diffusion else ""
                problems.append(f"train.{name}: model_type {options.model_type}{why} reads only "
                                f"{', '.join('train.' + n for n in cls.loss_blocks)}, so this block would be "
                                f"ignored; remove it")
        problems += view_order_problems(options)
        problems += dual_pixel_ensemble_problems(options)
        if options.is_train:  # a test file may leave network_g to the weights' run: hidiff.runners.test_runner
            problems += prior_problems(options, cls.g_takes_prior)
        if problems:
            raise ConfigProblems(problems)

    @classmethod
    def from_options(cls, options) -> "StageModel":  # pragma: no cover - abstract
        raise NotImplementedError

    # ---------------------------------------------------------------- helpers
    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        for net in self.frozen.values():
            net._apply(fn, recurse)
        return self

    def networks(self) -> Dict[str, nn.Module]:
        """Every network by suffix (trainable and frozen), for loading weights."""
        return {**dict(self.trainable.items()), **self.frozen}

    def net(self, name: str) -> nn.Module:
        return self.networks()[name]

    def train(self, mode: bool = True):
        super().train(mode)
        for net in self.frozen.values():
            net.train(mode)
        return self

    @property
    def has_prior(self) -> bool:
        return False

    def forward(self, batch: Dict[str, Tensor]) -> Dict[str, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def pipeline(self):  # pragma: no cover - abstract
        """The restoration path with this model's (current) networks (validation, test, export)."""
        raise NotImplementedError


def _yaml(value) -> str:
    return str(value).lower() if isinstance(value, bool) else repr(value) if isinstance(value, str) else str(value)


def prior_problems(options, wanted: Optional[bool]) -> list:
    """``wanted``: network_g must read HI-Diff's prior (a HI-Diff stage, whose prior networks would otherwise be
    trained and run for nothing), or must not need one (a prior-free model, where it would fail at the first
    sample).  The switch is Transformer ``use_prior`` or Swintormer ``prior``; no HIM and no FiLM also ignore it."""
    net = (getattr(options, "networks", None) or {}).get("g")
    if wanted is None or net is None or net.type not in ARCH_REGISTRY:
        return []
    arch = ARCH_REGISTRY.get(net.type)
    found = [(key, off, value) for key, off in (("use_prior", False), ("prior", "none"))
             if (value := keyword_value(arch, net.kwargs, key, None)) is not None]
    if not found:
        return []
    key, off, value = found[0]
    needs = value != off
    shown = _yaml(value) + ("" if key in net.kwargs else f" (the {net.type} default)")
    if not wanted:
        return [f"network_g.{key}: {shown} builds a network_g that needs HI-Diff's prior, but model_type "
                f"{options.model_type} gives it none; set network_g.{key}: {_yaml(off)} for a prior-free network, "
                f"or use model_type HI_Diff_S1/HI_Diff_S2 to restore with the prior"] if needs else []
    if not needs:
        why = f"network_g.{key}: {shown} builds a network_g that ignores HI-Diff's prior"
    elif keyword_value(arch, net.kwargs, "him_levels", None) == [] and \
            not keyword_value(arch, net.kwargs, "film_bottleneck", True):
        why = "network_g.him_levels: [] with film_bottleneck: false builds a network_g that never reads HI-Diff's prior"
    else:
        return []
    return [f"{why}, so model_type {options.model_type} would train and run its prior networks for an output "
            f"that does not depend on them; use model_type: PlainRestoration for a prior-free baseline"]


def view_order_problems(options) -> list:
    """A dual-pixel set's ``view_order`` (the order its two views are stacked in the 6-channel input) must be
    the ``dual_pixel_order`` network_g reads them in: otherwise the views are swapped without a word (and
    ``residual_from: first3`` adds the wrong view).  Both keys have their own default (DualPixelDataset 'LR',
    Restormer's; Swintormer 'RL', the published one), so a file that sets only one of them disagrees."""
    net = (getattr(options, "networks", None) or {}).get("g")
    if net is None or net.type not in ARCH_REGISTRY:
        return []
    arch = ARCH_REGISTRY.get(net.type)
    order = keyword_value(arch, net.kwargs, "dual_pixel_order", None)
    if order is None or keyword_value(arch, net.kwargs, "inp_channels", None) not in (None, 6):
        return []
    out = []
    for key, ds in sorted((getattr(options, "datasets", None) or {}).items()):
        if ds.type not in DATASET_REGISTRY:
            continue
        component = DATASET_REGISTRY.get(ds.type)
        views = keyword_value(component, ds.params, "view_order", None)
        if views is None or not keyword_value(component, ds.params, "dual_pixel", None):
            continue
        if views != order:
            ds_default = "" if "view_order" in ds.params else f" (the {ds.type} default)"
            net_default = "" if "dual_pixel_order" in net.kwargs else f" (the {net.type} default)"
            out.append(f"datasets.{key}.view_order: the set stacks its views as '{views}'{ds_default} but "
                       f"network_g.dual_pixel_order is '{order}'{net_default}, so the network would read the two "
                       f"views swapped; set both keys to the same order (the published Swintormer weights "
                       f"and the shipped DPDD files use RL)")
    return out


def dual_pixel_ensemble_problems(options) -> list:
    """``val.self_ensemble`` on a dual-pixel set: a mirrored pair would need its two views swapped (the left
    camera's view of a mirrored scene is the mirrored right view) and a 90-degree turn makes the views'
    disparity vertical, unlike anything the network saw; so the x8 average is not a sound estimate there."""
    val = getattr(options, "val", None)
    if val is None or not val.self_ensemble:
        return []
    out = []
    for key, ds in sorted((getattr(options, "datasets", None) or {}).items()):
        if ds.type in DATASET_REGISTRY and keyword_value(DATASET_REGISTRY.get(ds.type), ds.params, "dual_pixel",
                                                         None):
            out.append(f"val.self_ensemble: datasets.{key} is a dual-pixel set, whose pairs the 8 flips and "
                       f"rotations do not keep valid (a mirror swaps which view is left, a quarter turn makes the "
                       f"disparity vertical); set val.self_ensemble: false")
    return out


def sum_losses(terms: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """Add ``'total'`` = the sum of every term."""
    total = None
    for value in terms.values():
        total = value if total is None else total + value
    terms["total"] = total
    return terms


def build_losses(train_options, names: Iterable[str]) -> Dict[str, nn.Module]:
    """Instantiate the configured loss blocks among ``names`` (missing ones default to L1)."""
    out: Dict[str, nn.Module] = {}
    for name in names:
        block = getattr(train_options, name, None) if train_options is not None else None
        if block is None:
            if name == "perceptual_opt":
                continue
            out[name] = L1Loss()
        else:
            out[name] = build_loss(block, f"train.{name}")
    return out
