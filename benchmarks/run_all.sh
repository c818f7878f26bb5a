#!/usr/bin/env bash
# Run every benchmark at the :tiny size (a few minutes on a CPU), then print the paper-size command
# lines for a GPU. Usage: bash benchmarks/run_all.sh   (from anywhere; STEPS=N to change the timed steps)
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS="${STEPS:-3}"

echo "### pre-training step, :tiny, on-the-fly VAE vs latent cache"
python benchmarks/pretrain_step.py --config configs/synthetic_pretrain.py:tiny --latent_cache \
  --steps "$STEPS" --warmup 1

echo "### fine-tuning fold step, :tiny, 3 folds: input pipeline, step, both"
python benchmarks/finetune_step.py --config configs/synthetic_loso.py:tiny --folds 3 \
  --steps "$STEPS" --warmup 1

cat <<'GPU'
### paper size, on a GPU (no data needed: the batches are random frames of the config's shapes)
# pre-training, DFEW at 224, DiT-B/2, bf16: step, samples/s, MFU; then on-the-fly VAE vs latent cache
python benchmarks/pretrain_step.py --config configs/dfew.py --config.dtype=bfloat16 --steps 20
python benchmarks/pretrain_step.py --config configs/dfew.py --config.dtype=bfloat16 --latent_cache --steps 20
# fine-tuning, CASME II at 224, all 26 LOSO folds vmapped: input pipeline, step, both
python benchmarks/finetune_step.py --config configs/casme2.py --config.dtype=bfloat16 --steps 20
# the same in float32 (the configs' default dtype)
python benchmarks/pretrain_step.py --config configs/dfew.py --steps 20
python benchmarks/finetune_step.py --config configs/casme2.py --steps 20
# (--config.vae.path=/path/to/sd-vae-ft-ema uses the real VAE; a random one of the same shape times the same)
GPU
