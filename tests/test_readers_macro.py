"""DFEW, FERV39K, AFEW and the generic frame/video folders on fixture trees; bad-input messages."""

from __future__ import annotations

import os

import pytest

from ma2mi_jax import configlib
from ma2mi_jax.data.readers import afew, dfew, ferv39k, macro_folders
from ma2mi_jax.data.readers import registry as readers
from ma2mi_jax.data.records import DataError
from tests.helpers import release_layouts as fx

DFEW = configlib.DFEW_CLASSES


def test_dfew_frames_labels_and_short_clips(tmp_path):
    root = fx.build_dfew(
        str(tmp_path), {1: 3, 2: 12, 3: 2, 4: 1}, train={1: 1, 4: 3}, test={2: 7, 3: 9}
    )  # clip 3's label 9 is invalid
    with pytest.raises(
        DataError, match=r"test\(single-labeled\).set_1\.csv, row 3: bad entry video_name='3'"
    ):
        dfew.read(root, class_names=DFEW)
    fx.write_csv(
        os.path.join(root, "EmoLabel_DataSplit", "test(single-labeled)", "set_1.csv"),
        [("video_name", "label"), (2, 7)],
    )
    clips, report = dfew.read(root, class_names=DFEW)
    got = {c.clip_id: c for c in clips}
    assert sorted(got) == ["00001", "00002", "00003"]
    assert (got["00001"].label, got["00001"].emotion) == (0, "happy")
    assert (got["00002"].label, got["00002"].emotion) == (6, "fear")
    assert (got["00003"].label, got["00003"].emotion) == (-1, None)
    c2 = got["00002"]
    assert c2.num_frames == 12 and c2.video_path is None
    assert [os.path.basename(p) for p in c2.frame_paths[8:10]] == ["00002_00009.jpg", "00002_00010.jpg"]
    assert report.dropped == [("00004", "1 frame(s): a training pair needs 2")]
    assert sorted(report.kept) == [("test", "fear"), ("train", "happy"), ("unsplit", "unlabelled")]


def test_dfew_reordered_classes_and_no_split_files(tmp_path):
    root = fx.build_dfew(str(tmp_path), {5: 2}, train={5: 4})
    clips, _ = dfew.read(root, class_names=("angry", "happy"))
    assert (clips[0].emotion, clips[0].label) == ("angry", 0)
    root2 = fx.build_dfew(str(tmp_path / "bare"), {7: 2})
    clips, report = dfew.read(root2)
    assert clips[0].label == -1 and report.kept == [("unsplit", "unlabelled")]


def test_dfew_videos_and_corrupt_video(tmp_path):
    root = fx.build_dfew(str(tmp_path), {}, videos={1: 5, 2: 3}, train={1: 2})
    clips, _ = dfew.read(root, source="video", class_names=DFEW)
    assert [(c.clip_id, c.num_frames, c.label, c.frame_paths) for c in clips] == [
        ("00001", 5, 1, None),
        ("00002", 3, -1, None),
    ]
    assert clips[0].video_path.endswith(os.path.join("clip_224x224_avi", "00001.avi"))
    bad = fx.write_garbage(os.path.join(root, "Clip", "clip_224x224_avi", "00003.avi"))
    with pytest.raises(DataError, match=rf"clip 00003: OpenCV cannot open the video {bad}"):
        dfew.read(root, source="video", class_names=DFEW)
    clips, report = dfew.read(root, source="video", class_names=DFEW, strict=False)
    assert len(clips) == 2 and report.dropped[0][0] == "00003"
    with pytest.raises(
        DataError, match=r"clip_224x224 not found \(data.source='frames'\).*data.source='video'"
    ):
        dfew.read(root, source="frames")
    with pytest.raises(ValueError, match=r"data.source must be 'frames' or 'video'"):
        dfew.read(root, source="mp4")


