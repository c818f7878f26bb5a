"""Grain pipelines: pair sampling, shared augmentation, determinism, resume, folds and evaluation."""

import json

import cv2
import numpy as np
import pytest

from ma2mi_jax.data import micro_pairs
from ma2mi_jax.data import pretrain_pipeline as pipeline
from ma2mi_jax.data.records import DataError, MacroClip, MicroSample, ReadReport

AUG = {"crop_pad": 3, "rotation_deg": 15.0, "flip": True}
STEP = 10  # frame j of a "ramp" clip is the constant grey level STEP * j + clip number


def _ramp_clips(root, lengths) -> list[MacroClip]:
    """Clips whose frames are flat grey levels that encode (clip, frame); flat stays flat under any warp."""
    clips = []
    for c, n in enumerate(lengths):
        paths = []
        for j in range(n):
            p = root / f"r{c}_{j}.png"
            cv2.imwrite(str(p), np.full((20, 26, 3), STEP * j + c, np.uint8))
            paths.append(str(p))
        clips.append(MacroClip("frames", f"ramp{c}", tuple(paths), None, n, label=c))
    return clips


def _textured_clips(root, count, n=4) -> list[MacroClip]:
    """Clips whose frames are all the same noise picture (different per clip)."""
    clips = []
    for c in range(count):
        img = np.random.default_rng(c).integers(0, 256, (16, 16, 3), dtype=np.uint8)
        p = root / f"t{c}.png"
        cv2.imwrite(str(p), img)
        clips.append(MacroClip("frames", f"tex{c}", (str(p),) * n, None, n, label=c % 3))
    return clips


def _take(it, n):
    return [next(it) for _ in range(n)]


def _assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])


def test_pretrain_batch_layout_and_k_in_range(tmp_path):
    lengths = [2, 3, 5, 9, 9, 6]
    clips = _ramp_clips(tmp_path, lengths)
    it = pipeline.pretrain_iterator(clips, image_size=16, k_min=2, k_max=4, batch_size=3, seed=0, augment=AUG)
    ks = []
    for batch in _take(it, 12):
        assert batch["frame0"].shape == (3, 16, 16, 3) and batch["frame0"].dtype == np.uint8
        assert batch["k"].dtype == np.int32 and batch["label"].dtype == np.int32
        for b in range(3):
            c = int(batch["label"][b])
            v0, v1 = int(batch["frame0"][b, 0, 0, 0]), int(batch["frame1"][b, 0, 0, 0])
            assert (batch["frame0"][b] == v0).all() and (batch["frame1"][b] == v1).all()
            t, t1 = (v0 - c) // STEP, (v1 - c) // STEP
            k = int(batch["k"][b])
            assert t1 - t == k  # the frames really are k apart
            n = lengths[c]
            assert 1 <= k <= min(4, n - 1) and k >= min(2, n - 1) and t1 < n
            ks.append((n, k))
    assert {k for n, k in ks if n == 2} <= {1} and {k for n, k in ks if n == 9} == {2, 3, 4}
    assert pipeline.steps_per_epoch(len(clips), 3) == 2


def test_both_frames_get_the_same_augmentation(tmp_path):
    clips = _textured_clips(tmp_path, 4)
    raws = [cv2.cvtColor(cv2.imread(c.frame_paths[0]), cv2.COLOR_BGR2RGB) for c in clips]
    it = pipeline.pretrain_iterator(clips, image_size=16, k_min=1, k_max=3, batch_size=4, seed=1, augment=AUG)
    moved = 0
    for batch in _take(it, 4):
        # All frames of a textured clip are one picture: equal outputs <=> one shared transform.
        np.testing.assert_array_equal(batch["frame0"], batch["frame1"])
        moved += sum(not any(np.array_equal(f, raw) for raw in raws) for f in batch["frame0"])
    assert moved >= 12  # the augmentation really moved pixels (it is not the identity)


