"""hidiff: a config-driven PyTorch framework for diffusion-prior image deblurring.

``hidiff.load(source)`` returns a :class:`~hidiff.api.Restorer` ready to ``deblur`` tensors, arrays or image
files (see :mod:`hidiff.api`).  Both are imported on first use, so ``import hidiff`` loads no torch.
"""

__version__ = "0.1.0"
__all__ = ["load", "Restorer"]


def __getattr__(name):
    if name in __all__:
        from hidiff import api  # deferred: import hidiff loads no torch; the API comes on first use
        return getattr(api, name)
    raise AttributeError(f"module 'hidiff' has no attribute '{name}'")
