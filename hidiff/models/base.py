"""The StageModel contract between stage-specific logic and the generic trainer."""
from __future__ import annotations

from typing import Dict, Iterable, Optional, Sequence

from torch import Tensor, nn

from hidiff.errors import ConfigError
from hidiff.losses import L1Loss, build_loss


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
        """Fail at load time if the option file lacks a network this stage needs."""
        missing = [n for n in cls.required_networks if n not in options.networks]
        if missing:
            raise ConfigError(f"model_type {options.model_type}: missing block(s) "
                              f"{', '.join('network_' + m for m in missing)}")
        if options.diffusion_schedule is not None and not cls.uses_diffusion:
            raise ConfigError(f"diffusion_schedule: model_type {options.model_type} has no diffusion prior, so "
                              f"this block would be ignored; remove it")

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
