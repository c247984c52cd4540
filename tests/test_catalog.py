"""The catalog format: round trips, streaming, and every kind of bad input."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from convention_rt.catalog import Catalog
from convention_rt.catalog_writer import CatalogWriter
from convention_rt.validate import summarise
from convention_rt.errors import CatalogError, UsageError
from helpers import (
    BAD_FILES,
    BANDS,
    PHOTOMETRY,
    frame_columns,
    object_columns,
    orphan_catalog,
    problem_catalog,
    rename_column,
    write_raw_catalog,
    write_small_catalog,
)


def read_all(path: Path, **options):
    with Catalog(path, **options) as catalog:
        return list(catalog.iter_chunks(max_objects=2))


def test_round_trip_gives_back_time_ordered_native_frames(tmp_path):
    rng = np.random.default_rng(4)
    stamps = rng.normal(size=(4, 32, 32)).astype(np.float32)
    mjd = np.array([3.0, 1.0, 2.0, 0.5])
    with CatalogWriter(tmp_path / "c.fits", BANDS, photometry=PHOTOMETRY) as writer:
        writer.add_object(7, mjd=mjd, stamps=stamps, bands=["g", "r", "i", "g"], ra=1.5, dec=-2.0,
                          label="SNIa", typing="spec")
    (chunk,) = read_all(tmp_path / "c.fits")
    order = np.argsort(mjd)
    assert chunk.frames.dtype == np.float32 and chunk.frames.dtype.isnative
    np.testing.assert_array_equal(chunk.frames, stamps[order])
    np.testing.assert_array_equal(chunk.mjd, mjd[order])
    assert [BANDS[b] for b in chunk.band] == [["g", "r", "i", "g"][k] for k in order]
    assert chunk.object_ids.tolist() == [7] and chunk.labels.tolist() == ["SNIa"]
    assert chunk.typing.tolist() == ["spec"] and chunk.ra.tolist() == [1.5]
    assert chunk.status(0) == "ok;epochs_sorted_by_time"


def test_fits_big_endian_data_is_converted_not_reinterpreted(tmp_path):
    stamps = np.full((1, 32, 32), 1234.5, dtype=">f4")
    path = write_raw_catalog(tmp_path / "be.fits", object_columns([1], [0], [1]),
                             frame_columns([1], [59000.0], ["g"], stamps))
    (chunk,) = read_all(path)
    assert chunk.frames.dtype.byteorder in ("=", "<")
    assert np.all(chunk.frames == 1234.5)


def test_string_ids_and_cube_layout_with_missing_planes(tmp_path):
    rng = np.random.default_rng(5)
    cubes = rng.normal(size=(3, 3, 32, 32)).astype(np.float32)
    cubes[0, 1] = np.nan  # a NaN-filled missing band
    present = np.ones((3, 3), bool)
    present[2, 0] = False  # an absent band
    with CatalogWriter(tmp_path / "cube.fits", BANDS, photometry=PHOTOMETRY, layout="CUBES",
                       id_width=16) as writer:
        writer.add_object("ZTF21aaaaaaa", mjd=[2.0, 0.0, 1.0], stamps=cubes, present=present)
    (chunk,) = read_all(tmp_path / "cube.fits")
    assert chunk.object_ids.tolist() == ["ZTF21aaaaaaa"]
    # time order: epoch 1 (g, r, i), epoch 2 (r, i: g absent), epoch 0 (g, i: r all NaN)
    np.testing.assert_array_equal(chunk.mjd, [0, 0, 0, 1, 1, 2, 2])
    expected_frames = [cubes[1, 0], cubes[1, 1], cubes[1, 2], cubes[2, 1], cubes[2, 2], cubes[0, 0], cubes[0, 2]]
    np.testing.assert_array_equal(chunk.band, [0, 1, 2, 1, 2, 0, 2])
    np.testing.assert_array_equal(chunk.frames, np.stack(expected_frames))


def test_chunks_are_bounded_and_cover_every_object_once(tmp_path):
    path = write_small_catalog(tmp_path / "c.fits", n_objects=11, epochs=4)
    with Catalog(path) as catalog:
        chunks = list(catalog.iter_chunks(max_objects=3, max_epochs=10))
    assert [len(c) for c in chunks] == [2, 2, 2, 2, 2, 1]  # 3 objects would be 12 epochs > 10
    ids = np.concatenate([c.object_ids for c in chunks])
    assert ids.tolist() == list(range(100, 111))
    assert all(c.frames.shape[0] <= 10 for c in chunks)


def test_objects_in_any_row_order_are_gathered(tmp_path):
    stamps = np.arange(3 * 32 * 32, dtype=np.float32).reshape(3, 32, 32)
    # object 2 owns row 0, object 1 owns rows 1-2: blocks not in object order
    path = write_raw_catalog(tmp_path / "c.fits", object_columns([1, 2], [1, 0], [2, 1]),
                             frame_columns([2, 1, 1], [5.0, 1.0, 2.0], ["g", "r", "i"], stamps))
    (chunk,) = read_all(path)
    np.testing.assert_array_equal(chunk.offsets, [0, 2, 3])
    np.testing.assert_array_equal(chunk.frames, stamps[[1, 2, 0]])


def test_summary_counts_bands_classes_and_typing(small_catalog):
    with Catalog(small_catalog) as catalog:
        summary = summarise(catalog)
    assert (summary.n_objects, summary.n_epochs, summary.n_frames) == (6, 30, 30)
    assert summary.frames_per_band == {"g": 12, "r": 12, "i": 6}
    assert summary.classes == {"AGN": 2, "SNIa": 2, "SNOther": 1, "Variable": 1}
    assert summary.typing == {"spec": 3, "phot": 3}
    assert summary.n_invalid == 0


# -- bad input: file-level errors ------------------------------------------------
@pytest.mark.parametrize(("build", "message"), BAD_FILES)
def test_bad_files_give_one_line_errors_naming_file_and_field(tmp_path, build, message):
    path = tmp_path / "bad.fits"
    build(path)
    with pytest.raises(CatalogError, match=message) as info:
        Catalog(path)
    text = str(info.value)
    assert text.startswith(str(path)) and "\n" not in text


def test_truncated_file_is_refused(tmp_path, small_catalog):
    data = small_catalog.read_bytes()
    for cut in (len(data) - 2880 * 3, len(data) // 2, 2880 + 100):
        truncated = tmp_path / f"cut{cut}.fits"
        truncated.write_bytes(data[:cut])
        with pytest.raises(CatalogError, match=f"{truncated}.*(truncated|not a readable|missing)"):
            read_all(truncated)


def test_corrupt_bytes_inside_a_header_are_refused(tmp_path, small_catalog):
    data = bytearray(small_catalog.read_bytes())
    position = data.index(b"XTENSION")
    data[position:position + 80] = b"\xff" * 80
    broken = tmp_path / "corrupt.fits"
    broken.write_bytes(bytes(data))
    with pytest.raises(CatalogError, match="corrupt.fits"):
        read_all(broken)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(CatalogError, match="nope.fits: no such file"):
        Catalog(tmp_path / "nope.fits")


# -- stamp policies ----------------------------------------------------------------
def test_crop_policy_takes_the_centre(tmp_path):
    big = np.arange(48 * 48, dtype=np.float32).reshape(1, 48, 48)
    path = write_raw_catalog(tmp_path / "big.fits", object_columns([1], [0], [1]),
                             frame_columns([1], [0.0], ["g"], big))
    (chunk,) = read_all(path, stamp_policy="crop")
    np.testing.assert_array_equal(chunk.frames[0], big[0, 8:40, 8:40])


def test_pad_policy_centres_and_fills_with_the_stamp_median(tmp_path):
    small = np.arange(20 * 20, dtype=np.float32).reshape(1, 20, 20)
    path = write_raw_catalog(tmp_path / "small.fits", object_columns([1], [0], [1]),
                             frame_columns([1], [0.0], ["g"], small))
    (chunk,) = read_all(path, stamp_policy="pad")
    np.testing.assert_array_equal(chunk.frames[0, 6:26, 6:26], small[0])
    assert chunk.frames[0, 0, 0] == np.median(small)
    with pytest.raises(CatalogError, match="use --stamp-policy pad"):
        Catalog(path, stamp_policy="crop")


# -- bad input: per-object problems under the policies ----------------------------
def test_flag_policy_keeps_going_and_says_why(tmp_path):
    chunks = read_all(problem_catalog(tmp_path), on_invalid="flag")
    status = {}
    for chunk in chunks:
        for i in range(len(chunk)):
            status.setdefault(int(chunk.object_ids[i]), []).append(chunk.status(i))
    assert status[1] == ["ok", "flagged:duplicate_id"]
    assert status[3] == ["flagged:no_epochs"]
    assert status[4] == ["flagged:epoch_rows_out_of_range"]
    assert status[5] == ["flagged:epoch_rows_belong_to_another_object"]
    assert status[6] == ["flagged:no_usable_frames;unknown_band_frames=1(q)"]
    assert status[7] == ["flagged:all_frames_mostly_bad;bad_pixels=1024;mostly_bad_frames_dropped=1"]
    assert status[8] == ["ok;bad_pixels=64"]
    # flagged objects carry no frames
    for chunk in chunks:
        counts = np.diff(chunk.offsets)
        for i in range(len(chunk)):
            assert (counts[i] == 0) == bool(chunk.invalid[i])


def test_warn_policy_warns_one_line_per_object(tmp_path):
    with pytest.warns(UserWarning) as record:
        read_all(problem_catalog(tmp_path), on_invalid="warn")
    messages = [str(w.message) for w in record]
    assert len(messages) == 6
    assert all("problems.fits: OBJECTS: object" in m and "\n" not in m for m in messages)


def test_raise_policy_stops_at_the_first_problem_naming_the_object(tmp_path):
    with pytest.raises(CatalogError, match=r"problems.fits: OBJECTS: object 1: duplicate id"):
        read_all(problem_catalog(tmp_path), on_invalid="raise")


def test_summary_of_problems(tmp_path):
    with Catalog(problem_catalog(tmp_path)) as catalog:
        summary = summarise(catalog)
    assert summary.n_invalid == 6
    assert summary.notes["bad_pixels"] == 2 and summary.notes["unknown_band_frames"] == 1
    assert summary.examples["no_epochs"] == ["3"]


# -- writer -------------------------------------------------------------------------
def test_writer_leaves_nothing_behind_on_error(tmp_path):
    target = tmp_path / "out.fits"
    with pytest.raises(UsageError, match="stamps must have shape"):
        with CatalogWriter(target, BANDS, photometry=PHOTOMETRY) as writer:
            writer.add_object(1, mjd=[0.0], stamps=np.zeros((1, 32, 32)), bands=["g"])
            writer.add_object(2, mjd=[0.0], stamps=np.zeros((1, 31, 32)), bands=["g"])
    assert os.listdir(tmp_path) == []


def test_writer_refuses_to_overwrite_and_bad_values(tmp_path, small_catalog):
    with pytest.raises(UsageError, match="exists already"):
        CatalogWriter(small_catalog, BANDS, photometry=PHOTOMETRY)
    with CatalogWriter(tmp_path / "w.fits", BANDS, photometry=PHOTOMETRY) as writer:
        with pytest.raises(UsageError, match="must be an integer"):
            writer.add_object("x", mjd=[0.0], stamps=np.zeros((1, 32, 32)), bands=["g"])
        with pytest.raises(UsageError, match="not among"):
            writer.add_object(1, mjd=[0.0], stamps=np.zeros((1, 32, 32)), bands=["y"])
        with pytest.raises(UsageError, match="mjd must be finite"):
            writer.add_object(1, mjd=[np.nan], stamps=np.zeros((1, 32, 32)), bands=["g"])
        with pytest.raises(UsageError, match=r"mjd must be finite times within \+-1e\+06 days"):
            writer.add_object(1, mjd=[-2e6], stamps=np.zeros((1, 32, 32)), bands=["g"])
        writer.add_object(1, mjd=[0.0], stamps=np.zeros((1, 32, 32)), bands=["g"])
        with pytest.raises(UsageError, match="written already"):
            writer.add_object(1, mjd=[0.0], stamps=np.zeros((1, 32, 32)), bands=["g"])
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []


def test_written_file_is_valid_fits_with_provenance(small_catalog):
    with fits.open(small_catalog) as hdul:
        hdul.verify("exception")
        assert hdul[0].header["SOURCE"] == "tests"
        assert hdul["EPOCHS"].header["NAXIS2"] == 30
        assert hdul["EPOCHS"].columns["STAMP"].dim == "(32,32)"


def test_reading_memory_is_bounded_by_the_chunk_not_the_catalog(tmp_path):
    import tracemalloc

    def peak_bytes(n_objects: int) -> int:
        path = write_small_catalog(tmp_path / f"c{n_objects}.fits", n_objects=n_objects, epochs=8)
        with Catalog(path) as catalog:
            tracemalloc.start()
            frames = 0
            for chunk in catalog.iter_chunks(max_objects=8):
                frames += chunk.frames.shape[0]
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        assert frames == n_objects * 8
        return peak

    small, large = peak_bytes(40), peak_bytes(400)  # 1.3 MB vs 13 MB of stamps
    chunk_bytes = 8 * 8 * 32 * 32 * 4
    assert large < 4 * chunk_bytes
    assert large < 1.5 * small


def test_written_file_gets_ordinary_permissions(tmp_path):
    previous = os.umask(0o022)
    try:
        path = write_small_catalog(tmp_path / "perm.fits", n_objects=1, epochs=1)
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o644


def test_reading_object_ranges_gives_the_same_as_reading_everything(tmp_path):
    path = write_small_catalog(tmp_path / "c.fits", n_objects=9, epochs=3)
    with Catalog(path) as catalog:
        whole = np.concatenate([c.frames for c in catalog.iter_chunks(max_objects=4)])
        parts = [c for a, b in ((0, 2), (2, 7), (7, 9)) for c in catalog.iter_chunks(max_objects=4, start=a, stop=b)]
        with pytest.raises(UsageError, match="not within the catalog's 0:9"):
            next(catalog.iter_chunks(start=5, stop=10))
    assert np.concatenate([c.object_ids for c in parts]).tolist() == list(range(100, 109))
    np.testing.assert_array_equal(np.concatenate([c.frames for c in parts]), whole)


# -- rows no object owns, ranges that overlap or overflow ------------------------------
ORPHANS = (r"orphans.fits: EPOCHS: 3 row\(s\) belong to no object \(rows 2..3, OBJECT_ID 9, and 1 more run\(s\) "
           r"of rows\): every row must lie in one object's OBJECTS.FIRST_EPOCH..FIRST_EPOCH\+N_EPOCHS-1 range")


@pytest.mark.parametrize("policy", ["flag", "warn"])
def test_rows_of_no_object_are_a_catalog_warning_and_a_summary_problem(tmp_path, policy):
    from convention_rt.catalog import CatalogWarning

    with pytest.warns(CatalogWarning, match=ORPHANS) as record:
        catalog = Catalog(orphan_catalog(tmp_path), on_invalid=policy)
    with catalog:
        summary = summarise(catalog)
    assert len(record) == 1 and "\n" not in str(record[0].message)
    assert len(summary.problems) == 1 and summary.problems == catalog.problems
    assert summary.n_invalid == 0 and not summary.ok  # the objects themselves are fine


def test_rows_of_no_object_stop_the_read_under_raise(tmp_path):
    path = orphan_catalog(tmp_path)
    with pytest.raises(CatalogError, match=ORPHANS) as info:
        Catalog(path, on_invalid="raise")
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


def test_a_catalog_whose_rows_all_have_an_owner_has_no_problem(small_catalog):
    with Catalog(small_catalog, on_invalid="raise") as catalog:
        summary = summarise(catalog)
    assert catalog.problems == [] and summary.ok


def test_a_single_row_without_owner_at_the_end_is_named(tmp_path):
    path = write_raw_catalog(tmp_path / "tail.fits", object_columns([1], [0], [1]),
                             frame_columns([1, 4], [0.0, 1.0], ["g", "g"], np.zeros((2, 32, 32), np.float32)))
    message = r"tail.fits: EPOCHS: 1 row\(s\) belong to no object \(rows 1, OBJECT_ID 4\)"
    with pytest.raises(CatalogError, match=message):
        Catalog(path, on_invalid="raise")


def test_overlapping_ranges_flag_the_object_that_reaches_into_another(tmp_path):
    stamps = np.zeros((4, 32, 32), np.float32)
    # object 1 owns rows 0-2; object 2 claims rows 2-3, but row 2 is object 1's
    path = write_raw_catalog(tmp_path / "overlap.fits", object_columns([1, 2], [0, 2], [3, 2]),
                             frame_columns([1, 1, 1, 2], np.arange(4.0), ["g"] * 4, stamps))
    (chunk,) = read_all(path)
    assert [chunk.status(i) for i in range(2)] == ["ok", "flagged:epoch_rows_belong_to_another_object"]
    with pytest.raises(CatalogError, match="overlap.fits: OBJECTS: object 2: epoch rows belong to another object"):
        read_all(path, on_invalid="raise")


def test_ranges_that_would_overflow_int64_are_out_of_range_not_a_crash(tmp_path):
    big = 2**63 - 1
    objects = object_columns([1, 2, 3, 4, 5, 6], [0, 2**62, big, -(2**63), 1, -5],
                             [1, 2**62, big, 5, -3, big])
    path = write_raw_catalog(tmp_path / "huge.fits", objects,
                             frame_columns([1], [0.0], ["g"], np.zeros((1, 32, 32), np.float32)))
    chunks = read_all(path)  # filterwarnings=error: an overflow warning would fail here
    status = [c.status(i) for c in chunks for i in range(len(c))]
    assert status == ["ok"] + ["flagged:epoch_rows_out_of_range"] * 5


# -- files that are not a plain catalog ---------------------------------------------------
def compressed(kind: str, data: bytes, path: Path) -> Path:
    import bz2
    import gzip
    import lzma
    import zipfile

    if kind == "zip":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("catalog.fits", data)
        return path
    packers = {"stored gzip": lambda d: gzip.compress(d, compresslevel=0),  # deflate without compression
               "gzip": lambda d: gzip.compress(d, compresslevel=9), "bzip2": bz2.compress, "xz": lzma.compress}
    path.write_bytes(packers[kind](data))
    return path


@pytest.mark.parametrize(("kind", "named"), [("stored gzip", "gzip"), ("gzip", "gzip"), ("bzip2", "bzip2"),
                                             ("xz", "xz"), ("zip", "zip")])
def test_compressed_catalogs_are_refused_in_one_line(tmp_path, small_catalog, kind, named):
    path = compressed(kind, small_catalog.read_bytes(), tmp_path / "c.fits.z")
    with pytest.raises(CatalogError, match=rf"c.fits.z: is a {named}-compressed file: decompress it first "
                                           r"\(e.g. \S+.* c.fits.z\); catalogs are read by random access") as info:
        Catalog(path)
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


def test_a_named_pipe_is_not_a_regular_file(tmp_path):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no named pipes on this system")
    pipe = tmp_path / "pipe.fits"
    os.mkfifo(pipe)  # opening it for reading must not wait for a writer
    with pytest.raises(CatalogError, match=r"pipe.fits: is a named pipe \(FIFO\), not a regular file"):
        Catalog(pipe)


def test_a_folder_is_named_as_such(tmp_path):
    with pytest.raises(CatalogError, match="is a folder, not a catalog file"):
        Catalog(tmp_path)


def one_object(**changes) -> tuple[list[fits.Column], list[fits.Column]]:
    objects = object_columns([1], [0], [2])
    epochs = frame_columns([1, 1], [0.0, 1.0], ["g", "r"], np.zeros((2, 32, 32), np.float32))
    for table, name, column in changes.values():
        columns = objects if table == "OBJECTS" else epochs
        names = [c.name for c in columns]
        if name in names:
            columns[names.index(name)] = column
        else:
            columns.append(column)
    return objects, epochs


TWO_VALUES = [
    ("OBJECTS", "OBJECT_ID", fits.Column("OBJECT_ID", "2K", array=np.ones((1, 2), np.int64)), "TFORM 2K"),
    ("OBJECTS", "RA", fits.Column("RA", "2D", array=np.zeros((1, 2))), "TFORM 2D"),
    ("OBJECTS", "DEC", fits.Column("DEC", "2D", array=np.zeros((1, 2))), "TFORM 2D"),
    ("OBJECTS", "FIRST_EPOCH", fits.Column("FIRST_EPOCH", "2K", array=np.zeros((1, 2), np.int64)), "TFORM 2K"),
    ("OBJECTS", "N_EPOCHS", fits.Column("N_EPOCHS", "2K", array=np.full((1, 2), 2, np.int64)), "TFORM 2K"),
    ("OBJECTS", "LABEL", fits.Column("LABEL", "16A", dim="(8,2)", array=np.array([["a", "b"]])),
     "TFORM 16A, TDIM \\(8,2\\)"),
    ("EPOCHS", "OBJECT_ID", fits.Column("OBJECT_ID", "2K", array=np.ones((2, 2), np.int64)), "TFORM 2K"),
    ("EPOCHS", "MJD", fits.Column("MJD", "2D", array=np.zeros((2, 2))), "TFORM 2D"),
    ("EPOCHS", "BAND", fits.Column("BAND", "16A", dim="(8,2)", array=np.array([["g", "r"], ["g", "r"]])),
     "TFORM 16A, TDIM \\(8,2\\)"),
]


@pytest.mark.parametrize(("table", "name", "column", "tform"), TWO_VALUES, ids=[f"{t}.{n}" for t, n, *_ in TWO_VALUES])
def test_columns_with_several_values_per_row_are_named(tmp_path, table, name, column, tform):
    objects, epochs = one_object(change=(table, name, column))
    path = write_raw_catalog(tmp_path / "two.fits", objects, epochs)
    with pytest.raises(CatalogError, match=rf"two.fits: {table}.{name}: must hold one value per row, got 2 "
                                           rf"\({tform}\)") as info:
        read_all(path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("table", "extra", "duplicate"), [
    ("OBJECTS", fits.Column("RAX", "D", array=np.zeros(1)), "RA"),
    ("EPOCHS", fits.Column("MJX", "D", array=np.zeros(2)), "MJD"),
    ("EPOCHS", fits.Column("MJX", "D", array=np.zeros(2)), "mjd"),  # names are case-insensitive
])
def test_duplicated_column_names_are_named(tmp_path, table, extra, duplicate):
    objects, epochs = one_object(add=(table, extra.name, extra))
    path = rename_column(write_raw_catalog(tmp_path / "dup.fits", objects, epochs), extra.name, duplicate)
    with pytest.raises(CatalogError, match=rf"dup.fits: {table}.{duplicate.upper()}: column name appears twice "
                                           r"\(TTYPE\d and TTYPE\d; names are case-insensitive\): rename or remove"):
        read_all(path)


def test_non_ascii_bytes_in_a_string_column_are_refused_with_the_row(tmp_path):
    objects = object_columns([1, 2], [0, 1], [1, 1]) + [
        fits.Column("LABEL", "8A", array=np.array([b"SNIa", "SNé".encode()]))]
    path = write_raw_catalog(tmp_path / "text.fits", objects,
                             frame_columns([1, 2], [0.0, 1.0], ["g", "r"], np.zeros((2, 32, 32), np.float32)))
    with pytest.raises(CatalogError, match=r"text.fits: OBJECTS.LABEL: row 1 holds non-ASCII bytes .*: FITS "
                                           "character columns hold ASCII text"):
        read_all(path)


# -- a file truncated while it is read ----------------------------------------------------
TRUNCATE_BETWEEN_CHUNKS = """
import os, sys
from convention_rt import catalog

