"""Pure pre-training functions: the losses (L_rec or cross-entropy, L_pos), the train step, a predictor.

One gradient of the summed loss updates everything; the routing of docs/method.md (L_rec -> action
encoder, fusion, DiT; L_pos -> position encoder) comes from MIACNet's stop_gradient on P, and the
VAE's parameters are a separate argument that is never differentiated.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from ma2mi_jax import losses
from ma2mi_jax.precision import at_least_f32
from ma2mi_jax.train import optim
from ma2mi_jax.train.pretrain.state import Models, PyTree, TrainState

Batch = dict[str, jax.Array]
# (params, batch_stats, vae_params, batch, rng) -> (total, (terms, new_batch_stats))
LossFn = Callable[[PyTree, PyTree, PyTree, Batch, jax.Array], tuple[jax.Array, tuple[dict, PyTree]]]


def position_loss_on(config: ml_collections.ConfigDict) -> bool:
    """True when L_pos is computed (enabled and a position branch exists)."""
    return bool(config.position_loss.enabled) and config.model.fusion != "none"


def to_unit_range(frames: jax.Array) -> jax.Array:
    """uint8 [0,255] frames -> float32 in [-1, 1] (the pixel-space DiT's input and target)."""
    return frames.astype(jnp.float32) / 127.5 - 1.0


def from_unit_range(x: jax.Array) -> jax.Array:
    """float in [-1, 1] -> uint8 [0,255] (clipped)."""
    return jnp.clip(jnp.round((x.astype(jnp.float32) + 1.0) * 127.5), 0, 255).astype(jnp.uint8)


def target_frames(models: Models, batch: Batch, out: dict) -> tuple[jax.Array, jax.Array]:
    """The frames (x_t, x_{t+k}) [B,H,W,3] in [0,255] the DiT reads and predicts: the batch's, or
    with model.register_target the pair MIACNet registered (its output `out`)."""
    if models.register_target:
        return out["registered"]
    return batch["frame0"], batch["frame1"]


def targets(
    models: Models, vae: Any, vae_params: PyTree, batch: Batch, out: dict
) -> tuple[jax.Array, jax.Array]:
    """(DiT input from x_t, target from x_{t+k}): VAE latents [B,h,w,4] (cached or encoded) or pixels.

    `out` is MIACNet's output for the batch (it holds the registered pair with model.register_target).
    """
    frame0, frame1 = target_frames(models, batch, out)
    if vae is None:  # pixel space (MA2MI-dagger)
        return to_unit_range(frame0), to_unit_range(frame1)
    if "latent0" in batch:  # never with model.register_target (validate.py)
        z0, z1 = batch["latent0"], batch["latent1"]
    else:
        z0, z1 = vae.encode(vae_params, frame0), vae.encode(vae_params, frame1)
    return jax.lax.stop_gradient(at_least_f32(z0)), jax.lax.stop_gradient(at_least_f32(z1))


def make_loss_fn(models: Models, config: ml_collections.ConfigDict, vae: Any = None) -> LossFn:
    """The summed pre-training loss and its terms ("rec" or "ce"/"acc", "pos", "dis", "con", "equ")."""
    pos_on = position_loss_on(config)
    pos_cfg = config.position_loss

    def loss_fn(params, batch_stats, vae_params, batch, rng):
        frame0, frame1 = batch["frame0"], batch["frame1"]  # uint8 [B,H,W,3]
        terms: dict[str, jax.Array] = {}
        if models.supervised:
            module = models.classifier
            variables = {"params": params, "batch_stats": batch_stats}
            logits, updated = module.apply(variables, frame0, frame1, train=True, mutable=["batch_stats"])
            terms["ce"] = losses.cross_entropy(logits, batch["label"])
            terms["acc"] = jnp.mean((jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32))
            main = terms["ce"]
            new_stats = dict(updated["batch_stats"])
            P = None
            map_method = lambda m, x, train: m.miacnet.position_map(x, train)
        else:
            module = models.miacnet
            variables = {"params": params["miacnet"], "batch_stats": batch_stats["miacnet"]}
            out, updated = module.apply(variables, frame0, frame1, train=True, mutable=["batch_stats"])
            z0, z1 = targets(models, vae, vae_params, batch, out)  # [B,h,w,ch] each
            pred = models.dit.apply({"params": params["dit"]}, z0, out["c"], out["map"])  # [B,h,w,ch]
            terms["rec"] = losses.l1_loss(pred, z1)
            main = terms["rec"]
            new_stats = {"miacnet": updated["batch_stats"]}
            P = out["position"]  # [B,h,w,C], carries gradients to the position encoder only
            map_method = "position_map"
        total = main
        if pos_on:

            def position_map_fn(x):  # frames [B,H,W,3] -> P [B,h,w,C]; running stats left alone
                p, _ = module.apply(variables, x, True, method=map_method, mutable=["batch_stats"])
                return p

            if P is None:
                P = position_map_fn(frame0)
            l_pos, parts = losses.position_loss(position_map_fn, frame0, P, rng, pos_cfg)
            terms.update(pos=l_pos, **{k: parts[k] for k in ("dis", "con", "equ")})
            total = total + l_pos
        return total, (terms, new_stats)

    return loss_fn


def make_train_step(
    models: Models,
    config: ml_collections.ConfigDict,
    tx: optax.GradientTransformation,
    total_steps: int,
    vae: Any = None,
) -> Callable[[TrainState, PyTree, Batch], tuple[TrainState, dict[str, jax.Array]]]:
    """(state, vae_params, batch) -> (new state, scalar metrics); pure, jit it with the state donated."""
    loss_fn = make_loss_fn(models, config, vae)
    schedule = optim.learning_rate_schedule(config.train, total_steps)
    step_key = step_root_key(config.seed)

    def train_step(state: TrainState, vae_params: PyTree, batch: Batch):
        rng = jax.random.fold_in(step_key, state.step)
        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        (loss, (terms, new_stats)), grads = grad_fn(
            state.params, state.batch_stats, jax.lax.stop_gradient(vae_params), batch, rng
        )
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, **terms, "grad_norm": optax.global_norm(grads), "lr": schedule(state.step)}
        new_state = TrainState(step=state.step + 1, params=params, batch_stats=new_stats, opt_state=opt_state)
        return new_state, metrics

    return train_step


