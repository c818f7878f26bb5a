"""CASME II, SAMM and MMEW readers on fixture trees in each release layout, defects and bad input."""

from __future__ import annotations

import os
import shutil

import pytest

from ma2mi_jax import configlib
from ma2mi_jax.data.readers import casme2, mmew, samm
from ma2mi_jax.data.readers import registry as readers
from ma2mi_jax.data.records import DataError
from tests.helpers import release_layouts as fx

C = fx.MicroClip
CASME2 = configlib.CASME2_CLASSES
SAMM = configlib.SAMM_CLASSES
MMEW = configlib.MMEW_CLASSES


def casme2_clips() -> list[fx.MicroClip]:
    """Every CASME II quirk and defect in one small sheet (subject as 1 and as "01")."""
    return [
        C(1, "EP02_01f", 8, 10, 12, "happiness"),
        C("01", "EP03_02", 95, 99, 104, "disgust", aus="4+7"),  # frames 95..104 cross a padding width
        C(2, "EP01_01", 5, 6, 8, "repression"),
        C("02", "EP04_02", 3, 4, 6, "Surprise "),
        C(3, "EP05_01", 1, 2, 3, "fear"),
        C(3, "EP06_01", 1, 2, 3, "sadness"),
        C(4, "EP12_01f", 30, "/", 36, "others"),  # apex "/"
        C(16, "EP01_08", 90, 93, 110, "others", disk=(90, 96)),  # annotated beyond the folder
        C(5, "EP07_01", 10, 16, 14, "happiness", disk=(8, 18)),  # apex after offset
        C(5, "EP08_01", 10, 4, 14, "disgust", disk=(2, 14)),  # apex before onset
        C(6, "EP09_01", 10, 12, 16, "happiness", disk=(12, 16)),  # onset frame missing on disk
    ]


def by_id(samples):
    return {s.clip_id: s for s in samples}


def test_casme2_layout_labels_and_defect_rules(tmp_path):
    root = fx.build_casme2(str(tmp_path / "CASME2"), casme2_clips())
    samples, report = casme2.read(root, class_names=CASME2)
    got = by_id(samples)
    assert sorted(got) == ["sub01/EP02_01f", "sub01/EP03_02", "sub02/EP01_01", "sub02/EP04_02",
                           "sub04/EP12_01f", "sub05/EP07_01", "sub05/EP08_01", "sub16/EP01_08"]  # fmt: skip
    assert [(s.subject, s.emotion, s.label) for s in samples[:4]] == [
        ("sub01", "happiness", 0),
        ("sub01", "disgust", 1),
        ("sub02", "repression", 2),
        ("sub02", "surprise", 3),
    ]
    s = got["sub01/EP03_02"]
    assert s.frame_numbers == tuple(range(95, 105))
    assert os.path.basename(s.onset_path) == "reg_img95.jpg"
    assert os.path.basename(s.apex_path) == "reg_img99.jpg"
    # Apex "/" -> the middle frame of onset..offset.
    assert (got["sub04/EP12_01f"].apex, got["sub04/EP12_01f"].label) == (33, 4)
    # Annotated to 110, frames end at 96 -> offset clamped, apex kept.
    assert (got["sub16/EP01_08"].onset, got["sub16/EP01_08"].apex, got["sub16/EP01_08"].offset) == (
        90,
        93,
        96,
    )
    # Apex outside onset..offset -> kept, range widened.
    assert (got["sub05/EP07_01"].onset, got["sub05/EP07_01"].apex, got["sub05/EP07_01"].offset) == (
        10,
        16,
        16,
    )
    assert (got["sub05/EP08_01"].onset, got["sub05/EP08_01"].apex, got["sub05/EP08_01"].offset) == (2, 4, 14)

    dropped = dict(report.dropped)
    assert set(dropped) == {"sub03/EP05_01", "sub03/EP06_01", "sub06/EP09_01"}
    assert "not in the 5-class protocol" in dropped["sub03/EP05_01"]
    assert "onset frame 10 not on disk" in dropped["sub06/EP09_01"]
    repaired = dict(report.repaired)
    assert set(repaired) == {"sub04/EP12_01f", "sub16/EP01_08", "sub05/EP07_01", "sub05/EP08_01"}
    assert repaired["sub04/EP12_01f"] == "apex cell '/' is not a frame number: set to the middle frame 33"
    assert "beyond the last frame on disk 96" in repaired["sub16/EP01_08"]
    summary = report.summary()
    assert "kept 8 samples, dropped 3, repaired 4" in summary
    assert "others 2" in summary and "sub05 2" in summary
    assert "dropped  sub03/EP06_01: emotion 'sadness' not in the 5-class protocol" in summary


