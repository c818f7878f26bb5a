"""What a user sees when the input is wrong: one `error:` paragraph, no traceback, nothing silent.

The CLI cases run the real scripts in a subprocess on small damaged copies of release layouts;
each stops while reading the data (or before), so no model is compiled. The counts of skipped
samples and listed problems (`data.strict=False`) are checked through the reader functions.
"""

from __future__ import annotations

import os
import shutil
import struct
import tempfile

import cv2
import numpy as np
import pytest

from ma2mi_jax import cli, configlib, errors
from ma2mi_jax.data.media import decode, facecrop, frames
from ma2mi_jax.data.readers import casme2, dfew, macro_folders
from ma2mi_jax.data.readers import registry as readers
from ma2mi_jax.data.records import DataError, MacroClip
from ma2mi_jax.train import folder_checks
from tests.helpers import release_layouts as fx
from tests.helpers.scripts import LOSO, PRETRAIN, assert_reported, run_script

CASME2 = configlib.CASME2_CLASSES
C = fx.MicroClip
SHEET = "CASME2-coding-20190701.xlsx"


def write_noisy_jpeg(path: str, size: int = 48, seed: int = 0) -> str:
    """A JPEG with real image data (random pixels), so that a truncated copy still decodes in OpenCV."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    assert cv2.imwrite(path, img)
    return path


def truncate(path: str, keep: float = 0.6) -> str:
    """Cut the file at `keep` of its length, as an interrupted copy does."""
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: int(len(data) * keep)])
    return path


def small_casme2(root: str) -> str:
    """Two subjects, four clips, frames 1..4 (onset 1, apex 3) as 8x8 JPEGs."""
    clips = [
        C(1, "EP01_01", 1, 3, 4, "happiness"),
        C(1, "EP02_01", 1, 3, 4, "disgust"),
        C(2, "EP01_02", 1, 3, 4, "surprise"),
        C(2, "EP02_02", 1, 3, 4, "others"),
    ]
    return fx.build_casme2(root, clips)


def clip_dir(root: str, subject: str = "sub01", clip: str = "EP01_01") -> str:
    return os.path.join(root, "Cropped", subject, clip)


# ----------------------------------------------------------------------------- damaged micro data


def damage_truncated_onset(root: str) -> str:
    path = os.path.join(clip_dir(root), "reg_img1.jpg")
    truncate(write_noisy_jpeg(path))
    assert cv2.imread(path) is not None  # OpenCV alone would train on it
    return path


def damage_size_mismatch(root: str) -> str:
    path = os.path.join(clip_dir(root), "reg_img3.jpg")
    fx.write_image(path, size=12)
    return path


def damage_stray_copy(root: str) -> str:
    return fx.write_image(os.path.join(clip_dir(root), "reg_img151 (1).jpg"))


DAMAGE = {
    "truncated JPEG": (damage_truncated_onset, "truncated JPEG"),
    "onset/apex sizes": (damage_size_mismatch, "8x8 pixels but apex image"),
    "stray copy": (damage_stray_copy, "no frame number at the end of the file name (a stray copy?)"),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_cli_names_the_file_and_row_of_each_defect(tmp_path, case):
    damage, what = DAMAGE[case]
    root = small_casme2(str(tmp_path / "casme2"))
    bad = damage(root)
    workdir = tmp_path / "wd"
    result = run_script([*LOSO, f"--config.data.root={root}", "--workdir", str(workdir)])
    assert_reported(result, what, bad, f"{SHEET}, sheet 'Sheet1', row 2 (sub01/EP01_01)", "data.strict=False")
    assert not workdir.exists()


def test_cli_debug_shows_the_traceback(tmp_path):
    root = small_casme2(str(tmp_path / "casme2"))
    damage_truncated_onset(root)
    result = run_script([*LOSO, f"--config.data.root={root}", "--workdir", str(tmp_path / "wd"), "--debug"])
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "DataError" in result.stderr
    assert "During handling of the above exception" not in result.stderr  # no chained tracebacks


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_defects_are_listed_skips_without_strict(tmp_path, case):
    damage, what = DAMAGE[case]
    root = small_casme2(str(tmp_path / "casme2"))
    damage(root)
    samples, report = casme2.read(root, class_names=CASME2, strict=False)
    assert sorted(s.clip_id for s in samples) == ["sub01/EP02_01", "sub02/EP01_02", "sub02/EP02_02"]
    [(clip, reason)] = report.dropped
    assert clip == "sub01/EP01_01" and what in reason and f"{SHEET}, sheet 'Sheet1', row 2" in reason


def test_stray_copies_and_odd_prefixes(tmp_path):
    folder = str(tmp_path / "clip")
    fx.write_frames(folder, [150, 151], "reg_img{n}.jpg")
    assert [n for n, _ in frames.list_frames(folder)] == [150, 151]
    odd = fx.write_image(os.path.join(folder, "reg_img151_copy2.jpg"))  # ends in digits, other prefix
    with pytest.raises(DataError, match=r"reg_img151_copy2\.jpg not named like the other frames"):
        frames.list_frames(folder)
    os.remove(odd)
    fx.write_image(os.path.join(folder, "reg_img151 - Copy.jpg"))
    with pytest.raises(DataError, match=r"reg_img151 - Copy\.jpg: no frame number at the end"):
        frames.list_frames(folder)


# ----------------------------------------------------------------------------- truncated frames


def test_truncated_images_are_caught_by_the_decoder(tmp_path):
    good = write_noisy_jpeg(str(tmp_path / "good.jpg"))
    assert decode.read_image(good).shape == (48, 48, 3)
    bad = truncate(write_noisy_jpeg(str(tmp_path / "bad.jpg")))
    with pytest.raises(DataError, match=r"bad\.jpg: truncated JPEG"):
        decode.read_image(bad, 32)
    png = str(tmp_path / "bad.png")
    cv2.imwrite(png, np.zeros((16, 16, 3), np.uint8))
    truncate(png)
    assert frames.file_problem(png).startswith("truncated PNG")
    assert frames.file_problem(good) is None


def test_truncated_frame_of_a_frame_folder_clip(tmp_path):
    root = str(tmp_path / "frames")
    for clip in ("a", "b"):
        for n in range(1, 4):
            write_noisy_jpeg(os.path.join(root, clip, f"{n}.jpg"), seed=n)
    bad = truncate(os.path.join(root, "b", "2.jpg"))
    with pytest.raises(DataError, match=rf"clip b: truncated image file\(s\) {bad}"):
        macro_folders.read_frame_folders(root)
    clips, report = macro_folders.read_frame_folders(root, strict=False)
    assert [c.clip_id for c in clips] == ["a"]
    assert report.dropped[0][0] == "b" and "truncated JPEG" in report.dropped[0][1]


def test_a_frame_that_is_a_broken_or_looping_link_is_named(tmp_path):
    root = str(tmp_path / "frames")
    for clip in ("a", "b", "c"):
        for n in (1, 2, 4):
            write_noisy_jpeg(os.path.join(root, clip, f"{n}.jpg"), seed=n)
    loop = os.path.join(root, "b", "3.jpg")
    os.symlink("3.jpg", loop)
    dangling = os.path.join(root, "c", "3.jpg")
    os.symlink(os.path.join(root, "c", "gone.jpg"), dangling)
    with pytest.raises(DataError, match=rf"clip b: {loop} is a symbolic link loop"):
        macro_folders.read_frame_folders(root)
    clips, report = macro_folders.read_frame_folders(root, strict=False)
    assert [c.clip_id for c in clips] == ["a"]
    reasons = dict(report.dropped)
    assert f"{loop} is a symbolic link loop" in reasons["b"]
    assert f"{dangling} is a symbolic link to" in reasons["c"] and "does not exist" in reasons["c"]


def test_tail_check_reads_only_the_end_of_large_files(tmp_path):
    big = write_noisy_jpeg(str(tmp_path / "big.jpg"), size=256)
    assert os.path.getsize(big) > frames.TAIL_BYTES
    assert frames.file_problem(big) is None
    assert frames.file_problem(truncate(big)).startswith("truncated JPEG")


# ----------------------------------------------------------------------------- face crop of a short video


def write_short_video(path: str, num_frames: int, claimed: int) -> str:
    """An MJPG .avi holding `num_frames` frames whose header claims `claimed`."""
    fx.write_video(path, num_frames)
    with open(path, "rb") as f:
        data = bytearray(f.read())
    avih, strh = data.find(b"avih"), data.find(b"strh")
    data[avih + 24 : avih + 28] = struct.pack("<I", claimed)  # avih.dwTotalFrames
    data[strh + 40 : strh + 44] = struct.pack("<I", claimed)  # strh.dwLength
    with open(path, "wb") as f:
        f.write(data)
    return path


def test_face_crop_refuses_a_video_shorter_than_its_header(tmp_path):
    path = write_short_video(str(tmp_path / "v" / "a.avi"), 6, 9)
    assert frames.video_frame_count(path) == 9
    clip = MacroClip("videos", "a.avi", None, path, 9)
    with pytest.raises(DataError, match=r"a\.avi: the video ends after 6 of the 9 frames"):
        facecrop.crop_clip(clip, str(tmp_path / "faces"), 16)
    kept, dropped = facecrop.crop_clips([clip], str(tmp_path / "faces"), 16, strict=False)
    assert kept == [] and dropped[0][0] == "a.avi" and "ends after 6 of the 9" in dropped[0][1]


# ----------------------------------------------------------------------------- DFEW split files


def damaged_dfew(root: str) -> str:
    """Clips 1..3 on disk; clip 2 in both split files with other labels; clip 9 listed, not on disk."""
    return fx.build_dfew(root, {1: 3, 2: 3, 3: 3}, train={1: 1, 2: 2, 9: 4}, test={2: 5, 3: 3})


def test_dfew_split_problems_are_counted_and_listed(tmp_path):
    root = damaged_dfew(str(tmp_path / "dfew"))
    clips, report = dfew.read(root, strict=False)
    got = {c.clip_id: (c.label, c.emotion) for c in clips}
    assert got == {"00001": (0, "happy"), "00002": (-1, None), "00003": (2, "neutral")}
    assert report.problem_counts() == {dfew.CONFLICTING: 1, dfew.MISSING_ON_DISK: 1}
    summary = report.summary()
    assert "annotation problems: conflicting labels 1, listed but missing on disk 1" in summary
    assert "test(single-labeled)" in summary and "row 2: clip 2 is listed as test surprise" in summary
    assert "clip 9 (train, angry) is not in" in summary
    assert ("unsplit", "unlabelled") in report.kept


@pytest.mark.parametrize(
    ("train", "test", "what"),
    [
        ({1: 1, 2: 2}, {2: 5}, "row 2: clip 2 is listed as test surprise, but"),
        ({1: 1, 9: 4}, None, "row 3: clip 9 (train, angry) is not in"),
    ],
    ids=["conflicting labels", "missing on disk"],
)
def test_cli_pretrain_stops_on_split_file_problems(tmp_path, train, test, what):
    root = fx.build_dfew(str(tmp_path / "dfew"), {1: 3, 2: 3}, train=train, test=test)
    result = run_script([*PRETRAIN, f"--config.data.root={root}", "--workdir", str(tmp_path / "wd")])
    assert_reported(result, what, "set_1.csv", "data.strict=False")


def test_dfew_bad_split_file_names_the_file_not_data_sheet(tmp_path):
    root = fx.build_dfew(str(tmp_path / "dfew"), {1: 3}, train={1: 1})
    path = os.path.join(root, "EmoLabel_DataSplit", "train(single-labeled)", "set_1.csv")
    fx.write_csv(path, [("video_nam", "label"), (1, 1)])
    with pytest.raises(DataError) as err:
        dfew.read(root)
    message = str(err.value)
    assert "set_1.csv" in message and "no column 'video_name' (is 'video_nam' meant?" in message
    assert "data.sheet" not in message and "EmoLabel_DataSplit files" in message


# ----------------------------------------------------------------------------- smaller messages


def test_missing_header_is_named(tmp_path):
    root = small_casme2(str(tmp_path / "casme2"))
    rows = fx.casme2_rows([C(1, "EP01_01", 1, 3, 4, "happiness")])
    rows[0] = tuple("Apex" if h == "ApexFrame" else h for h in rows[0])
    fx.write_xlsx(os.path.join(root, SHEET), rows)
    with pytest.raises(DataError, match=r"row 1\) has no column 'ApexFrame' \(is 'Apex' meant\? rename it\)"):
        casme2.read(root, class_names=CASME2)


def test_root_that_is_a_file_or_a_link_loop(tmp_path):
    file_root = fx.write_garbage(str(tmp_path / "casme2.zip"))
    loop = str(tmp_path / "loop")
    os.symlink(loop, loop)
    data = {"name": "casme2", "class_names": CASME2}
    with pytest.raises(DataError, match=r"casme2\.zip is a file, not a folder \(config key data\.root\)"):
        readers.read_micro({**data, "root": file_root})
    with pytest.raises(DataError, match=r"loop is a symbolic link loop"):
        readers.read_micro({**data, "root": loop})
    with pytest.raises(DataError, match=r"casme2 root: .*casme2\.zip is a file, not a folder"):
        casme2.read(file_root, class_names=CASME2)


# ----------------------------------------------------------------------------- workdir and init first


def test_cli_workdir_and_init_are_checked_before_the_data(tmp_path):
    """The data root does not exist: each check must fire before the data is looked at."""
    missing_root = f"--config.data.root={tmp_path / 'no_data'}"
    a_file = fx.write_garbage(str(tmp_path / "a_file"))
    result = run_script([*LOSO, missing_root, "--workdir", a_file])
    assert_reported(result, f"workdir {a_file} exists and is a file, not a folder")
    result = run_script([*LOSO, missing_root, "--workdir", os.path.join(a_file, "run")])
    assert_reported(result, "cannot be created", f"{a_file} is a file")
    init = str(tmp_path / "pretrain_none")
    workdir = tmp_path / "wd"
    result = run_script(["scripts/loso.py", "--config", "configs/synthetic_loso.py:tiny", missing_root,
                         f"--config.init={init}", "--workdir", str(workdir)])  # fmt: skip
    assert_reported(
        result, f"config.init='{init}' does not exist",
        "python scripts/pretrain.py --config configs/dfew.py --config.data.root=<DFEW folder> "
        f"--workdir {init}",
        "--config.init=scratch", "--config.init=imagenet:",
    )  # fmt: skip
    assert not workdir.exists() and not os.path.exists(init)
    result = run_script([*PRETRAIN, "--config.data.root=/no/data", "--workdir", a_file])
    assert_reported(result, f"workdir {a_file} exists and is a file")


def test_init_message_names_the_config_that_makes_that_workdir(tmp_path):
    with pytest.raises(errors.InitError) as err:
        folder_checks.check_init("workdirs/pretrain_synthetic_none")
    assert "--config configs/dfew.py" in str(err.value)
    cmd = folder_checks.pretrain_command("workdirs/pretrain_synthetic")
    assert cmd.startswith("python scripts/pretrain.py --config configs/synthetic_pretrain.py ")
    empty = tmp_path / "empty_run"
    empty.mkdir()
    with pytest.raises(errors.InitError, match=r"is not a pre-training workdir \(.*no checkpoint found"):
        folder_checks.check_init(str(empty))
    with pytest.raises(errors.InitError, match=r"ResNet18 weight file .*none\.safetensors does not exist"):
        folder_checks.check_init(f"imagenet:{tmp_path / 'none.safetensors'}")
    folder_checks.check_init("scratch")


def _unprivileged() -> tuple[str, ...] | None:
    """A command prefix that drops root's right to write anywhere (None where it cannot)."""
    if os.geteuid() != 0:
        return ()
    setpriv = shutil.which("setpriv")
    return (setpriv, "--reuid=65534", "--regid=65534", "--clear-groups") if setpriv else None