def test_dfew_empty_clip_and_empty_frame(tmp_path):
    root = fx.build_dfew(str(tmp_path), {1: 3, 2: 3})
    os.makedirs(os.path.join(root, "Clip", "clip_224x224", "00003"))
    with pytest.raises(DataError, match=r"clip 00003: folder .*00003 holds no images.*data\.strict=False"):
        dfew.read(root)
    fx.write_garbage(os.path.join(root, "Clip", "clip_224x224", "00002", "00002_00002.jpg"), b"")
    clips, report = dfew.read(root, strict=False)
    assert [c.clip_id for c in clips] == ["00001"]
    reasons = dict(report.dropped)
    assert "holds no images" in reasons["00003"]
    assert "empty image file(s)" in reasons["00002"] and "00002_00002.jpg" in reasons["00002"]


def test_ferv39k_layout_splits_and_unknown_emotion(tmp_path):
    clips_on_disk = {"Action/Sad/0010": 8, "Action/Happy/0003": 9, "Daily/Sad/0001": 10, "Daily/Fear/0002": 1}
    root = fx.build_ferv39k(
        str(tmp_path), clips_on_disk, train=["Action/Sad/0010", "Daily/Sad/0001"], test=["Action/Happy/0003"]
    )
    clips, report = ferv39k.read(root, class_names=("angry", "disgust", "fear", "happy", "neutral", "sad"))
    got = {c.clip_id: c for c in clips}
    assert sorted(got) == ["Action/Happy/0003", "Action/Sad/0010", "Daily/Sad/0001"]
    assert (got["Action/Sad/0010"].label, got["Action/Sad/0010"].emotion) == (5, "sad")
    assert got["Action/Happy/0003"].label == 3 and got["Daily/Sad/0001"].num_frames == 10
    assert sorted(report.kept) == [("test", "happy"), ("train", "sad"), ("train", "sad")]
    assert report.dropped == [("Daily/Fear/0002", "1 frame(s): a training pair needs 2")]
    fx.write_frames(os.path.join(root, "2_ClipsforFaceCrop", "Daily", "Bored", "0005"), [1, 2], "{n}.jpg")
    with pytest.raises(DataError, match=r"clip Daily/Bored/0005: unknown emotion folder 'Bored'"):
        ferv39k.read(root)
    clips, report = ferv39k.read(root, strict=False)
    assert len(clips) == 3 and ("Daily/Bored/0005" in dict(report.dropped))


def test_ferv39k_bad_setup_line(tmp_path):
    root = fx.build_ferv39k(str(tmp_path), {"Action/Sad/0010": 3})
    with open(os.path.join(root, "4_setups", "All_scenes", "test_All.csv"), "w") as f:
        f.write("Action/Sad/0010 Sad\nAction-Sad-0011 Sad\n")
    with pytest.raises(DataError, match=r"test_All\.csv, line 2: expected 'Scene/Emotion/clip Emotion'"):
        ferv39k.read(root)
    with pytest.raises(DataError, match=r"2_ClipsforFaceCrop not found"):
        ferv39k.read(str(tmp_path / "4_setups"))


def test_afew_videos(tmp_path):
    root = fx.build_afew(
        str(tmp_path),
        {
            "Train_AFEW/Angry/000046280.avi": 4,
            "Train_AFEW/Happy/000147120.avi": 6,
            "Val_AFEW/Sad/000149120.avi": 3,
            "Val_AFEW/Sad/000149121.avi": 1,
        },
    )
    os.makedirs(os.path.join(root, "Train_AFEW", "AlignedFaces_LBPTOP_Points"))  # no videos: ignored
    clips, report = afew.read(root, class_names=afew.EMOTIONS)
    got = {c.clip_id: c for c in clips}
    assert sorted(got) == [
        "Train_AFEW/Angry/000046280",
        "Train_AFEW/Happy/000147120",
        "Val_AFEW/Sad/000149120",
    ]
    assert [(c.num_frames, c.label, c.emotion) for c in clips] == [
        (4, 0, "angry"),
        (6, 3, "happy"),
        (3, 5, "sad"),
    ]
    assert clips[0].frame_paths is None and clips[0].video_path.endswith("000046280.avi")
    assert dict(report.dropped) == {"Val_AFEW/Sad/000149121": "1 frame(s): a training pair needs 2"}
    assert sorted(report.kept) == [("train", "angry"), ("train", "happy"), ("val", "sad")]
    fx.write_video(os.path.join(root, "Val_AFEW", "Bored", "000000001.avi"), 3)
    with pytest.raises(
        DataError, match=r"clip Val_AFEW/Bored/000000001: video .* unknown emotion folder 'Bored'"
    ):
        afew.read(root)
    with pytest.raises(DataError, match=r"neither Train_AFEW/ nor Val_AFEW/ under .*Angry"):
        afew.read(os.path.join(root, "Train_AFEW", "Angry"))


