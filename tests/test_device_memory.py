"""The memory check before a run: XLA's estimate of a compiled step against the device's memory."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ma2mi_jax.train import device_memory


def _compiled(n: int, donate: bool = False):
    fn = jax.jit(lambda x: x * 2.0 + 1.0, donate_argnums=0 if donate else ())
    return fn.lower(jnp.zeros((n,), jnp.float32)).compile()


def test_estimate_counts_arguments_outputs_and_temporaries_less_donated_buffers():
    n = 100_000
    estimate = device_memory.estimate_bytes(_compiled(n))
    m = _compiled(n).memory_analysis()
    assert m.argument_size_in_bytes == m.output_size_in_bytes == 4 * n
    assert estimate == 8 * n + m.temp_size_in_bytes - m.alias_size_in_bytes
    # A donated input is reused for the output: one buffer of the two is counted.
    assert device_memory.estimate_bytes(_compiled(n, donate=True)) <= estimate - 4 * n


def test_limit_is_the_config_value_or_what_the_device_reports():
    assert device_memory.device_limit_bytes(2.5) == int(2.5 * (1 << 30))
    reported = (
        (jax.local_devices()[0].memory_stats() or {}).get("bytes_limit")
        if jax.default_backend() != "cpu"
        else None
    )
    assert device_memory.device_limit_bytes(0.0) == reported  # a CPU reports none: no check


def test_warns_only_over_the_limit_and_names_the_overrides(caplog):
    compiled = _compiled(1 << 20)  # 4 MiB in, 4 MiB out
    overrides = ("--config.dtype=bfloat16", "a smaller --config.train.batch_size")
    with caplog.at_level("WARNING", logger=device_memory.__name__):
        assert device_memory.check(compiled, 1.0, "the step", overrides) is None
        said = device_memory.check(compiled, 4 / 1024, "the step", overrides)  # 4 MiB
    assert said is not None and caplog.messages == [said]
    assert said.startswith("the step needs about 0.0 GiB") and "more than its 0.0 GiB" in said
    assert all(o in said for o in overrides)


def test_message_states_both_figures():
    said = device_memory.over_limit_message(int(33.6 * (1 << 30)), 24 << 30, "fine-tuning 26 folds", ["x"])
    assert "about 33.6 GiB" in said and "its 24.0 GiB" in said and said.endswith("smaller-cards)")


def test_no_analysis_means_no_check():
    class NoAnalysis:  # a backend whose executables carry no memory analysis
        def memory_analysis(self):
            return None

    assert device_memory.estimate_bytes(NoAnalysis()) is None
    assert device_memory.check(NoAnalysis(), 1e-9, "the step", ["x"]) is None
