"""Data engineering: read and validate raw files, clean, dedup, scrub, augment, split and report."""
