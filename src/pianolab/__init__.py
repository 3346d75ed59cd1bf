"""pianolab: rigorous A/B experiments on piano-performance perception models."""

__version__ = "0.1.0"
