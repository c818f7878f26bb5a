"""Cross-validated fine-tuning of MIACNet on a micro-expression data set, all folds at once.

`run_cross_validation(config, workdir)` (module `job`):
1. reads the data set (printing what was kept, dropped and repaired), decodes every onset/apex pair
   once, and splits the samples into the protocol's folds, LOSO or subject-independent k-fold (`plan`);
2. initialises the classifier from `config.init` (MA2MI pre-training workdir, exported classifier,
   ImageNet ResNet18, or scratch) -- the same starting point for every fold (`starting_point`), except for the
   head with `finetune.head_init="probe"`: each fold's starts at a linear probe of its training
   subjects (`head_init`);
3. trains the folds in groups of `finetune.folds_per_step` (`group_build`, `group_loop`, `fold_execution`,
   `fold_step`): the data set
   stays on the device, each fold's batches (indices and pair transforms, drawn on the host) come
   from its own training subjects (`inputs`), and gathering, warping and the step run in one compiled
   step, vmapped over the folds or one fold at a time (`finetune.sequential`); with
   `finetune.aux_rec_weight > 0` the loss adds L_rec through each fold's copy of the pre-trained DiT
   (`aux_rec`). Switches for fine-tuning across a domain gap, each off by default but `freeze_bn`
   (all off = the paper's plain fine-tuning; docs/decisions.md#fine-tuning-across-a-domain-gap-the-switches):
   - `finetune.bn_reestimate`: each fold's encoders start with BatchNorm statistics re-estimated on
     its own training pairs (unaugmented train-mode passes, labels unused; the probe's procedure,
     `head_init.fold_starts`) instead of the macro set's;
   - `finetune.encoder_lr_scale`, `finetune.encoder_warmup_epochs`: both encoders' AdamW updates
     (weight decay included) times the scale, ramped up linearly over the warm-up epochs once they
     train; the head at the full rate (`optim.make_optimizer(held_scale=...)`);
   - `finetune.l2sp_weight`: L2-SP, the loss adds (weight / 2) * ||w - w_start||^2 over both
     encoders' parameters (Li et al., ICML 2018; `fold_step.l2sp_penalty`);
   - `finetune.freeze_bn` (on by default): the encoders' BatchNorm in inference mode when they start
     from a pre-training (running statistics kept, scale and bias trained; a random start trains
     its BatchNorm; `fold_step.inference_bn_modules`);
   - `finetune.head_only_epochs` and `finetune.head_init="probe"` (LP-FT), as above;
4. evaluates every held-out sample with its own fold's model every `train.log_every` epochs and at
   the last epoch, and reports the pooled metrics of the LAST epoch (`results`: results.json,
   predictions.csv, confusion_matrix.png, console table). A best-epoch-per-fold figure, selected on
   the test subject, is printed only under a label saying so. The transfer table
   (`results.transfer_table`, results.json's "transfer_per_epoch", printed after the results) pools
   per evaluated epoch and at the start (epoch 0): held-out accuracy and UF1, each encoder's mean
   relative distance ||w - w0|| / ||w0|| from the start and, every `finetune.probe_every` epochs,
   the held-out UF1 of a linear probe of each fold's current encoder (`group_build`).

Checkpoints (`workdir_files`: workdir/checkpoints/<group>/<epoch>) hold the stacked fold state and the
evaluation history; a killed run continues from the latest one and ends with the same results.json
as an unbroken run. Finished groups leave workdir/folds/<group>.json.
"""

from ma2mi_jax.train.finetune.group_build import build_group, fold_batches
from ma2mi_jax.train.finetune.inputs import FoldBatches, read_data
from ma2mi_jax.train.finetune.job import run_cross_validation
from ma2mi_jax.train.finetune.plan import fold_specs_from_protocol, make_groups
from ma2mi_jax.train.finetune.results import BEST_EPOCH_LABEL
from ma2mi_jax.train.finetune.starting_point import build_classifier, initial_variables
from ma2mi_jax.train.finetune.workdir_files import (
    FINAL_FOLD,
    export_from_workdir,
    load_fold_variables,
    trained_fold_names,
)

__all__ = [
    "BEST_EPOCH_LABEL",
    "FINAL_FOLD",
    "FoldBatches",
    "build_classifier",
    "build_group",
    "export_from_workdir",
    "fold_batches",
    "fold_specs_from_protocol",
    "initial_variables",
    "load_fold_variables",
    "make_groups",
    "read_data",
    "run_cross_validation",
    "trained_fold_names",
]
