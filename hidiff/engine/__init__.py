"""The generic training engine: loop, devices, AMP, DDP, EMA, checkpoints, logging.

The trainer drives a stage model (``hidiff.models``) that only knows what is
optimised; nothing here knows about HI-Diff.  Import submodules directly,
e.g. ``from hidiff.engine.trainer import Trainer``.
"""
