"""The generic CSV loader on users' files: every kind of bad input is a clear error, or an explicit policy.

Each test writes a small synthetic CSV to ``tmp_path``; messages must name the row, the file line,
the column and the value, and what is expected.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from longseq.apps.timeseries.data import ForecastDataModule, SeriesError, check_timestamps, read_series_csv


def hourly(n: int, start: str = "2021-03-01T00:00") -> list[str]:
    """``n`` hourly timestamps as ``YYYY-MM-DD HH:MM:SS``."""
    stamps = np.datetime64(start, "s") + np.arange(n) * np.timedelta64(3600, "s")
    return [str(s).replace("T", " ") for s in stamps]


def write_csv(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def series(tmp_path: Path, n: int = 12, *, edit: dict[int, str] | None = None, name: str = "s.csv") -> Path:
    """``date,a,b,OT`` with a = i, b = 10 i, OT = 100 + i; ``edit`` replaces whole data rows by index."""
    rows = [f"{d},{i},{10 * i},{100 + i}" for i, d in enumerate(hourly(n))]
    for i, row in (edit or {}).items():
        rows[i] = row
    return write_csv(tmp_path / name, "date,a,b,OT", rows)


def test_reads_a_clean_file(tmp_path: Path) -> None:
    table = read_series_csv(series(tmp_path, 5))
    assert table.columns == ("a", "b", "OT") and table.target == "OT"
    np.testing.assert_array_equal(table.values[:, 1], [0, 10, 20, 30, 40])
    assert table.timestamps[1] - table.timestamps[0] == np.timedelta64(3600, "s")
    assert (table.freq, table.irregularities, dict(table.filled)) == ("h", (), {})


def test_target_moves_last_and_columns_select(tmp_path: Path) -> None:
    path = series(tmp_path, 5)
    assert read_series_csv(path, target="a").columns == ("b", "OT", "a")
    table = read_series_csv(path, columns=["b"])  # the target is added
    assert table.columns == ("b", "OT")
    np.testing.assert_array_equal(table.values[:, 0], [0, 10, 20, 30, 40])


def test_text_column_is_an_error_unless_left_out(tmp_path: Path) -> None:
    rows = [f"{d},{i},station-{i},{i}" for i, d in enumerate(hourly(4))]
    path = write_csv(tmp_path / "t.csv", "date,a,site,OT", rows)
    with pytest.raises(SeriesError, match=r"row 0 \(line 2\): non-numeric value 'station-0' in column 'site'"):
        read_series_csv(path)
    assert read_series_csv(path, columns=["a"]).columns == ("a", "OT")


@pytest.mark.parametrize("cell", ["", "NaN", "nan", "NA", "null", " "])
def test_missing_value_is_an_error(tmp_path: Path, cell: str) -> None:
    path = series(tmp_path, 6, edit={3: f"{hourly(6)[3]},3,{cell},103"})
    with pytest.raises(SeriesError, match=r"s\.csv, row 3 \(line 5\): missing value in column 'b' \(1 missing.*fill="):
        read_series_csv(path)


def test_fill_policies(tmp_path: Path) -> None:
    stamps = hourly(6)
    path = series(tmp_path, 6, edit={2: f"{stamps[2]},2,,102", 3: f"{stamps[3]},3,,103"})  # b = 0, 10, _, _, 40, 50
    ffill = read_series_csv(path, fill="ffill")
    np.testing.assert_array_equal(ffill.values[:, 1], [0, 10, 10, 10, 40, 50])
    assert dict(ffill.filled) == {"b": 2}
    interp = read_series_csv(path, fill="interpolate")
    np.testing.assert_allclose(interp.values[:, 1], [0, 10, 20, 30, 40, 50])
    zero = read_series_csv(path, fill="zero")
    np.testing.assert_array_equal(zero.values[:, 1], [0, 10, 0, 0, 40, 50])
    np.testing.assert_array_equal(zero.values[:, 0], [0, 1, 2, 3, 4, 5])  # other columns untouched
    with pytest.raises(ValueError, match="fill must be one of"):
        read_series_csv(path, fill="mean")  # type: ignore[arg-type]


def test_fill_cannot_extrapolate(tmp_path: Path) -> None:
    stamps = hourly(5)
    leading = series(tmp_path, 5, edit={0: f"{stamps[0]},0,,100"}, name="lead.csv")
    with pytest.raises(SeriesError, match=r"row 0 \(line 2\): column 'b' starts with 1 missing.*fill='ffill'"):
        read_series_csv(leading, fill="ffill")
    with pytest.raises(SeriesError, match="starts with 1 missing"):
        read_series_csv(leading, fill="interpolate")
    trailing = series(tmp_path, 5, edit={4: f"{stamps[4]},4,,104"}, name="trail.csv")
    with pytest.raises(SeriesError, match=r"row 4 \(line 6\): column 'b' ends with 1 missing"):
        read_series_csv(trailing, fill="interpolate")
    np.testing.assert_array_equal(read_series_csv(trailing, fill="ffill").values[:, 1], [0, 10, 20, 30, 30])


def test_duplicated_timestamp(tmp_path: Path) -> None:
    stamps = hourly(6)
    path = series(tmp_path, 6, edit={3: f"{stamps[2]},3,30,103"})
    with pytest.raises(
        SeriesError, match=r"row 3 \(line 5\): duplicated timestamp 2021-03-01 02:00:00 \(also on row 2\)"
    ):
        read_series_csv(path)
    # accepting duplicates keeps every row, records them, and the step-3 gap after them is irregular
    with pytest.raises(SeriesError, match="irregular spacing"):
        read_series_csv(path, allow_duplicates=True)
    table = read_series_csv(path, allow_duplicates=True, allow_irregular=True)
    assert len(table) == 6
    assert [(i.kind, i.row) for i in table.irregularities] == [("duplicate", 3), ("gap", 4)]


def test_non_monotonic_timestamps(tmp_path: Path) -> None:
    stamps = hourly(6)
    path = series(tmp_path, 6, edit={2: f"{stamps[3]},2,20,102", 3: f"{stamps[2]},3,30,103"})
    message = r"row 3 \(line 5\): timestamp 2021-03-01 02:00:00 is earlier than 2021-03-01 03:00:00.*sort"
    with pytest.raises(SeriesError, match=message):
        read_series_csv(path, allow_duplicates=True, allow_irregular=True)  # no option accepts it


def test_irregular_spacing(tmp_path: Path) -> None:
    stamps = hourly(12)
    rows = [f"{d},{i},{i},{i}" for i, d in enumerate(stamps[:5] + stamps[7:])]  # 2 hours missing after row 4
    path = write_csv(tmp_path / "gap.csv", "date,a,b,OT", rows)
    message = (
        r"row 5 \(line 7\): irregular spacing: 2021-03-01 07:00:00 follows 2021-03-01 04:00:00 after 3 hours, "
        r"but the inferred step is 1 hour \(8 of 9 gaps\).*allow_irregular=True"
    )
    with pytest.raises(SeriesError, match=message):
        read_series_csv(path)
    table = read_series_csv(path, allow_irregular=True)
    assert len(table) == 10 and table.freq == "h"
    assert [str(i) for i in table.irregularities] == [
        "row 5: gap of 3 hours from 2021-03-01 04:00:00 to 2021-03-01 07:00:00"
    ]


def test_timestamp_problems(tmp_path: Path) -> None:
    stamps = hourly(4)
    with pytest.raises(SeriesError, match=r"row 2 \(line 4\): missing timestamp"):
        read_series_csv(series(tmp_path, 4, edit={2: ",2,20,102"}, name="a.csv"))
    with pytest.raises(SeriesError, match=r"row 1 \(line 3\): cannot parse timestamp 'yesterday'.*date_format"):
        read_series_csv(series(tmp_path, 4, edit={1: "yesterday,1,10,101"}, name="b.csv"))
    with pytest.raises(SeriesError, match=r"row 3 \(line 5\): invalid date '2021-02-30 00:00:00'"):
        read_series_csv(series(tmp_path, 4, edit={3: "2021-02-30 00:00:00,3,30,103"}, name="c.csv"))
    with pytest.raises(SeriesError, match="'01.03.2021 00:00' does not match date_format"):
        read_series_csv(series(tmp_path, 4, edit={0: "01.03.2021 00:00,0,0,100"}, name="d.csv"), date_format="%Y")
    assert stamps[0] == "2021-03-01 00:00:00"


def test_date_formats(tmp_path: Path) -> None:
    slash = write_csv(tmp_path / "slash.csv", "date,OT", ["1990/1/1 0:00,1", "1990/1/2 0:00,2", "1990/1/3 0:00,3"])
    table = read_series_csv(slash)  # the exchange_rate.csv form
    assert str(table.timestamps[2]) == "1990-01-03T00:00:00" and table.freq == "d"
    dayfirst = write_csv(
        tmp_path / "df.csv", "time,OT", ["01.03.2021 10:00,1", "01.03.2021 10:15,2", "01.03.2021 10:30,3"]
    )
    table = read_series_csv(dayfirst, date_column="time", date_format="%d.%m.%Y %H:%M")
    assert str(table.timestamps[0]) == "2021-03-01T10:00:00" and table.freq == "15min"
    tz = write_csv(tmp_path / "tz.csv", "date,OT", ["2021-03-01 10:00+0100,1", "2021-03-01 11:00+0100,2"])
    with pytest.raises(SeriesError, match="has a time zone"):
        read_series_csv(tz, date_format="%Y-%m-%d %H:%M%z")


def test_monthly_series_is_regular(tmp_path: Path) -> None:
    month_ends = ["2020-01-31", "2020-02-29", "2020-03-31", "2020-04-30", "2020-05-31"]
    table = read_series_csv(write_csv(tmp_path / "m.csv", "date,OT", [f"{d},{i}" for i, d in enumerate(month_ends)]))
    assert table.freq == "m" and table.irregularities == ()
    quarters = ["2020-01-01", "2020-04-01", "2020-07-01", "2020-10-01", "2021-01-01"]
    assert read_series_csv(write_csv(tmp_path / "q.csv", "date,OT", [f"{d},1" for d in quarters])).freq == "q"
    missing_month = ["2020-01-01", "2020-02-01", "2020-04-01", "2020-05-01", "2020-06-01"]
    with pytest.raises(SeriesError, match=r"row 2 \(line 4\): irregular spacing.*after 2 month\(s\).*step is 1 month"):
        read_series_csv(write_csv(tmp_path / "mm.csv", "date,OT", [f"{d},1" for d in missing_month]))


def test_structure_problems(tmp_path: Path) -> None:
    with pytest.raises(SeriesError, match="does not exist"):
        read_series_csv(tmp_path / "nope.csv")
    with pytest.raises(SeriesError, match=r"no column\(s\) 'OT' in the header \['date', 'a'\]"):
        read_series_csv(write_csv(tmp_path / "a.csv", "date,a", ["2021-01-01,1", "2021-01-02,2"]))
    with pytest.raises(SeriesError, match=r"no column\(s\) 'time'"):
        read_series_csv(series(tmp_path, 3), date_column="time")
    with pytest.raises(SeriesError, match=r"line 4: 3 cells, expected 4"):
        read_series_csv(series(tmp_path, 4, edit={2: "2021-03-01 02:00:00,2,102"}, name="b.csv"))
    with pytest.raises(SeriesError, match="empty header"):
        read_series_csv(write_csv(tmp_path / "c.csv", "", []))
    with pytest.raises(SeriesError, match="header but no data rows"):
        read_series_csv(write_csv(tmp_path / "d.csv", "date,OT", []))
    with pytest.raises(SeriesError, match="'a' appears twice"):
        read_series_csv(write_csv(tmp_path / "e.csv", "date,a,a,OT", ["2021-01-01,1,2,3"]))
    with pytest.raises(SeriesError, match="infinite value 'inf' in column 'a'"):
        read_series_csv(series(tmp_path, 4, edit={1: "2021-03-01 01:00:00,inf,10,101"}, name="f.csv"))
    with pytest.raises(SeriesError, match="not valid utf-8-sig text"):
        (tmp_path / "g.csv").write_bytes(b"date,OT\n2021-01-01,\xff\n")
        read_series_csv(tmp_path / "g.csv")
    with pytest.raises(SeriesError, match="at least 2"):
        read_series_csv(series(tmp_path, 1, name="h.csv"))


def test_gzip_bom_and_blank_lines(tmp_path: Path) -> None:
    text = "\ufeffdate,a,b,OT\n" + "\n".join(f"{d},{i},{i},{i}" for i, d in enumerate(hourly(4))) + "\n\n"
    compressed = tmp_path / "data.bin"  # gzip is recognised by content, not by the suffix
    compressed.write_bytes(gzip.compress(text.encode()))
    table = read_series_csv(compressed)
    assert table.columns == ("a", "b", "OT") and len(table) == 4  # BOM skipped, trailing blank line ignored
    blank = tmp_path / "blank.csv"  # a blank line between rows 1 and 2 holds no cells; line numbers still count it
    lines = text.splitlines()
    blank.write_text("\n".join([*lines[:3], "", lines[3].replace(",2,2,2", ",x,2,2"), *lines[4:]]) + "\n")
    with pytest.raises(SeriesError, match=r"row 2 \(line 5\): non-numeric value 'x' in column 'a'"):
        read_series_csv(blank)


def test_tab_separated(tmp_path: Path) -> None:
    path = tmp_path / "t.tsv"
    path.write_text("date\tOT\n" + "\n".join(f"{d}\t{i}" for i, d in enumerate(hourly(3))) + "\n")
    assert read_series_csv(path, delimiter="\t").values[:, 0].tolist() == [0.0, 1.0, 2.0]


def test_series_too_short_for_a_split(tmp_path: Path) -> None:
    """100 rows, 70/10/20: val = [70 - 24, 80) has 34 rows, one window needs 24 + 12 = 36."""
    path = series(tmp_path, 100)
    dm = ForecastDataModule(str(path), seq_len=24, label_len=12, pred_len=12)
    message = r"the val split \(rows \[46, 80\) of 100\) has 34 rows, but one window needs seq_len \+ pred_len = 24 \+ 12 = 36"
    with pytest.raises(SeriesError, match=message):
        dm.setup()
    ok = ForecastDataModule(str(path), seq_len=24, label_len=12, pred_len=10)
    assert ok.window_counts == {"train": 70 - 34 + 1, "val": 34 - 34 + 1, "test": 44 - 34 + 1}
    with pytest.raises(SeriesError, match=r"the train split \(rows \[0, 70\) of 100\) has 70 rows.*76 \+ 1 = 77"):
        ForecastDataModule(str(path), seq_len=76, label_len=0, pred_len=1).setup()
    with pytest.raises(SeriesError, match="ett_hour protocol needs at least 14400 rows"):
        ForecastDataModule(str(path), split="ett_hour", seq_len=24, label_len=12, pred_len=12).setup()


def test_custom_ratios_and_datamodule_on_csv(tmp_path: Path) -> None:
    path = series(tmp_path, 200)
    dm = ForecastDataModule(
        str(path), features="MS", seq_len=16, label_len=8, pred_len=4, train_ratio=0.6, test_ratio=0.3, batch_size=5
    )
    # int(200 * 0.6) = 120, int(200 * 0.3) = 60, val 20
    assert (dm.borders.train, dm.borders.val, dm.borders.test) == ((0, 120), (104, 140), (124, 200))
    batch = next(iter(dm.train_dataloader()))
    assert batch["x"].shape == (5, 16, 3) and batch["y"].shape == (5, 12, 3)
    assert dm.scaler is not None
    np.testing.assert_allclose(dm.scaler.mean, [59.5, 595.0, 159.5])  # means of rows 0..119
    with pytest.raises(ValueError, match="train_ratio and test_ratio"):
        ForecastDataModule(str(path), train_ratio=0.8, test_ratio=0.2)


def test_irregular_rows_through_the_datamodule(tmp_path: Path) -> None:
    stamps = hourly(60)
    path = write_csv(tmp_path / "g.csv", "date,OT", [f"{d},{i}" for i, d in enumerate(stamps[:30] + stamps[31:])])
    with pytest.raises(SeriesError, match="irregular spacing"):
        ForecastDataModule(str(path), seq_len=4, label_len=2, pred_len=2).setup()
    dm = ForecastDataModule(str(path), seq_len=4, label_len=2, pred_len=2, allow_irregular=True)
    dm.setup()
    assert len(dm.table) == 59 and len(dm.table.irregularities) == 1


def test_check_timestamps_directly() -> None:
    ts = np.array(["2021-01-01T00:00", "2021-01-01T00:10", "2021-01-01T00:20"], dtype="datetime64[s]")
    spacing = check_timestamps(ts)
    assert (spacing.freq, spacing.step_seconds, spacing.describe()) == ("10min", 600, "10 minutes")
    same = np.array(["2021-01-01"] * 3, dtype="datetime64[s]")
    with pytest.raises(SeriesError, match="every timestamp equals 2021-01-01 00:00:00"):
        check_timestamps(same, allow_duplicates=True)
