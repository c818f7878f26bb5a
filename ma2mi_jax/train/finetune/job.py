"""`run_cross_validation`: read -> plan -> initialise -> train every group -> pooled results."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from ma2mi_jax import checkpoints, files
from ma2mi_jax.evaluation import report
from ma2mi_jax.models import miacnet
from ma2mi_jax.train import mesh as mesh_lib
from ma2mi_jax.train import observe, preemption, workdir_lock
from ma2mi_jax.train.finetune import plan, retrain, workdir_files
from ma2mi_jax.train.finetune.aux_rec import AuxReconstruction, aux_reconstruction
from ma2mi_jax.train.finetune.checks import check_before_reading
from ma2mi_jax.train.finetune.fold_execution import folds_per_group
from ma2mi_jax.train.finetune.fold_step import fold_data
from ma2mi_jax.train.finetune.group_build import BatchSource, build_group, fold_batches
from ma2mi_jax.train.finetune.group_loop import train_group
from ma2mi_jax.train.finetune.inputs import read_data
from ma2mi_jax.train.finetune.results import TRANSFER_KEY, assemble_results, transfer_lines
from ma2mi_jax.train.finetune.starting_point import batchnorm_line, build_classifier, initial_variables

log = logging.getLogger(__name__)


def run_cross_validation(
    config: ml_collections.ConfigDict, workdir: str | Path, *, batch_source: BatchSource = fold_batches
) -> dict:
    """Fine-tune and evaluate every fold of the protocol; write and return the results.

    The workdir, config and `config.init` are checked before the data set is read, and the
    initial weights loaded before anything is written. `batch_source` makes each group's
    training batch streams (tests pass one that observes or stops the run).
    """
    mesh_lib.maybe_initialize_distributed()
    check_before_reading(config, workdir)
    with preemption.watching(), workdir_lock.held(str(workdir)):
        return _cross_validate(config, Path(workdir), batch_source)


def _cross_validate(config: ml_collections.ConfigDict, workdir: Path, batch_source: BatchSource) -> dict:
    """Read, plan, initialise, train every group and write the results in `workdir` (held by this run)."""
    if jax.process_index() == 0 and workdir.is_dir():
        files.remove_leftovers(workdir)  # of a run killed while writing
    samples, pairs = read_data(config)
    specs = plan.hold_out_validation(
        plan.fold_specs_from_protocol(config, samples),
        samples,
        int(config.finetune.validation_subjects),
        int(config.seed),
    )
    final = plan.final_fold(len(specs), len(samples)) if config.finetune.final_model else None
    groups = plan.make_groups(specs, folds_per_group(config.finetune), int(config.train.batch_size), final)
    model = build_classifier(config)
    variables, init_line = initial_variables(config, model)
    aux = aux_reconstruction(config)
    if aux is not None:
        init_line += f"; {aux.source}"
    workdir.mkdir(parents=True, exist_ok=True)
    plan.check_or_write_plan(workdir, plan.plan_dict(config, groups, samples))
    checkpoints.save_config(workdir, config)
    log.info("init: %s", init_line)
    log.info("BatchNorm: %s", batchnorm_line(config))
    data = fold_data(
        pairs,
        np.asarray([s.label for s in samples], np.int32),
        register_iterations=miacnet.register_iterations(config.model),
        batch_size=int(config.train.batch_size),
    )
    scalars = observe.Scalars(str(workdir / "tb"))
    run = _GroupRun(workdir, model, variables, data, aux, batch_source, scalars)
    try:
        histories = run.train([(g, config) for g in groups])
        retrained = {}
        if config.finetune.retrain_selected:
            retrained = run.train(retrain.retrain_plan(config, samples, specs, histories))
    finally:
        scalars.close()
    results, rows = assemble_results(config, samples, specs, histories, init_line, retrained)
    write_outputs(config, workdir, results, rows)
    return results


@dataclasses.dataclass
class _GroupRun:
    """What every group of one run trains with; `train` runs groups in order, skipping finished ones."""

    workdir: Path
    model: Any
    variables: dict
    data: dict
    aux: AuxReconstruction | None
    batch_source: BatchSource
    scalars: observe.Scalars
    shared: dict = dataclasses.field(default_factory=dict)  # optimisers and compiled steps (build_group)

    def train(self, groups: list[tuple[plan.Group, ml_collections.ConfigDict]]) -> dict[str, dict]:
        """Train (or read back) each (group, its config); returns {fold name: its group's history}."""
        histories: dict[str, dict] = {}
        for i, (group, config) in enumerate(groups):
            if i and preemption.requested():  # between groups: the finished ones are on disk
                raise preemption.stop(f"before {group.name}", str(self.workdir))
            done = workdir_files.finished_group_path(self.workdir, group.name)
            if done.exists():
                history = json.loads(done.read_text())
                log.info("%s: already finished (%s)", group.name, done)
            else:
                trainer = build_group(
                    group, config=config, model=self.model, variables=self.variables, data=self.data,
                    aux=self.aux, batch_source=self.batch_source, shared=self.shared,
                )  # fmt: skip
                history = train_group(trainer, config=config, workdir=self.workdir, scalars=self.scalars)
                files.write_json(done, history)
            histories.update({f.name: history for f in group.folds})
        return histories


def write_outputs(config: ml_collections.ConfigDict, workdir: Path, results: dict, rows: list[dict]) -> None:
    """results.json, predictions.csv, confusion_matrix.png and the console table."""
    paths = {
        "results": workdir / report.RESULTS_JSON,
        "predictions": workdir / report.PREDICTIONS_CSV,
        "confusion matrix": workdir / report.CONFUSION_PNG,
    }
    results["files"] = {k: str(v) for k, v in paths.items()}
    if not observe.is_chief():  # on several processes, process 0 writes the files and the table
        return
    report.write_predictions_csv(paths["predictions"], rows, results["class_names"])
    report.plot_confusion_matrix(
        paths["confusion matrix"],
        np.asarray(results["confusion_matrix"]),
        results["class_names"],
        title=f"{config.data.name} {config.protocol.name}, last epoch: acc {100 * results['accuracy']:.2f}%, "
        f"UF1 {results['uf1']:.4f}",
    )
    files.write_json(paths["results"], results)
    print(report.console_table(results, paths), flush=True)
    if TRANSFER_KEY in results:
        print(transfer_lines(results[TRANSFER_KEY]), flush=True)