@pytest.mark.parametrize(
    ("frames_dir", "fmt"),
    [("Cropped/Cropped", "reg_img{n}.jpg"), ("CASME2_RAW_selected", "img{n}.jpg")],
)
def test_casme2_nested_cropped_and_raw_frames(tmp_path, frames_dir, fmt):
    root = fx.build_casme2(str(tmp_path), casme2_clips()[:4], frames_dir=frames_dir, fmt=fmt)
    samples, report = casme2.read(root, class_names=CASME2)
    assert len(samples) == 4 and not report.dropped
    assert os.path.basename(samples[0].apex_path) == fmt.format(n=10)


def test_casme2_csv_with_unnamed_columns_and_renamed_sheet(tmp_path):
    root = fx.build_casme2(str(tmp_path), casme2_clips()[:3], sheet=None)
    rows = fx.casme2_rows(casme2_clips()[:3])
    rows[0] = tuple(h or f"Unnamed: {i}" for i, h in enumerate(rows[0]))
    fx.write_csv(os.path.join(root, "CASME2_label_Ver_2.csv"), rows)
    samples, _ = casme2.read(root, class_names=CASME2)
    assert [s.clip_id for s in samples] == ["sub01/EP02_01f", "sub01/EP03_02", "sub02/EP01_01"]


def test_casme2_xls_sheet_message(tmp_path):
    root = fx.build_casme2(str(tmp_path), casme2_clips()[:1], sheet=None)
    fx.write_garbage(os.path.join(root, "CASME2-coding-20140508.xls"))
    with pytest.raises(DataError, match=r"CASME2-coding-20140508\.xls.*xlrd.*save it as \.xlsx"):
        casme2.read(root, class_names=CASME2)


def test_casme2_unknown_emotion_strict_and_lenient(tmp_path):
    clips = [*casme2_clips()[:2], C(2, "EP01_01", 5, 6, 8, "contentment")]
    root = fx.build_casme2(str(tmp_path), clips)
    expected = (
        r"CASME2-coding-20190701\.xlsx, sheet 'Sheet1', row 4 \(sub02/EP01_01\): "
        r"unknown emotion 'contentment'.*data\.strict=False"
    )
    with pytest.raises(DataError, match=expected):
        casme2.read(root, class_names=CASME2)
    samples, report = casme2.read(root, class_names=CASME2, strict=False)
    assert len(samples) == 2
    ((clip, reason),) = report.dropped
    assert clip == "sub02/EP01_01" and "unknown emotion 'contentment'" in reason and "row 4" in reason


def test_casme2_corrupt_apex_image(tmp_path):
    root = fx.build_casme2(str(tmp_path), casme2_clips()[:2])
    bad = fx.write_garbage(os.path.join(root, "Cropped", "sub01", "EP02_01f", "reg_img10.jpg"))
    with pytest.raises(DataError, match=rf"sub01/EP02_01f.*apex image {bad}: OpenCV cannot decode"):
        casme2.read(root, class_names=CASME2)
    samples, report = casme2.read(root, class_names=CASME2, strict=False)
    assert [s.clip_id for s in samples] == ["sub01/EP03_02"]
    assert report.dropped[0][0] == "sub01/EP02_01f"


