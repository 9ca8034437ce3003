"""cnntrain: train convolutional networks from Caffe-style YAML configs, on NumPy."""

__version__ = "0.1.0"
