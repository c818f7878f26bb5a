"""Data set readers, the synthetic generator and the Grain input pipelines."""
