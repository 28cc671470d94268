"""The generic training engine: loop, devices, AMP, DDP, EMA, checkpoints, logging.

The trainer drives a stage model (``hidiff.models``) that only knows what is
optimised; nothing here knows about HI-Diff.  Import submodules directly,
e.g. ``from hidiff.engine.trainer import Trainer``.

Where things are:

- ``trainer``: start-up order and the training loop (one optimiser step per iteration);
- ``preflight``: input checks before anything is built; ``setup``: model, optimiser, data, metrics (in memory);
- ``run_folder``: the only start-up side effects (archive, folder, config.yml, log file, TensorBoard);
- ``training_state``: which checkpoint to resume, the config-change check, saving and restoring the state;
- ``checkpoint_store``: checkpoint units on disk (``latest_complete``); network files are ``hidiff.utils.checkpoint``;
- ``stage_link``: which file each network starts from (``path`` block, the stage-1 run);
- ``validation`` / ``best``: validation during training, best scores and ``net_<x>_best.pth``;
- ``stop``: SIGINT/SIGTERM graceful stop; ``nonfinite``: skipped steps and their cause;
- ``distributed``, ``amp``, ``ema``, ``optim``, ``progressive``, ``seeding``, ``logging`` (LR schedules:
  ``hidiff.models.lr_scheduler``, which the configuration validates against).
"""
