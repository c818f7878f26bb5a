"""Fixtures shared by the tests: one persistent XLA cache for the whole session, tiny data sets.

The tests compile hundreds of small programs and run most of them a few times, so compiling is most
of their time: they compile at XLA's backend optimisation level 0 (LLVM's code generation without its
optimisations; the optimised HLO, its operations and fusions, is the same text as at the default
level 3), with XLA:CPU's older emitters for fusions, set here for every worker and subprocess unless
XLA_FLAGS already chooses a level. The float32 gradient-accuracy tests compile their programs with
XLA's defaults (`test_gradients.py`), and so do the pre-training subprocesses, the multi-process
jobs compared with one device (`tests.helpers.pretrain.default_level_flags`) and the paper-size
chain, whose 224 px steps run longer than they compile (`tests.helpers.paper_size`): the bounds were
measured there (docs/decisions.md#xla-optimisation-level-in-tests).
"""

import os

from tests.helpers.xla_level import TEST_FLAGS  # no jax: XLA_FLAGS is set before any compile

# The subprocesses at the default level leave these out (tests.helpers.pretrain.default_level_flags).
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):  # before any compile
    os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), *TEST_FLAGS]).strip()

import jax
import pytest

from ma2mi_jax.cpu import allocator
from tests.helpers.finetune import write_casme2

allocator.tune_allocator()  # as the scripts run (cli.run; docs/decisions.md#host-allocator-setting)
CACHE_MIN_COMPILE_SECONDS = 0.1  # programs that compile sooner are not kept (session_compile_cache)


@pytest.fixture(scope="session", autouse=True)
def session_compile_cache(tmp_path_factory):
    """One persistent XLA cache for every test, every pytest-xdist worker and every subprocess.

    Many tests compile the same tiny programs (the same configs, in-process and through the CLI,
    in both workers); with the cache each distinct program compiles once per session. Subprocesses
    find it through the environment variables. A size limit turns on JAX's file lock, so that
    processes that write and read the same entry at once never see half a file. It also makes
    every write read every entry's access time (JAX's LRU eviction), so the cache keeps only
    programs that took CACHE_MIN_COMPILE_SECONDS to compile: not the thousands of one-operation
    programs that code run outside jit compiles in milliseconds, which would make each write
    slower than compiling (docs/decisions.md#two-test-workers-and-one-compile-cache).
    """
    if os.environ.get("PYTEST_XDIST_WORKER"):  # the workers' base folders share this session's parent
        path = tmp_path_factory.getbasetemp().parent / "xla_cache"
        path.mkdir(exist_ok=True)
        path = str(path)
    else:
        path = str(tmp_path_factory.mktemp("xla_cache"))
    settings = {
        "JAX_COMPILATION_CACHE_DIR": path,
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": str(CACHE_MIN_COMPILE_SECONDS),
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
        "JAX_COMPILATION_CACHE_MAX_SIZE": str(8 << 30),
    }
    previous = {k: os.environ.get(k) for k in settings}
    os.environ.update(settings)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", CACHE_MIN_COMPILE_SECONDS)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    jax.config.update("jax_compilation_cache_max_size", 8 << 30)
    yield path
    for k, v in previous.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def compile_cache(session_compile_cache):
    """The session's persistent XLA cache directory (for tests that pass it to a subprocess)."""
    return session_compile_cache


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """A tiny CASME II-layout data set (4 subjects, 20 clips, 32 px)."""
    return write_casme2(str(tmp_path_factory.mktemp("casme2")))