def make_predict_fn(
    models: Models, vae: Any = None
) -> Callable[[PyTree, PyTree, PyTree, Batch], dict[str, jax.Array]]:
    """(params, batch_stats, vae_params, batch) -> {"prediction": x_{t+k} predicted, uint8 [B,H,W,3]}.

    In latent space also "vae_reconstruction": the VAE's decode of the true z_{t+k}, the best the
    prediction can look (with a randomly initialised VAE, noise like the prediction).
    """

    def predict(params, batch_stats, vae_params, batch):
        variables = {"params": params["miacnet"], "batch_stats": batch_stats["miacnet"]}
        out = models.miacnet.apply(variables, batch["frame0"], batch["frame1"], train=False)
        z0, z1 = targets(models, vae, vae_params, batch, out)
        pred = models.dit.apply({"params": params["dit"]}, z0, out["c"], out["map"])  # [B,h,w,ch]
        pred = pred.astype(jnp.float32)
        if vae is None:
            return {"prediction": from_unit_range(pred)}
        return {"prediction": vae.decode(vae_params, pred), "vae_reconstruction": vae.decode(vae_params, z1)}

    return predict


def step_root_key(seed: int) -> jax.Array:
    """Root of the per-step random stream (`fold_in(step)` gives each step its key)."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), 1)


def init_key(seed: int) -> jax.Array:
    """Key for parameter initialisation, independent of the per-step stream."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), 0)
