"""The README's first command, end to end at :tiny size on a small generated set."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_quickstart_runs_the_whole_chain(tmp_path):
    out = tmp_path / "qs"
    cmd = [
        sys.executable,
        "scripts/quickstart.py",
        "--autoencoder_config=configs/synthetic_autoencoder.py:tiny",
        "--pretrain_config=configs/synthetic_pretrain.py:tiny",
        "--loso_config=configs/synthetic_loso.py:tiny",
        "--loso_config.train.epochs=1",
        "--clips_scale=0.1",
        "--probe_seeds=0,1",
        f"--out={out}",
    ]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    # the closing table names the figures and where every output went
    assert "UF1" in result.stdout and "UAR" in result.stdout
    for part in ("vae", "pretrain", "probe_pretrained", "probe_scratch", "loso", "classifier"):
        assert str(out / part) in result.stdout
    # the new stages: a domain VAE used by pre-training, diagnostics, probes against random inits
    assert (out / "vae" / "diffusion_flax_model.msgpack").is_file()
    pre_config = json.loads((out / "pretrain" / "config.json").read_text())
    assert pre_config["vae"]["path"] == str(out / "vae")
    diag = json.loads((out / "pretrain" / "diagnostics.json").read_text())
    assert {"step", "rec", "copy", "shuffled_c", "static_c", "history"} <= set(diag)
    assert "against a shuffled c" in result.stdout
    probes = {
        p: json.loads((out / f"probe_{p}" / "probe.json").read_text()) for p in ("pretrained", "scratch")
    }
    assert probes["pretrained"]["init"] == str(out / "pretrain") and len(probes["scratch"]["per_seed"]) == 2
    assert "pre-trained encoder   UF1" in result.stdout and "random encoder        UF1" in result.stdout
    results = json.loads((out / "loso" / "results.json").read_text())
    assert 0.0 <= results["accuracy"] <= 1.0
    assert results["config"]["init"] == str(out / "pretrain")
    assert (out / "pretrain" / "checkpoints").is_dir()
    assert (out / "classifier" / "classifier.json").is_file()
    assert (out / "data" / "casme2" / "preview.png").is_file()

    from ma2mi_jax.serving import classifier

    clf = classifier.load_classifier(out / "classifier")
    casme2 = out / "data" / "casme2" / "Cropped"
    clip = next(p for p in sorted(casme2.rglob("*")) if p.is_dir() and any(p.glob("*.jpg")))
    frames = sorted(clip.glob("*.jpg"))
    prediction = clf.predict_pair(str(frames[0]), str(frames[len(frames) // 2]))
    assert prediction["class_name"] in results["class_names"]