def test_casme2_empty_frame_missing_and_empty_clip(tmp_path):
    clips = casme2_clips()[:3]
    clips[2] = C(2, "EP01_01", 5, 6, 8, "repression", no_folder=True)
    root = fx.build_casme2(str(tmp_path), clips)
    with pytest.raises(DataError, match=r"row 4 \(sub02/EP01_01\): clip folder .*sub02/EP01_01 not found"):
        casme2.read(root, class_names=CASME2)
    os.makedirs(os.path.join(root, "Cropped", "sub02", "EP01_01"))
    with pytest.raises(DataError, match=r"clip folder .*sub02/EP01_01 holds no images"):
        casme2.read(root, class_names=CASME2)
    shutil.rmtree(os.path.join(root, "Cropped", "sub02"))
    fx.write_garbage(os.path.join(root, "Cropped", "sub01", "EP03_02", "reg_img101.jpg"), b"")
    with pytest.raises(DataError, match=r"sub01/EP03_02.*empty image file\(s\) .*reg_img101\.jpg"):
        casme2.read(root, class_names=CASME2)
    samples, report = casme2.read(root, class_names=CASME2, strict=False)
    assert [s.clip_id for s in samples] == ["sub01/EP02_01f"]
    assert {c for c, _ in report.dropped} == {"sub01/EP03_02", "sub02/EP01_01"}


def test_casme2_bad_sheets_and_roots(tmp_path):
    with pytest.raises(DataError, match=r"casme2 root not found: .*nowhere.*data\.root"):
        casme2.read(str(tmp_path / "nowhere"), class_names=CASME2)
    root = fx.build_casme2(str(tmp_path / "a"), casme2_clips()[:1], sheet=None)
    with pytest.raises(DataError, match=r"no annotation sheet in .*a \(looked for CASME2-coding\*"):
        casme2.read(root, class_names=CASME2)
    fx.write_xlsx(
        os.path.join(root, "CASME2-coding-x.xlsx"), [("Subject", "Clip", "Onset"), (1, "EP02_01f", 8)]
    )
    with pytest.raises(DataError, match=r"CASME2-coding-x\.xlsx: no row with the expected headers"):
        casme2.read(root, class_names=CASME2)
    with pytest.raises(DataError, match=r"casme2: annotation sheet .*mine\.xlsx not found"):
        casme2.read(root, sheet="mine.xlsx", class_names=CASME2)
    fx.write_xlsx(os.path.join(root, "labels", "mine.xlsx"), fx.casme2_rows(casme2_clips()[:1]))
    samples, _ = casme2.read(root, sheet="labels/mine.xlsx", class_names=CASME2)
    assert [s.clip_id for s in samples] == ["sub01/EP02_01f"]
    os.rename(os.path.join(root, "Cropped"), os.path.join(root, "Elsewhere"))
    with pytest.raises(DataError, match=r"casme2: no frame folder in .*Cropped"):
        casme2.read(root, sheet="labels/mine.xlsx", class_names=CASME2)


def test_casme2_bad_frame_cells(tmp_path):
    clips = [*casme2_clips()[:1], C(2, "EP01_01", "x5", 6, 8, "repression", disk=(5, 8)),
             C(2, "EP01_02", 9, 6, 8, "repression", disk=(5, 9))]  # fmt: skip
    root = fx.build_casme2(str(tmp_path), clips)
    with pytest.raises(DataError, match=r"row 3 \(sub02/EP01_01\): onset cell 'x5' is not a frame number"):
        casme2.read(root, class_names=CASME2)
    _, report = casme2.read(root, class_names=CASME2, strict=False)
    reasons = dict(report.dropped)
    assert "onset 9 is after offset 8" in reasons["sub02/EP01_02"]


