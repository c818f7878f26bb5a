"""Sheets read by header name with the header row found by content; frame listing by parsed number."""

from __future__ import annotations

import os

import openpyxl
import pytest

from ma2mi_jax.data.media import decode, frames
from ma2mi_jax.data.readers import sheets
from ma2mi_jax.data.records import DataError
from tests.helpers import release_layouts as fx


@pytest.mark.parametrize(
    ("value", "expected"),
    [(46, 46), (46.0, 46), ("46", 46), (" 046 ", 46), ("/", None), ("", None), (None, None), ("12.0", 12)],
)
def test_cell_int(value, expected):
    assert sheets.cell_int(value) == expected


@pytest.mark.parametrize("value", ["abc", 4.5, "4.5", True])
def test_cell_int_rejects(value):
    with pytest.raises(ValueError):
        sheets.cell_int(value)


def test_cell_text_and_header_key():
    assert sheets.cell_text(1.0) == "1"
    assert sheets.cell_text(None) == ""
    assert sheets.cell_text("  Others ") == "Others"
    assert sheets.header_key("Onset Frame") == sheets.header_key("OnsetFrame") == "onsetframe"
    assert sheets.header_key(" Estimated  Emotion ") == "estimatedemotion"


def test_header_found_below_description_rows(tmp_path):
    clips = [fx.MicroClip(6, "006_1_2", 5562, 5600, 5650, "Anger", aus="R4 or 4")]
    path = fx.write_xlsx(str(tmp_path / "s.xlsx"), fx.samm_rows(clips, description_rows=13))
    table = sheets.read_table(path, ("Subject", "Onset Frame", "Estimated Emotion"))
    assert table.header_row == 14
    (row,) = table.rows
    assert row.number == 15
    assert row["Onset Frame"] == 5562 and row["onsetframe"] == 5562
    assert row.text("Action Units") == "R4 or 4"
    assert table.where(row).endswith("s.xlsx, sheet 'Sheet1', row 15")


def test_blank_header_columns_ignored_and_order_free(tmp_path):
    rows = [
        ("Estimated Emotion", None, "Filename", "Unnamed: 2", "Subject"),
        ("happiness", "x", "EP1", "y", "01"),
    ]
    path = fx.write_csv(str(tmp_path / "s.csv"), rows)
    table = sheets.read_table(path, ("Subject", "Filename", "Estimated Emotion"))
    (row,) = table.rows
    assert (row.text("Subject"), row.text("Filename"), row.text("Estimated Emotion")) == (
        "01",
        "EP1",
        "happiness",
    )
    assert "" not in row.cells


def test_header_searched_on_every_worksheet_and_blank_rows_skipped(tmp_path):
    book = openpyxl.Workbook()
    book.active.append(["Read me"])
    ws = book.create_sheet("Data")
    ws.append(["Subject", "Filename"])
    ws.append([None, None])
    ws.append([3, "EP9"])
    path = str(tmp_path / "two.xlsx")
    book.save(path)
    table = sheets.read_table(path, ("Subject", "Filename"))
    assert table.sheet == "Data"
    assert [(r.number, r["Subject"]) for r in table.rows] == [(3, 3)]


def test_missing_headers_message_names_file_and_headers(tmp_path):
    path = fx.write_xlsx(str(tmp_path / "wrong.xlsx"), [("Name", "Start"), ("a", 1)])
    with pytest.raises(DataError, match=r"wrong\.xlsx.*OnsetFrame.*Name, Start"):
        sheets.read_table(path, ("Subject", "OnsetFrame"))


def test_xls_asks_for_resave(tmp_path):
    path = fx.write_garbage(str(tmp_path / "CASME2_label_Ver_2.xls"))
    with pytest.raises(DataError, match=r"CASME2_label_Ver_2\.xls.*save it as \.xlsx"):
        sheets.read_table(path, ("Subject",))


def test_corrupt_xlsx_and_missing_sheet(tmp_path):
    bad = fx.write_garbage(str(tmp_path / "broken.xlsx"))
    with pytest.raises(DataError, match=r"cannot read the annotation sheet .*broken\.xlsx"):
        sheets.read_table(bad, ("Subject",))
    with pytest.raises(DataError, match=r"not found: .*absent\.xlsx"):
        sheets.read_table(str(tmp_path / "absent.xlsx"), ("Subject",))


