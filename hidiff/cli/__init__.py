"""Command-line front ends (console scripts declared in pyproject.toml)."""
