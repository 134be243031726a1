"""tempalias: temporary email aliases that forward until a count or a date runs out."""

__version__ = "0.1.0"
