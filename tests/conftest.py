"""Fixtures shared by the fine-tuning and inference tests."""

import jax
import pytest
from finetune_fixture import write_casme2


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory):
    """A persistent XLA cache shared by a module's runs and subprocesses (same programs, compiled once)."""
    path = str(tmp_path_factory.mktemp("xla_cache"))
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """A tiny CASME II-layout data set (4 subjects, 20 clips, 32 px)."""
    return write_casme2(str(tmp_path_factory.mktemp("casme2")))
