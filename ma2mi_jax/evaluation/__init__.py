"""Evaluation: pooled metrics, the linear probe of a frozen encoder, the run report."""