def test_pretrain_is_seeded_reshuffled_and_resumable(tmp_path):
    clips = _ramp_clips(tmp_path, [5, 6, 7, 8, 9])
    kw = dict(image_size=8, k_min=1, k_max=3, batch_size=2, seed=3, augment=AUG)
    ref = _take(pipeline.pretrain_iterator(clips, **kw), 8)  # 2 steps per epoch: 4 epochs
    _assert_same(ref, _take(pipeline.pretrain_iterator(clips, **kw), 8))
    other = _take(pipeline.pretrain_iterator(clips, **{**kw, "seed": 4}), 8)
    assert any(not np.array_equal(a["frame0"], b["frame0"]) for a, b in zip(ref, other, strict=True))
    # Each epoch uses 4 distinct clips, and the epochs are ordered differently.
    epochs = [np.concatenate([ref[2 * e]["label"], ref[2 * e + 1]["label"]]) for e in range(4)]
    assert all(len(set(e.tolist())) == 4 for e in epochs)
    assert len({tuple(e.tolist()) for e in epochs}) > 1
    # Resume from a JSON round trip of the state, across an epoch boundary.
    it = pipeline.pretrain_iterator(clips, **kw)
    _take(it, 3)
    state = json.loads(json.dumps(it.get_state()))
    fresh = pipeline.pretrain_iterator(clips, **kw)
    fresh.set_state(state)
    _assert_same(ref[3:], _take(fresh, 5))


def test_processes_read_disjoint_rows_of_the_one_process_batches(tmp_path):
    # 9 clips, global batch 4: 2 batches per epoch (one clip dropped), 3 epochs.
    clips = _ramp_clips(tmp_path, [5, 6, 7, 8, 9, 5, 6, 7, 8])
    kw = dict(image_size=8, k_min=1, k_max=3, batch_size=4, seed=3, augment=AUG)
    whole = _take(pipeline.pretrain_iterator(clips, **kw), 6)
    shard = lambda p: pipeline.pretrain_iterator(clips, process_index=p, process_count=2, **kw)
    parts = [_take(shard(p), 6) for p in (0, 1)]
    for step, batch in enumerate(whole):
        rows = [part[step] for part in parts]
        assert all(r["frame0"].shape[0] == 2 for r in rows)
        for key in batch:  # process 0 has rows 0-1 of every global batch, process 1 rows 2-3
            np.testing.assert_array_equal(np.concatenate([r[key] for r in rows]), batch[key])
    epochs = [np.concatenate([whole[2 * e]["label"], whole[2 * e + 1]["label"]]) for e in range(3)]
    assert all(len(set(e.tolist())) == 8 for e in epochs)  # no clip twice in an epoch
    assert len({tuple(e.tolist()) for e in epochs}) > 1  # reshuffled every epoch
    with pytest.raises(ValueError, match="not divisible by 3 processes"):
        pipeline.pretrain_iterator(clips, process_index=0, process_count=3, **kw)


def test_worker_processes_give_the_same_stream(tmp_path):
    clips = _ramp_clips(tmp_path, [4, 5, 6, 7])
    kw = dict(image_size=8, k_min=1, k_max=3, batch_size=2, seed=5, augment=AUG)
    ref = _take(pipeline.pretrain_iterator(clips, **kw), 4)
    it = pipeline.pretrain_iterator(clips, workers=2, **kw)
    try:
        _assert_same(ref, _take(it, 4))
    finally:
        it.close()