def test_cli_unwritable_workdir_is_refused_before_reading(tmp_path):
    prefix = _unprivileged()
    if prefix is None:
        pytest.skip("running as root without setpriv: every folder is writable")
    parent = tempfile.mkdtemp(prefix="ma2mi-readonly-")  # /tmp, traversable by every user
    try:
        os.chmod(parent, 0o555)
        root = small_casme2(os.path.join(tempfile.mkdtemp(prefix="ma2mi-data-"), "casme2"))
        os.chmod(os.path.dirname(root), 0o755)
        workdir = os.path.join(parent, "run")
        result = run_script([*LOSO, f"--config.data.root={root}", "--workdir", workdir], prefix)
        assert_reported(result, f"workdir {workdir} cannot be created", f"{parent} is not writable")
        assert "casme2: kept" not in result.stderr + result.stdout  # refused before the data was read
    finally:
        os.chmod(parent, 0o755)
        shutil.rmtree(parent, ignore_errors=True)


def test_export_of_a_missing_workdir(tmp_path):
    result = run_script(
        ["scripts/export.py", "--workdir", str(tmp_path / "none"), "--out", str(tmp_path / "o")]
    )
    assert_reported(result, "is not a cross-validation workdir", "scripts/loso.py")


# ----------------------------------------------------------------------------- cli.reporting_errors


def test_reporting_errors_prints_one_paragraph_and_keeps_bugs_loud(capsys, monkeypatch):
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)

    def bad_input(argv):
        raise DataError("sheet.xlsx, row 4: onset 9 is after offset 3.\n\n  details")

    with pytest.raises(SystemExit) as stop:
        cli.reporting_errors(bad_input)([])
    assert stop.value.code == errors.EXIT_CODE
    assert capsys.readouterr().err == "error: sheet.xlsx, row 4: onset 9 is after offset 3.\n  details\n"

    def bug(argv):
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        cli.reporting_errors(bug)([])
    monkeypatch.setenv(cli.DEBUG_ENV, "1")
    with pytest.raises(DataError):
        cli.reporting_errors(bad_input)([])


# ----------------------------------------------------------------------------- training that diverges


def test_cli_fine_tuning_that_diverges_ends_with_one_line(data_root, tmp_path):
    workdir = tmp_path / "wd"
    result = run_script(
        [*LOSO, f"--config.data.root={data_root}", "--config.train.lr=1e10", "--config.train.epochs=2",
         "--workdir", str(workdir)]
    )  # fmt: skip
    assert_reported(result, "non-finite training statistics", "lower train.lr")