path = sys.argv[2]
original = catalog.Catalog._read_epochs
calls = []

def read_then_truncate(self, start, stop):
    if calls:  # another program cuts the file after the first chunk
        os.truncate(path, os.path.getsize(path) // 2)
    calls.append(start)
    return original(self, start, stop)

catalog.Catalog._read_epochs = read_then_truncate
if sys.argv[1] == "cli":
    from convention_rt.cli import main
    sys.exit(main(["validate", path]))
try:
    with catalog.Catalog(path) as opened:
        for chunk in opened.iter_chunks(max_objects=2):
            pass
except catalog.CatalogError as error:
    print(error, file=sys.stderr)
    sys.exit(1)
"""


@pytest.mark.parametrize("through", ["library", "cli"])
def test_a_file_truncated_between_chunks_gives_a_clean_error_not_a_crash(tmp_path, through):
    import subprocess
    import sys

    path = write_small_catalog(tmp_path / "shrinking.fits", n_objects=1100 if through == "cli" else 6, epochs=2)
    done = subprocess.run([sys.executable, "-c", TRUNCATE_BETWEEN_CHUNKS, through, str(path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, (done.returncode, done.stderr)  # SIGBUS would be -7
    lines = done.stderr.strip().splitlines()
    prefix = "error: " if through == "cli" else ""
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert lines[0].startswith(f"{prefix}{path}: ") and "the file changed while being read" in lines[0]
    assert "truncated or rewrote it" in lines[0]


def test_reading_after_close_is_a_usage_error(small_catalog):
    catalog = Catalog(small_catalog)
    catalog.close()
    with pytest.raises(UsageError, match="the catalog is closed"):
        next(catalog.iter_chunks())


# -- writer: text the format cannot hold, and clean-up on every failure ------------------
@pytest.mark.parametrize(("object_id", "label", "message"), [
    ("ZTF21é", "", r"object id 'ZTF21é' holds 'é', which a FITS character column cannot store"),
    ("ZTF21a", "SNé", r"object ZTF21a: label 'SNé' holds 'é'"),
    ("ZTF\t21", "", r"object id 'ZTF\\t21' holds '\\t'"),
    (" ZTF21", "", r"object id ' ZTF21' must have 1..16 characters, without spaces at either end"),
])
def test_writer_refuses_text_a_fits_column_cannot_hold_and_leaves_nothing(tmp_path, object_id, label, message):
    with pytest.raises(UsageError, match=message) as info:
        with CatalogWriter(tmp_path / "w.fits", BANDS, photometry=PHOTOMETRY, id_width=16) as writer:
            writer.add_object("ZTF20a", mjd=[0.0], stamps=np.zeros((1, 32, 32)), bands=["g"], label="AGN")
            writer.add_object(object_id, mjd=[0.0], stamps=np.zeros((1, 32, 32)), bands=["g"], label=label)
    assert "\n" not in str(info.value)
    assert os.listdir(tmp_path) == []


def test_writer_text_round_trips_exactly(tmp_path):
    text = "".join(chr(c) for c in range(0x21, 0x7F))[:16]
    with CatalogWriter(tmp_path / "w.fits", BANDS, photometry=PHOTOMETRY, id_width=16,
                       label_width=16) as writer:
        writer.add_object(text, mjd=[0.0], stamps=np.zeros((1, 32, 32)), bands=["g"], label="a b~")
    (chunk,) = read_all(tmp_path / "w.fits")
    assert chunk.object_ids.tolist() == [text] and chunk.labels.tolist() == ["a b~"]


def test_writer_refuses_integer_ids_beyond_int64(tmp_path):
    with CatalogWriter(tmp_path / "w.fits", BANDS, photometry=PHOTOMETRY) as writer:
        with pytest.raises(UsageError, match=r"object id 9223372036854775808 does not fit in int64 .*id_width=20"):
            writer.add_object(2**63, mjd=[0.0], stamps=np.zeros((1, 32, 32)), bands=["g"])
        writer.add_object(2**63 - 1, mjd=[0.0], stamps=np.zeros((1, 32, 32)), bands=["g"])
        writer.add_object(-(2**63), mjd=[0.0], stamps=np.zeros((1, 32, 32)), bands=["g"])
    ids = np.concatenate([c.object_ids for c in read_all(tmp_path / "w.fits")])
    assert ids.tolist() == [2**63 - 1, -(2**63)]


def test_writer_refuses_non_ascii_band_names_before_writing(tmp_path):
    with pytest.raises(UsageError, match=r"band name 'ɡ' holds 'ɡ'"):
        CatalogWriter(tmp_path / "w.fits", ["ɡ", "r"], photometry=PHOTOMETRY)
    assert os.listdir(tmp_path) == []


def test_writer_removes_its_temporary_file_when_finishing_fails(tmp_path, monkeypatch):
    writer = CatalogWriter(tmp_path / "w.fits", BANDS, photometry=PHOTOMETRY)
    writer.add_object(1, mjd=[0.0], stamps=np.zeros((1, 32, 32)), bands=["g"])
    assert len(os.listdir(tmp_path)) == 1  # the temporary file

    def broken() -> None:
        raise OSError("no space left on device")

    monkeypatch.setattr(writer, "_objects_hdu", broken)
    with pytest.raises(OSError, match="no space left"):
        writer.close()
    assert os.listdir(tmp_path) == []


def test_pad_policy_fills_with_the_median_of_good_pixels_only() -> None:
    from convention_rt.catalog import _pad_with_background

    stamps = np.full((2, 20, 20), 5.0, dtype=np.float32)
    stamps[0, :12] = -1e30  # sentinels, most of the stamp: bad pixels
    stamps[1, :6] = np.inf
    padded = _pad_with_background(stamps, 32)
    assert padded.shape == (2, 32, 32)
    assert np.all(padded[:, 0, 0] == 5.0)


@pytest.mark.parametrize(("argument", "value", "message"), [
    ("stamp_shape", (0, 0), r"stamp_shape must be \(height, width\) in pixels, each at least 1, got \(0, 0\)"),
    ("stamp_shape", (-32, -32), r"stamp_shape must be .* got \(-32, -32\)"),
    ("stamp_shape", (32,), r"stamp_shape must be .* got \(32,\)"),
    ("id_width", 0, r"id_width must be a whole number of at least 1 \(characters of string object ids"),
    ("id_width", -5, r"id_width must be a whole number of at least 1 .* got -5"),
    ("label_width", -1, r"label_width must be a whole number of at least 0 .* got -1"),
    ("label_width", "16", r"label_width must be a whole number of at least 0 .* got '16'"),
])
def test_writer_refuses_impossible_sizes_before_writing(tmp_path, argument, value, message):
    with pytest.raises(UsageError, match=message):
        CatalogWriter(tmp_path / "w.fits", BANDS, photometry=PHOTOMETRY, **{argument: value})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("policy", ["error", "pad", "crop"])
def test_a_catalog_of_empty_stamps_is_refused_naming_the_stamp_column(tmp_path, policy):
    path = write_raw_catalog(tmp_path / "empty.fits", object_columns([1], [0], [2]),
                             frame_columns([1, 1], [59000.0, 59001.0], ["g", "r"], np.zeros((2, 0, 0), np.float32),
                                           stamp_format="0E"))
    with pytest.raises(CatalogError, match=rf"^{path}: EPOCHS\.STAMP: stamps must be at least 1x1 pixels, got "
                                           rf"0x0 \(TDIM '\(0,0\)', TFORM 0E\)"):
        read_all(path, stamp_policy=policy)


def test_times_beyond_the_plausible_range_flag_their_object_without_a_warning(tmp_path):
    """pytest turns warnings into errors: an overflow while casting the times would fail here."""
    stamps = np.random.default_rng(0).normal(50.0, 5.0, size=(6, 32, 32)).astype(np.float32)
    mjd = [59000.0, 1e300, 59000.0, 59001.0, -1.5e6, 59000.0]
    path = write_raw_catalog(tmp_path / "t.fits", object_columns([1, 2, 3], [0, 2, 4], [2, 2, 2]),
                             frame_columns([1, 1, 2, 2, 3, 3], mjd, ["g"] * 6, stamps))
    statuses = [c.status(i) for c in read_all(path, on_invalid="flag") for i in range(len(c))]
    assert statuses == ["flagged:mjd_out_of_range", "ok", "flagged:mjd_out_of_range"]
    with pytest.raises(CatalogError, match=r"t\.fits: OBJECTS: object 1: mjd out of range"):
        read_all(path, on_invalid="raise")


@pytest.mark.parametrize("name", ["OBJECTS", "EPOCHS"])
def test_a_table_hdu_given_twice_is_refused_naming_both(tmp_path, small_catalog, name):
    with fits.open(small_catalog) as hdul:
        copy = hdul[name].copy()
        if name == "OBJECTS":
            copy.data["N_EPOCHS"][:] = 1  # other content: which one would be read is not for the reader to guess
        index = [h.name for h in hdul].index(name)
        fits.HDUList([h.copy() for h in hdul] + [copy]).writeto(tmp_path / "twice.fits")
    with pytest.raises(CatalogError, match=rf"twice\.fits: {name}: 2 HDUs are named {name} \(HDUs {index} and 3\): "
                                           r"a catalog has one; remove or rename the others"):
        read_all(tmp_path / "twice.fits")
