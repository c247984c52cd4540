"""The catalog format: round trips, streaming, and every kind of bad input."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from conftest import BANDS, frame_columns, object_columns, write_raw_catalog, write_small_catalog
from convention_rt.catalog import Catalog, CatalogWriter, summarise
from convention_rt.errors import CatalogError, UsageError


def read_all(path: Path, **options):
    with Catalog(path, **options) as catalog:
        return list(catalog.iter_chunks(max_objects=2))


def test_round_trip_gives_back_time_ordered_native_frames(tmp_path):
    rng = np.random.default_rng(4)
    stamps = rng.normal(size=(4, 32, 32)).astype(np.float32)
    mjd = np.array([3.0, 1.0, 2.0, 0.5])
    with CatalogWriter(tmp_path / "c.fits", BANDS) as writer:
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
    with CatalogWriter(tmp_path / "cube.fits", BANDS, layout="CUBES", id_width=16) as writer:
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
def stamp_cols(n=1, side=32):
    return frame_columns(np.ones(n), np.arange(n, dtype=float), ["g"] * n,
                         np.zeros((n, side, side), np.float32))


#: (builder, expected message) of every malformed-file case; test_cli_classify reuses them.
BAD_FILES = [
    (lambda p: write_raw_catalog(p, object_columns([1], [0], [1]), stamp_cols(), with_objects=False),
     "missing the OBJECTS HDU"),
    (lambda p: write_raw_catalog(p, object_columns([1], [0], [1]), stamp_cols(), with_epochs=False),
     "missing the EPOCHS HDU"),
    (lambda p: write_raw_catalog(p, object_columns([1], [0], [1])[:4], stamp_cols()),
     "OBJECTS.N_EPOCHS: missing column"),
    (lambda p: write_raw_catalog(p, object_columns([1], [0], [1]), stamp_cols()[:3]),
     "EPOCHS.STAMP: missing column"),
    (lambda p: write_raw_catalog(p, object_columns([1], [0], [1]),
                                 frame_columns([1], [0.0], ["g"], np.zeros((1, 32, 32)),
                                               stamp_format="1024D")),
     "EPOCHS.STAMP: must be float32"),
    (lambda p: write_raw_catalog(p, object_columns([1], [0], [1]),
                                 frame_columns([1], [0.0], ["g"], np.zeros((1, 32, 32), np.float32),
                                               mjd_format="E")),
     "EPOCHS.MJD: must be float64"),
    (lambda p: write_raw_catalog(p, object_columns([1], [0], [1]),
                                 frame_columns([1], [0.0], ["g"], np.zeros((1, 32, 32), np.int16),
                                               stamp_format="1024I")),
     "EPOCHS.STAMP: must be float32"),
    (lambda p: write_raw_catalog(p, object_columns([1], [0], [1]), stamp_cols(side=48)),
     "stamps are 48x48, the model needs 32x32 \\(use --stamp-policy crop\\)"),
    (lambda p: write_raw_catalog(p, object_columns([1], [0], [1]), stamp_cols(side=20)),
     "stamps are 20x20, the model needs 32x32 \\(use --stamp-policy pad\\)"),
    (lambda p: write_raw_catalog(p, object_columns([], [], []), stamp_cols()),
     "OBJECTS: the catalog has no objects"),
    (lambda p: write_raw_catalog(p, object_columns([1], [0], [1]), stamp_cols(),
                                 primary_header={"CRTVER": 99}), "format version 99"),
    (lambda p: write_raw_catalog(p, object_columns([1], [0], [1]), stamp_cols(),
                                 epochs_header={"BANDS": ""}), "EPOCHS.BANDS: keyword BANDS"),
    (lambda p: write_raw_catalog(p, object_columns([1], [0], [1]), stamp_cols(),
                                 epochs_header={"LAYOUT": "MOVIE"}), "LAYOUT must be"),
    (lambda p: fits.HDUList([fits.PrimaryHDU()]).writeto(p), "not a convention-rt catalog"),
    (lambda p: Path(p).write_bytes(b"SIMPLE  = this is not FITS" * 200), "not a readable FITS file"),
    (lambda p: Path(p).write_bytes(b""), "not a readable FITS file"),
]


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
def problem_catalog(tmp_path: Path) -> Path:
    """Objects 1..7: ok, duplicate of 1, no epochs, rows out of range, rows of another
    object, unknown band only, and all-NaN stamps; plus an ok object with a few NaNs."""
    stamps = np.random.default_rng(0).normal(size=(9, 32, 32)).astype(np.float32)
    stamps[5] = np.nan
    stamps[6, :2, :] = np.inf
    epoch_ids = [1, 1, 5, 6, 6, 7, 8, 8, 8]
    bands = ["g", "r", "g", "g", "q", "r", "i", "i", "g"]
    objects = object_columns([1, 1, 3, 4, 5, 6, 7, 8], [0, 0, 0, 0, 2, 4, 5, 6],
                             [2, 2, 0, 50, 2, 1, 1, 2])
    return write_raw_catalog(tmp_path / "problems.fits", objects,
                             frame_columns(epoch_ids, np.arange(9.0), bands, stamps))


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
        with CatalogWriter(target, BANDS) as writer:
            writer.add_object(1, mjd=[0.0], stamps=np.zeros((1, 32, 32)), bands=["g"])
            writer.add_object(2, mjd=[0.0], stamps=np.zeros((1, 31, 32)), bands=["g"])
    assert os.listdir(tmp_path) == []


def test_writer_refuses_to_overwrite_and_bad_values(tmp_path, small_catalog):
    with pytest.raises(UsageError, match="exists already"):
        CatalogWriter(small_catalog, BANDS)
    with CatalogWriter(tmp_path / "w.fits", BANDS) as writer:
        with pytest.raises(UsageError, match="must be an integer"):
            writer.add_object("x", mjd=[0.0], stamps=np.zeros((1, 32, 32)), bands=["g"])
        with pytest.raises(UsageError, match="not among"):
            writer.add_object(1, mjd=[0.0], stamps=np.zeros((1, 32, 32)), bands=["y"])
        with pytest.raises(UsageError, match="mjd must be finite"):
            writer.add_object(1, mjd=[np.nan], stamps=np.zeros((1, 32, 32)), bands=["g"])
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