def samm_clips() -> list[fx.MicroClip]:
    """SAMM quirks: Other/Others, case, "or" in AU cells, apex outside onset..offset."""
    return [
        C(6, "006_1_2", 5562, 5566, 5570, "Happiness"),
        C(6, "006_1_3", 20, 22, 24, "Other", aus="R12 or 14"),
        C(9, "009_3_1", 3577, 3580, 3582, "anger"),
        C(9, "009_3_2", 100, 104, 107, "Others"),
        C(28, "028_4_1", 40, 49, 45, "Contempt", disk=(38, 52)),  # apex after offset
        C(32, "032_3_1", 10, 12, 14, "Surprise"),
        C(32, "032_3_2", 10, 12, 14, "Disgust"),
    ]


@pytest.mark.parametrize("description_rows", [13, 0])
def test_samm_header_row_padding_and_defects(tmp_path, description_rows):
    root = fx.build_samm(str(tmp_path), samm_clips(), description_rows=description_rows,
                         pads={"009_3_1": 4, "009_3_2": 1})  # fmt: skip
    samples, report = samm.read(root, class_names=SAMM, label_map={"Other": "others"})
    got = by_id(samples)
    assert sorted(got) == [
        "006/006_1_2",
        "006/006_1_3",
        "009/009_3_1",
        "009/009_3_2",
        "028/028_4_1",
        "032/032_3_1",
    ]
    assert [got[k].label for k in sorted(got)] == [0, 4, 1, 4, 2, 3]
    assert {s.subject for s in samples} == {"006", "009", "028", "032"}
    assert os.path.basename(got["009/009_3_1"].apex_path) == "009_3580.jpg"
    assert os.path.basename(got["009/009_3_2"].onset_path) == "009_100.jpg"
    assert os.path.basename(got["006/006_1_2"].onset_path) == "006_05562.jpg"
    s = got["028/028_4_1"]
    assert (s.onset, s.apex, s.offset) == (40, 49, 49)
    assert dict(report.repaired) == {"028/028_4_1": "apex 49 after offset 45: offset widened to 49"}
    assert dict(report.dropped) == {"032/032_3_2": "emotion 'disgust' not in the 5-class protocol"}


def test_samm_other_without_label_map_is_dropped_not_error(tmp_path):
    root = fx.build_samm(str(tmp_path), samm_clips())
    samples, report = samm.read(root, class_names=SAMM)
    assert "006/006_1_3" not in by_id(samples)  # "other" is not a class name without the map
    assert dict(report.dropped)["006/006_1_3"] == "emotion 'other' not in the 5-class protocol"
    assert by_id(samples)["009/009_3_2"].emotion == "others"


def test_samm_unknown_emotion_names_row(tmp_path):
    clips = [*samm_clips()[:2], C(9, "009_3_1", 3577, 3580, 3582, "Angst")]
    root = fx.build_samm(str(tmp_path), clips)
    expected = r"SAMM_Micro_FACS_Codes_v2\.xlsx, sheet 'Sheet1', row 17 \(009/009_3_1\): unknown emotion"
    with pytest.raises(DataError, match=expected):
        samm.read(root, class_names=SAMM, label_map={"other": "others"})


def test_samm_via_config_dispatch(tmp_path):
    root = fx.build_samm(str(tmp_path), samm_clips())
    cfg = configlib.finetune_base().data
    cfg.name, cfg.root, cfg.class_names, cfg.label_map = "samm", root, SAMM, {"other": "others"}
    samples, report = readers.read_micro(cfg)
    assert len(samples) == 6 and report.dataset == "samm"
    cfg.name = "casme3"
    valid = r"\['casme2', 'samm', 'mmew', 'smic', 'megc2019'\]"
    with pytest.raises(ValueError, match=rf"data\.name='casme3'.*{valid}"):
        readers.read_micro(cfg)
    cfg.name, cfg.root = "samm", str(tmp_path / "missing")
    with pytest.raises(DataError, match=r"missing not found \(config key data\.root\)"):
        readers.read_micro(cfg)


