"""Data layer: one canonical record, readers, writers, dataset presets, statistics."""