def test_frame_folders_and_video_folder(tmp_path):
    frames_root = str(tmp_path / "frames")
    fx.write_frames(os.path.join(frames_root, "a"), [1, 2, 10], "f{n}.png")
    fx.write_frames(os.path.join(frames_root, "group", "b"), [3, 4], "{n:03d}.jpg")
    fx.write_frames(os.path.join(frames_root, "c"), [7], "{n}.jpg")
    clips, report = macro_folders.read_frame_folders(frames_root)
    assert [(c.clip_id, c.num_frames) for c in clips] == [("a", 3), ("group/b", 2)]
    assert os.path.basename(clips[0].frame_paths[-1]) == "f10.png"
    assert report.dropped == [("c", "1 frame(s): a training pair needs 2")]
    fx.write_garbage(os.path.join(frames_root, "a", "f2.png"), b"")
    with pytest.raises(DataError, match=r"clip a: empty image file\(s\) .*f2\.png"):
        macro_folders.read_frame_folders(frames_root)

    video_root = str(tmp_path / "videos")
    fx.write_video(os.path.join(video_root, "x.avi"), 3)
    fx.write_video(os.path.join(video_root, "sub", "y.avi"), 2)
    clips, _ = macro_folders.read_video_folder(video_root)
    assert [(c.clip_id, c.num_frames) for c in clips] == [("sub/y.avi", 2), ("x.avi", 3)]
    fx.write_garbage(os.path.join(video_root, "z.mp4"))
    with pytest.raises(DataError, match=r"clip z\.mp4: OpenCV cannot open the video .*z\.mp4"):
        macro_folders.read_video_folder(video_root)
    fx.write_garbage(os.path.join(video_root, "empty.mp4"), b"")
    clips, report = macro_folders.read_video_folder(video_root, strict=False)
    assert len(clips) == 2 and {c for c, _ in report.dropped} == {"z.mp4", "empty.mp4"}
    with pytest.raises(DataError, match=r"no usable clips under .*nothing"):
        os.makedirs(tmp_path / "nothing")
        macro_folders.read_video_folder(str(tmp_path / "nothing"))


def test_read_macro_dispatch(tmp_path):
    root = fx.build_dfew(str(tmp_path / "dfew"), {1: 2}, train={1: 3})
    cfg = configlib.pretrain_base().data
    cfg.root = root
    clips, report = readers.read_macro(cfg)
    assert [(c.dataset, c.label) for c in clips] == [("dfew", 2)] and report.dataset == "dfew"
    cfg.name, cfg.root = "frames", os.path.join(root, "Clip", "clip_224x224")
    clips, _ = readers.read_macro(cfg)
    assert [(c.dataset, c.clip_id) for c in clips] == [("frames", "00001")]
    cfg.name = "kinetics"
    with pytest.raises(
        ValueError, match=r"data\.name='kinetics'.*'dfew', 'ferv39k', 'afew', 'frames', 'videos'"
    ):
        readers.read_macro(cfg)
    cfg.name, cfg.root = "afew", str(tmp_path / "absent")
    with pytest.raises(DataError, match=r"absent not found \(config key data\.root\)"):
        readers.read_macro(cfg)
    cfg.root = ""
    with pytest.raises(DataError, match=r"set data\.root"):
        readers.read_macro(cfg)