def mmew_clips() -> list[fx.MicroClip]:
    return [
        C("S01", "S01_happy_1", 1, 5, 9, "happiness"),
        C("S01", "S01_sur_1", 3, 6, 10, "Surprise"),
        C("S02", "S02_ang_1", 12, 15, 20, "anger"),
        C("S02", "S02_oth_1", 1, 2, 3, "others"),
        C(3, "S03_dis_1", 2, 4, 6, "disgust"),
        C(3, "S03_fear_1", 2, 4, 6, "fear"),
        C(4, "S04_sad_1", 2, 4, 6, "sadness"),
    ]


def test_mmew_layout_labels_and_lookup(tmp_path):
    root = fx.build_mmew(str(tmp_path / "MMEW_Final"), mmew_clips(), folder_emotion={"S02_ang_1": "Anger"})
    samples, report = mmew.read(str(tmp_path), class_names=MMEW)  # the folder above MMEW_Final
    got = by_id(samples)
    assert sorted(got) == sorted(c.filename for c in mmew_clips() if c.emotion != "others")
    assert [(s.subject, s.label) for s in samples] == [
        ("S01", 0),
        ("S01", 1),
        ("S02", 2),
        ("3", 3),
        ("3", 4),
        ("4", 5),
    ]
    assert got["S02_ang_1"].frame_numbers == tuple(range(12, 21))
    assert os.path.basename(got["S02_ang_1"].apex_path) == "15.jpg"
    assert dict(report.dropped) == {"S02_oth_1": "emotion 'others' not in the 6-class protocol"}
    assert root.endswith("MMEW_Final")


def test_mmew_duplicate_filename_and_misfiled_clip(tmp_path):
    clips = [*mmew_clips()[:3], C("S02", "S01_happy_1", 1, 5, 9, "fear", no_folder=True)]
    root = fx.build_mmew(str(tmp_path), clips, folder_emotion={"S01_sur_1": "happiness"})
    fx.write_frames(os.path.join(root, "Micro_Expression", "fear", "S01_happy_1"), range(1, 10), "{n}.jpg")
    samples, _ = mmew.read(root, class_names=MMEW)
    got = by_id(samples)
    assert sorted(got) == ["S01_sur_1", "S02_ang_1", "fear/S01_happy_1", "happiness/S01_happy_1"]
    assert "/happiness/S01_sur_1" in got["S01_sur_1"].apex_path  # found under another emotion folder
    assert "/fear/" in got["fear/S01_happy_1"].apex_path and got["fear/S01_happy_1"].subject == "S02"


def test_mmew_missing_micro_folder(tmp_path):
    with pytest.raises(DataError, match=r"Micro_Expression not found; data\.root must be the MMEW_Final"):
        mmew.read(str(tmp_path), class_names=MMEW)


def test_everything_dropped_is_an_error(tmp_path):
    root = fx.build_mmew(str(tmp_path), [C("S02", "S02_oth_1", 1, 2, 3, "others")])
    with pytest.raises(DataError, match=r"(?s)mmew: no usable samples.*kept 0 samples.*dropped  S02_oth_1"):
        mmew.read(root, class_names=MMEW)


def test_blank_apex_takes_the_present_frame_nearest_the_middle(tmp_path):
    clips = [C("S01", "S01_a", 10, None, 20, "happiness", disk=(10, 20)), C("S02", "S02_b", 1, 2, 3, "anger")]
    root = fx.build_mmew(str(tmp_path), clips)
    for n in (14, 15, 16):  # frames around the middle (15) are missing on disk
        os.remove(os.path.join(root, "Micro_Expression", "happiness", "S01_a", f"{n}.jpg"))
    samples, report = mmew.read(root, class_names=MMEW)
    assert samples[0].apex == 13  # 13 and 17 are equally near: the earlier one
    ((clip, reason),) = report.repaired
    assert clip == "S01_a"
    assert reason == (
        "apex cell 'blank' is not a frame number: "
        "set to the middle frame 13 (nearest frame on disk to the middle 15)"
    )