def test_bad_clips_strict_and_lenient(tmp_path):
    clips = _ramp_clips(tmp_path, [4, 4, 4])
    (tmp_path / "r1_2.png").write_bytes(b"garbage")  # corrupt frame inside clip 1
    short = MacroClip("frames", "one-frame", clips[0].frame_paths[:1], None, 1)
    with pytest.raises(DataError, match=r"one-frame.*at least 2.*data\.strict=False"):
        pipeline.pretrain_iterator(
            [*clips, short], image_size=8, k_min=1, k_max=3, batch_size=2, seed=0, augment=AUG
        )
    kw = dict(image_size=8, k_min=1, k_max=3, batch_size=3, seed=0, augment=AUG)
    with pytest.raises(DataError, match=r"r1_2\.png"):
        _take(pipeline.pretrain_iterator(clips, **kw), 8)
    report = ReadReport("frames")
    batches = _take(pipeline.pretrain_iterator([*clips, short], strict=False, report=report, **kw), 8)
    assert [c for c, _ in report.dropped] == ["one-frame"]
    for batch in batches:  # every pair that came out is a real, readable pair
        diff = batch["frame1"].astype(int) - batch["frame0"]
        assert (diff == STEP * batch["k"][:, None, None, None]).all()
        for b in np.flatnonzero(batch["label"] == 1):  # never the corrupt frame 2 of clip 1
            assert STEP * 2 + 1 not in (batch["frame0"][b, 0, 0, 0], batch["frame1"][b, 0, 0, 0])


def test_video_clips_with_face_crop(tmp_path):
    clips = []
    for c in range(2):
        path = str(tmp_path / f"v{c}.avi")
        writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 10, (40, 30))
        for j in range(6):
            writer.write(np.full((30, 40, 3), 30 * j + 5 * c, np.uint8))
        writer.release()
        clips.append(MacroClip("videos", f"v{c}", None, path, 6, label=c))
    kw = dict(image_size=8, k_min=1, k_max=3, batch_size=2, seed=0, augment=AUG)
    for crop_dir in (None, str(tmp_path / "faces")):
        for batch in _take(pipeline.pretrain_iterator(clips, face_crop_dir=crop_dir, **kw), 3):
            v0 = batch["frame0"][:, 0, 0, 0].astype(int) - 5 * batch["label"]
            v1 = batch["frame1"][:, 0, 0, 0].astype(int) - 5 * batch["label"]
            np.testing.assert_allclose(v1 - v0, 30 * batch["k"], atol=4)  # JPEG-coded frames k apart
    assert len(list((tmp_path / "faces" / "8").iterdir())) == 2  # one cached folder per clip


def _micro(root, n=10, subjects=5) -> list[MicroSample]:
    samples = []
    for i in range(n):
        onset, apex = root / f"m{i}_1.png", root / f"m{i}_3.png"
        cv2.imwrite(str(onset), np.full((12, 12, 3), i, np.uint8))
        cv2.imwrite(str(apex), np.full((12, 12, 3), 100 + i, np.uint8))
        samples.append(
            MicroSample(
                "synthetic",
                f"s{i}",
                f"sub{i % subjects}",
                (1, 3),
                (str(onset), str(apex)),
                1,
                3,
                3,
                "happiness",
                i % 3,
            )
        )
    return samples


def test_load_micro_pairs_and_bad_samples(tmp_path):
    samples = _micro(tmp_path)
    pairs = micro_pairs.load_micro_pairs(samples, 8)
    assert pairs.shape == (10, 2, 8, 8, 3) and pairs.dtype == np.uint8
    np.testing.assert_array_equal(pairs[:, 0, 0, 0, 0], np.arange(10))
    np.testing.assert_array_equal(pairs[:, 1, 0, 0, 0], 100 + np.arange(10))
    (tmp_path / "m4_3.png").write_bytes(b"broken")
    with pytest.raises(DataError, match=r"sample s4.*m4_3\.png"):
        micro_pairs.load_micro_pairs(samples, 8)
    report = ReadReport("synthetic")
    pairs = micro_pairs.load_micro_pairs(samples, 8, strict=False, report=report)
    assert [c for c, _ in report.dropped] == ["s4"]
    kept, kept_pairs = micro_pairs.drop_bad_pairs(samples, pairs, report)
    assert len(kept) == 9 and "s4" not in [s.clip_id for s in kept]
    np.testing.assert_array_equal(kept_pairs[:, 0, 0, 0, 0], [0, 1, 2, 3, 5, 6, 7, 8, 9])
