"""synthaug: class-conditional diffusion for class-balanced synthetic image data."""

__version__ = "0.1.0"
