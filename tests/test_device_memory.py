"""The memory check before a run: XLA's estimate of a compiled step against the device's memory."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ma2mi_jax.train import device_memory, finetune
from ma2mi_jax.train.finetune import group_build, plan
from tests.helpers.configs import tiny_finetune_config
from tests.helpers.finetune import fixed_data


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


def test_fold_group_warning_names_the_folds_that_fit(compile_cache):
    """A vmapped group of 4 folds: XLA's step estimate splits into the data set every fold reads
    (held once) and a share per fold; a limit with room for 2 folds names folds_per_step=2, one with
    room for all 4 says nothing. Sequentially the advice is fold_threads."""
    data, _, _ = fixed_data(4, batch=4, seed=0)
    folds = tuple(
        plan.FoldSpec(
            i,
            f"s{i}",
            (f"s{i}",),
            np.setdiff1d(np.arange(16), np.arange(4 * i, 4 * i + 4)),
            np.arange(4 * i, 4 * i + 4),
        )
        for i in range(4)
    )
    said = {}
    for sequential in (False, True):
        config = tiny_finetune_config("unused", "unused", **{"finetune.sequential": sequential})
        model = finetune.build_classifier(config)
        variables, _ = finetune.initial_variables(config, model)
        trainer = group_build.build_group(
            plan.Group("group_000", folds, 3), config=config, model=model, variables=variables, data=data
        )
        state = trainer.initial_state()
        batch = {k: v[0] for k, v in trainer.batches.epoch(1).items()}
        step = device_memory.estimate_bytes(trainer.runner.compiled_step(state, batch, trainer.keys))
        shared = device_memory.tree_bytes((trainer.runner.data, trainer.runner.frozen_inputs))
        assert 0 < shared < step
        per_fold = device_memory.fold_memory(step, shared, 1 if sequential else 4)
        assert per_fold == (step - shared) // (1 if sequential else 4)
        room_for = [(shared + n * per_fold + per_fold // 2) / device_memory.GIB for n in range(5)]  # GiB
        if not sequential:
            assert trainer.check_memory(state, room_for[4]) is None
        said[sequential] = trainer.check_memory(state, room_for[1 if sequential else 2])
    assert "4 fold(s) at once" in said[False] and "--config.finetune.folds_per_step=2 " in said[False]
    assert "2 fold(s) at once" in said[True] and "--config.finetune.fold_threads=1 " in said[True]
    assert device_memory.folds_that_fit(10 * device_memory.GIB, 2 * device_memory.GIB, device_memory.GIB) == 8