def test_find_sheet(tmp_path):
    root = str(tmp_path)
    with pytest.raises(DataError, match=r"no annotation sheet in .*CASME2-coding\*"):
        sheets.find_sheet(root, "", ("CASME2-coding*.xlsx",), "casme2")
    a = fx.write_xlsx(os.path.join(root, "CASME2-coding-20140508.xlsx"), [("x",)])
    assert sheets.find_sheet(root, "", ("CASME2-coding*.xlsx",), "casme2") == a
    fx.write_garbage(os.path.join(root, "CASME2-coding-20140508.xls"))  # re-saved copy beside it wins
    assert sheets.find_sheet(root, "", ("CASME2-coding*.xlsx", "CASME2-coding*.xls"), "casme2") == a
    fx.write_xlsx(os.path.join(root, "CASME2-coding-20190701.xlsx"), [("x",)])
    with pytest.raises(DataError, match=r"20140508\.xlsx, CASME2-coding-20190701\.xlsx.*data\.sheet"):
        sheets.find_sheet(root, "", ("CASME2-coding*.xlsx",), "casme2")
    assert sheets.find_sheet(root, "CASME2-coding-20140508.xlsx", (), "casme2") == a
    with pytest.raises(DataError, match=r"other\.xlsx not found .*data\.sheet"):
        sheets.find_sheet(root, "other.xlsx", (), "casme2")


@pytest.mark.parametrize(
    ("name", "number"),
    [("reg_img46.jpg", 46), ("img46.jpg", 46), ("006_05562.jpg", 5562), ("12.jpg", 12),
     ("00001_00001.jpg", 1), ("009_3577.jpg", 3577), ("frame.jpg", None)],
)  # fmt: skip
def test_parse_frame_number(name, number):
    assert frames.parse_frame_number(name) == number


def test_list_frames_orders_by_number_not_name(tmp_path):
    folder = str(tmp_path / "clip")
    for name in ("img9.jpg", "img10.jpg", "img0008.jpg", "img100.jpg"):
        fx.write_image(os.path.join(folder, name))
    fx.write_garbage(os.path.join(folder, "Thumbs.db"))
    listed = frames.list_frames(folder)
    assert [n for n, _ in listed] == [8, 9, 10, 100]
    assert os.path.basename(listed[0][1]) == "img0008.jpg"


def test_list_frames_duplicate_and_unnumbered(tmp_path):
    folder = str(tmp_path / "dup")
    fx.write_image(os.path.join(folder, "img7.jpg"))
    fx.write_image(os.path.join(folder, "img007.jpg"))
    with pytest.raises(DataError, match=r"dup: two images with frame number 7"):
        frames.list_frames(folder)
    other = str(tmp_path / "nonum")
    fx.write_image(os.path.join(other, "face.jpg"))
    with pytest.raises(DataError, match=r"face\.jpg: no frame number"):
        frames.list_frames(other)


def test_descend_nested(tmp_path):
    inner = tmp_path / "Cropped" / "Cropped" / "sub01"
    inner.mkdir(parents=True)
    assert frames.descend_nested(str(tmp_path / "Cropped")) == str(tmp_path / "Cropped" / "Cropped")
    flat = tmp_path / "Flat" / "sub01"
    flat.mkdir(parents=True)
    assert frames.descend_nested(str(tmp_path / "Flat")) == str(tmp_path / "Flat")


def _image_problem(path: str) -> str | None:
    """Why the image at `path` cannot be used, or None (the decoder's own verdict)."""
    return decode.decode_bgr(path)[1]


def test_image_problem(tmp_path):
    good = fx.write_image(str(tmp_path / "a.jpg"))
    assert _image_problem(good) is None
    assert "empty" in _image_problem(fx.write_garbage(str(tmp_path / "e.jpg"), b""))
    assert "cannot decode" in _image_problem(fx.write_garbage(str(tmp_path / "c.jpg")))
    assert "missing" in _image_problem(str(tmp_path / "none.jpg"))
