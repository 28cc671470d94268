"""Inference: the one restoration pipeline, padding, tiling, photo I/O, export."""
