"""Benchmark preparation: recognise official archives, check them, write the layout options expect.

One module per benchmark (``gopro``, ``hide``, ``realblur``, ``dpdd``) plus the
shared ``checks`` (pairing, counts, decoding), ``placing`` (links/copies,
LMDB), ``crops`` and ``val_split``.  ``hidiff-prepare`` is the command
line front end (:func:`hidiff.cli.prepare.main`).
"""
