"""hidiff: a config-driven PyTorch framework for diffusion-prior image deblurring."""

__version__ = "0.1.0"
