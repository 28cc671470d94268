"""Command-line front ends: ``hidiff-<name>`` runs ``hidiff.cli.<name>:main(argv=None) -> int``.

The console scripts are declared in pyproject.toml; ``scripts/*.py`` are shims over the same functions.
"""
