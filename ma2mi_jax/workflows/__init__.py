"""Workflows over both jobs: the quick start and the transfer experiment."""
