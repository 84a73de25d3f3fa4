"""Tests of the event tables, validation, windows, readers (data.py) and the embedded benchmark.

Pure numpy / scipy / pandas / uproot: nothing here imports TensorFlow or zfit, so this file
runs in a few seconds. Tests on the real data in ``../shared/data`` skip when it is absent.
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path

import numpy as np
import pytest

from zfit_gbi.benchmark import ResonantBenchmark
from zfit_gbi.data import (
    CMS_DIMUON_FEATURES,
    LHCO_COLUMNS,
    DataError,
    Events,
    Windows,
    box_from_data,
    concatenate,
    read_cms_dimuon,
    read_events,
    read_lhco,
    validate,
)

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
LHCO_DIR = DATA / "lhco_rnd_sr"
CMS_DIR = DATA / "cms_dimuon"


def _shared_file(folder: Path, name: str) -> Path:
    """The path of a shared data file, or skip the test saying what is missing."""
    if not folder.is_dir():
        pytest.skip(f"shared data folder {folder} is absent; real-data tests need ../shared/data")
    path = folder / name
    if not path.is_file():
        pytest.skip(f"shared data file {path} is absent")
    return path


def _events(n: int = 50, seed: int = 0, columns: tuple[str, ...] = ("a", "b", "c")) -> Events:
    rng = np.random.default_rng(seed)
    return Events(rng.random((n, len(columns))), columns, source="unit-test")


# ---------------------------------------------------------------------------------------------
# Events
# ---------------------------------------------------------------------------------------------


def test_events_basic_properties():
    ev = Events([[1, 2], [3, 4], [5, 6]], ["x", "y"], weights=[1.0, 2.0, 0.5], source="s")
    assert ev.values.dtype == np.float64
    assert ev.columns == ("x", "y")
    assert len(ev) == 3
    np.testing.assert_array_equal(ev["y"], [2.0, 4.0, 6.0])
    np.testing.assert_array_equal(ev.array(["y", "x"]), [[2, 1], [4, 3], [6, 5]])
    assert ev.sum_weights == pytest.approx(3.5)
    sel = ev.select(np.array([True, False, True]))
    np.testing.assert_array_equal(sel.weights, [1.0, 0.5])
    np.testing.assert_array_equal(sel["x"], [1.0, 5.0])
    sub = ev.with_columns(["y"])
    assert sub.columns == ("y",)
    assert sub.values.shape == (3, 1)
    assert "weighted" in repr(ev)


def test_events_unweighted_sum_is_count():
    ev = _events(17)
    assert ev.weights is None
    assert ev.sum_weights == 17.0


@pytest.mark.parametrize("values", [np.ones(5), np.ones((2, 3, 4)), np.float64(1.0)])
def test_events_wrong_ndim(values):
    with pytest.raises(DataError, match=r"src-x: events must be a 2-D array"):
        Events(values, ("a",), source="src-x")


def test_events_wrong_number_of_names():
    with pytest.raises(
        DataError, match=r"src-y: 3 columns in the data but 2 names given \(\['a', 'b'\]\)"
    ):
        Events(np.ones((4, 3)), ("a", "b"), source="src-y")


def test_events_duplicate_names():
    with pytest.raises(DataError, match=r"duplicate column names \['a'\]"):
        Events(np.ones((4, 3)), ("a", "b", "a"))


@pytest.mark.parametrize("weights", [np.ones(4), np.ones((3, 1)), np.ones(2)])
def test_events_bad_weights_shape(weights):
    with pytest.raises(DataError, match=r"weights must have shape \(3,\)"):
        Events(np.ones((3, 2)), ("a", "b"), weights=weights)


def test_events_nan_weights():
    with pytest.raises(DataError, match=r"weights contain NaN or inf \(2 events\)"):
        Events(np.ones((4, 2)), ("a", "b"), weights=[1.0, np.nan, np.inf, 1.0])


def test_events_unknown_column_lists_available():
    ev = _events()
    with pytest.raises(
        DataError, match=r"unit-test: no column 'mjj'; available columns: \['a', 'b', 'c'\]"
    ):
        ev["mjj"]
    with pytest.raises(DataError, match=r"no column 'z'"):
        ev.array(["a", "z"])


def test_from_dict_round_trip_and_length_mismatch():
    ev = Events.from_dict({"p": [1, 2, 3], "q": np.array([4.0, 5.0, 6.0])}, source="d")
    assert ev.columns == ("p", "q")
    np.testing.assert_array_equal(ev["q"], [4.0, 5.0, 6.0])
    with pytest.raises(DataError, match=r"columns have different lengths \{'p': 3, 'q': 2\}"):
        Events.from_dict({"p": [1, 2, 3], "q": [1, 2]})


def test_concatenate():
    a, b = _events(5, seed=1), _events(7, seed=2)
    both = concatenate([a, b])
    assert len(both) == 12
    np.testing.assert_array_equal(both.values[5:], b.values)
    weighted = Events(b.values, b.columns, weights=np.full(7, 2.0))
    mixed = concatenate([a, weighted])
    assert mixed.sum_weights == pytest.approx(5 + 14)
    with pytest.raises(DataError, match=r"cannot concatenate .*columns \['x', 'y', 'z'\]"):
        concatenate([a, _events(3, columns=("x", "y", "z"))])
    with pytest.raises(DataError, match="nothing to concatenate"):
        concatenate([])


# ---------------------------------------------------------------------------------------------
# validate / box_from_data
# ---------------------------------------------------------------------------------------------


def test_validate_returns_requested_columns_in_order():
    ev = _events(20, columns=("a", "b", "label"))
    out = validate(ev, ["b", "a"], {"a": (0.0, 1.0), "b": (0.0, 1.0)})
    assert out.columns == ("b", "a")
    np.testing.assert_array_equal(out.values, ev.array(["b", "a"]))


def test_validate_nan_and_inf_name_column_and_count():
    values = np.random.default_rng(3).random((10, 3))
    values[2, 1] = np.nan
    values[5, 1] = np.inf
    values[7, 1] = -np.inf
    values[8, 2] = np.nan
    ev = Events(values, ("a", "b", "c"), source="file.npy")
    with pytest.raises(
        DataError, match=r"file\.npy \(data\): NaN or inf .*\{'b': 3, 'c': 1\} \(first at event 2\)"
    ):
        validate(ev, ["a", "b", "c"], what="data")
    # Only the requested columns are checked.
    out = validate(ev, ["a"])
    assert len(out) == 10


def test_validate_out_of_bounds_raises():
    values = np.random.default_rng(4).random((30, 2))
    values[[3, 9], 0] = [-0.5, 1.5]
    ev = Events(values, ("a", "b"), source="oob")
    with pytest.raises(
        DataError,
        match=r"oob \(events\): events outside the declared bounds: a: 2 events outside \[0, 1\]",
    ):
        validate(ev, ["a", "b"], {"a": (0.0, 1.0), "b": (0.0, 1.0)})


def test_validate_clip_drops_and_logs(caplog):
    values = np.random.default_rng(5).random((30, 2))
    values[[3, 9], 0] = [-0.5, 1.5]
    values[12, 1] = 2.0
    ev = Events(values, ("a", "b"), weights=np.arange(30.0), source="oob")
    with caplog.at_level(logging.WARNING, logger="zfit_gbi.data"):
        out = validate(ev, ["a", "b"], {"a": (0.0, 1.0), "b": (0.0, 1.0)}, clip=True)
    assert len(out) == 27
    assert np.all((out.values >= 0) & (out.values <= 1))
    np.testing.assert_array_equal(out.weights, np.delete(np.arange(30.0), [3, 9, 12]))
    assert "dropping 3 events" in caplog.text


def test_validate_clip_all_out_raises():
    ev = Events(np.full((4, 1), 5.0), ("a",), source="far")
    with pytest.raises(DataError, match=r"far \(events\): no events left inside the bounds"):
        validate(ev, ["a"], {"a": (0.0, 1.0)}, clip=True)


def test_validate_missing_columns():
    ev = _events()
    with pytest.raises(
        DataError, match=r"missing column\(s\) \['mjj', 'z'\]; the file has \['a', 'b', 'c'\]"
    ):
        validate(ev, ["a", "mjj", "z"])


def test_validate_empty_events():
    ev = Events(np.empty((0, 2)), ("a", "b"), source="empty.csv")
    with pytest.raises(DataError, match=r"empty\.csv \(signal simulation\): no events"):
        validate(ev, ["a"], what="signal simulation")


def test_box_from_data_margin():
    ev = Events.from_dict({"a": [0.0, 1.0, 0.5], "b": [2.0, 4.0, 3.0]})
    box = box_from_data(ev, ["a", "b"], margin=0.1)
    assert box["a"] == pytest.approx((-0.1, 1.1))
    assert box["b"] == pytest.approx((1.8, 4.2))


def test_box_from_data_zero_variance():
    ev = Events.from_dict({"a": [0.0, 1.0], "const": [3.0, 3.0]}, source="flat.csv")
    with pytest.raises(
        DataError, match=r"flat\.csv: column 'const' has zero variance \(all values 3\)"
    ):
        box_from_data(ev, ["a", "const"])


# ---------------------------------------------------------------------------------------------
# Windows
# ---------------------------------------------------------------------------------------------


def test_windows_sidebands_and_repr():
    w = Windows((2.9, 4.1), (3.3, 3.7))
    assert w.sidebands == ((2.9, 3.3), (3.7, 4.1))
    assert "sidebands=[2.9, 3.3] + [3.7, 4.1]" in repr(w)


def test_windows_inverted():
    with pytest.raises(DataError, match=r"window 'fit' = \[4.1, 2.9\] must have finite low < high"):
        Windows((4.1, 2.9), (3.3, 3.7))
    with pytest.raises(DataError, match=r"window 'signal_region' = \[3.7, 3.3\]"):
        Windows((2.9, 4.1), (3.7, 3.3))


@pytest.mark.parametrize("sr", [(2.9, 3.7), (3.3, 4.1), (2.5, 3.5), (3.5, 4.5), (2.0, 5.0)])
def test_windows_sr_not_strictly_inside(sr):
    with pytest.raises(DataError, match=r"must lie strictly inside the fit window \[2.9, 4.1\]"):
        Windows((2.9, 4.1), sr)


@pytest.mark.parametrize(
    ("fit", "sr", "name"),
    [
        ((math.nan, 4.1), (3.3, 3.7), "fit"),
        ((2.9, math.inf), (3.3, 3.7), "fit"),
        ((2.9, 4.1), (3.3, math.nan), "signal_region"),
    ],
)
def test_windows_non_finite(fit, sr, name):
    with pytest.raises(DataError, match=rf"window '{name}' = .* must have finite low < high"):
        Windows(fit, sr)


def test_windows_masks_and_counts_consistent():
    w = Windows((2.9, 4.1), (3.3, 3.7))
    rng = np.random.default_rng(6)
    m = np.concatenate([rng.uniform(2.5, 4.5, 5000), [2.9, 3.3, 3.7, 4.1, 2.8999, 4.1001]])
    ev = Events(m[:, None], ("mjj",), source="masses")
    fit, sr, sb = w.in_fit(m), w.in_signal_region(m), w.in_sidebands(m)
    # SR and sidebands partition the fit window.
    np.testing.assert_array_equal(fit, sr | sb)
    assert not np.any(sr & sb)
    assert np.all(fit[sr])
    counts = w.counts(ev, "mjj")
    assert counts["fit"] == counts["signal_region"] + counts["sidebands"]
    assert counts["fit"] == int(np.sum((m >= 2.9) & (m <= 4.1)))
    assert counts["signal_region"] == int(np.sum((m >= 3.3) & (m < 3.7)))
    parts = w.split(ev, "mjj")
    assert {k: len(v) for k, v in parts.items()} == counts
    assert np.all((parts["signal_region"]["mjj"] >= 3.3) & (parts["signal_region"]["mjj"] < 3.7))
    sbm = parts["sidebands"]["mjj"]
    assert np.all(((sbm >= 2.9) & (sbm < 3.3)) | ((sbm >= 3.7) & (sbm <= 4.1)))


@pytest.mark.parametrize(
    ("masses", "empty"),
    [
        ([3.0, 3.1, 3.8, 4.0], "signal_region"),
        ([3.4, 3.5, 3.6], "sidebands"),
        ([1.0, 2.0, 5.0], "fit"),
    ],
)
def test_windows_split_empty_region(masses, empty):
    w = Windows((2.9, 4.1), (3.3, 3.7))
    ev = Events(np.asarray(masses)[:, None], ("mjj",), source="tiny.npy")
    with pytest.raises(
        DataError, match=rf"tiny\.npy: the {empty} window is empty \(mjj of the data spans"
    ):
        w.split(ev, "mjj")


# ---------------------------------------------------------------------------------------------
# Readers: round trips
# ---------------------------------------------------------------------------------------------


def _write_ttree(f, name: str, branches: dict[str, np.ndarray]) -> None:
    """Write a TTree explicitly: with uproot >= 5.7 ``f[name] = {...}`` writes an RNTuple."""
    f.mktree(name, {k: v.dtype for k, v in branches.items()})
    f[name].extend(branches)


@pytest.fixture
def table() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {
        "a": rng.normal(size=40),
        "b": rng.random(40),
        "c": rng.integers(0, 5, 40).astype(float),
    }


def test_read_npy_round_trip(tmp_path, table):
    path = tmp_path / "ev.npy"
    arr = np.column_stack(list(table.values()))
    np.save(path, arr)
    ev = read_events(path, ["a", "b", "c"])
    assert ev.columns == ("a", "b", "c")
    np.testing.assert_array_equal(ev.values, arr)
    assert ev.source == str(path)


def test_read_csv_round_trip(tmp_path, table):
    pd = pytest.importorskip("pandas")
    path = tmp_path / "ev.csv"
    pd.DataFrame(table).to_csv(path, index=False)
    ev = read_events(path)
    assert ev.columns == ("a", "b", "c")
    for c in ("a", "b", "c"):
        np.testing.assert_allclose(ev[c], table[c], rtol=1e-15)
    sub = read_events(path, ["c", "a"])
    assert sub.columns == ("c", "a")
    np.testing.assert_allclose(sub.values, np.column_stack([table["c"], table["a"]]), rtol=1e-15)


def test_read_parquet_round_trip(tmp_path, table):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    path = tmp_path / "ev.parquet"
    pd.DataFrame(table).to_parquet(path)
    ev = read_events(path)
    assert ev.columns == ("a", "b", "c")
    np.testing.assert_array_equal(ev.values, np.column_stack(list(table.values())))
    sub = read_events(path, ["b"])
    np.testing.assert_array_equal(sub["b"], table["b"])


def test_read_root_round_trip(tmp_path, table):
    uproot = pytest.importorskip("uproot")
    path = tmp_path / "ev.root"
    with uproot.recreate(path) as f:
        _write_ttree(f, "events", {"a": table["a"], "b": table["b"]})
    ev = read_events(path)
    assert ev.columns == ("a", "b")
    np.testing.assert_array_equal(ev["a"], table["a"])
    np.testing.assert_array_equal(ev["b"], table["b"])
    assert ev.source == f"{path}:events"
    sub = read_events(path, ["b"], tree="events")
    assert sub.columns == ("b",)


# ---------------------------------------------------------------------------------------------
# Readers: errors
# ---------------------------------------------------------------------------------------------


def test_read_missing_file(tmp_path):
    path = tmp_path / "nothere.npy"
    with pytest.raises(DataError, match=re.escape(f"{path}: no such file")):
        read_events(path, ["a"])


def test_read_directory(tmp_path):
    with pytest.raises(DataError, match=re.escape(f"{tmp_path}: is a directory")):
        read_events(tmp_path)


def test_read_npy_without_columns(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.ones((5, 3)))
    with pytest.raises(
        DataError,
        match=re.escape(f"{path}: a .npy file has no column names; give `columns` (3 names)"),
    ):
        read_events(path)


def test_read_npy_wrong_number_of_names(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.ones((5, 3)))
    with pytest.raises(
        DataError,
        match=re.escape(f"{path}: the array has 3 columns but 2 names were given: ['a', 'b']"),
    ):
        read_events(path, ["a", "b"])


def test_read_npy_1d(tmp_path):
    path = tmp_path / "flat.npy"
    np.save(path, np.ones(7))
    with pytest.raises(
        DataError,
        match=re.escape(f"{path}: expected a 2-D array (n_events, n_columns), got shape (7,)"),
    ):
        read_events(path, ["a"])


def test_read_npy_truncated(tmp_path):
    path = tmp_path / "cut.npy"
    np.save(path, np.random.default_rng(8).random((100, 3)))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=re.escape(str(path)) + r".*(truncated|could not read)"):
        read_events(path, ["a", "b", "c"])


def test_read_npy_object_array(tmp_path):
    path = tmp_path / "obj.npy"
    np.save(path, np.array([[1, "x"]], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match=re.escape(str(path)) + r".*Python objects"):
        read_events(path, ["a", "b"])


@pytest.mark.parametrize("suffix", [".npy", ".parquet", ".root"])
def test_read_text_with_binary_extension(tmp_path, suffix):
    path = tmp_path / f"fake{suffix}"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match=re.escape(f"{path}: not a {suffix} file")):
        read_events(path, ["a", "b"])


def test_read_unknown_extension(tmp_path):
    path = tmp_path / "events.txt"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match=re.escape(f"{path}: unknown file type '.txt'")):
        read_events(path)


def test_read_csv_missing_column(tmp_path):
    pd = pytest.importorskip("pandas")
    path = tmp_path / "t.csv"
    pd.DataFrame({"a": [1.0, 2.0], "b": [3.0, 4.0]}).to_csv(path, index=False)
    with pytest.raises(
        DataError, match=re.escape(f"{path}: missing column(s) ['mjj']; the file has ['a', 'b']")
    ):
        read_events(path, ["a", "mjj"])


def test_read_broken_csv_names_file(tmp_path):
    path = tmp_path / "bin.csv"
    path.write_bytes(b"")
    with pytest.raises(DataError, match=re.escape(f"{path}: could not read as .csv")):
        read_events(path)


@pytest.fixture
def two_tree_root(tmp_path) -> Path:
    uproot = pytest.importorskip("uproot")
    path = tmp_path / "two.root"
    x = np.arange(10.0)
    with uproot.recreate(path) as f:
        _write_ttree(f, "events", {"a": x, "b": 2 * x})
        _write_ttree(f, "other", {"c": x})
    return path


def test_read_root_missing_tree(two_tree_root):
    with pytest.raises(
        DataError, match=r"two\.root: no TTree named 'nope'; the file holds \['events', 'other'\]"
    ):
        read_events(two_tree_root, tree="nope")


def test_read_root_ambiguous_tree(two_tree_root):
    with pytest.raises(
        DataError, match=r"two\.root: give `tree`; the file holds the trees \['events', 'other'\]"
    ):
        read_events(two_tree_root)
    ev = read_events(two_tree_root, tree="other")
    assert ev.columns == ("c",)
    assert len(ev) == 10


def test_read_root_missing_branch(two_tree_root):
    with pytest.raises(
        DataError,
        match=r"two\.root:events: missing branch\(es\) \['c'\]; the tree has \['a', 'b'\]",
    ):
        read_events(two_tree_root, ["a", "c"], tree="events")


# ---------------------------------------------------------------------------------------------
# Real data in ../shared/data (skipped when absent)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "n_events", "n_signal"),
    [
        ("sr_mixed_a.npy", 60000, 395),
        ("sr_mixed_b.npy", 62124, 377),
        ("sr_sig_enriched.npy", 60000, 20000),
        ("sr_signal_only.npy", 74527, 74527),
    ],
)
def test_read_lhco(name, n_events, n_signal):
    path = _shared_file(LHCO_DIR, name)
    ev = read_lhco(path)
    assert ev.columns == LHCO_COLUMNS
    assert len(ev.columns) == 6
    assert len(ev) == n_events
    assert np.all((ev["mjj"] >= 3.3) & (ev["mjj"] <= 3.7))
    assert set(np.unique(ev["label"])) <= {0.0, 1.0}
    assert int(ev["label"].sum()) == n_signal
    assert np.all(np.isfinite(ev.values))


@pytest.mark.parametrize(
    ("name", "window"),
    [
        ("peakdata6.csv", (3.5, 3.9)),
        ("peakdata3.csv", (9.0, 9.7)),
        ("peakdata4.csv", (0.90, 1.13)),
        ("peakdata5.csv", (0.65, 0.90)),
        ("Zmumu_Run2011A_masses.csv", (60.0, 120.0)),
    ],
)
def test_read_cms_dimuon_csv(name, window):
    path = _shared_file(CMS_DIR, name)
    ev = read_cms_dimuon(path)
    assert ev.columns == CMS_DIMUON_FEATURES
    assert len(ev) > 1000
    assert np.all(np.isfinite(ev.values))
    assert np.all((ev["pt_asym"] >= 0) & (ev["pt_asym"] <= 1))
    assert np.all((ev["delta_phi"] >= 0) & (ev["delta_phi"] <= np.pi))
    assert np.all(ev["delta_eta"] >= 0)
    assert np.all(ev["pt"] >= 0)
    assert np.all(np.abs(ev["cos_theta"]) <= 1)
    assert abs(np.mean(ev["cos_theta"])) < 0.1  # no forward-backward asymmetry to speak of at these masses
    lo, hi = window
    assert np.all((ev["M"] >= lo) & (ev["M"] <= hi))


def test_cms_dimuon_features_match_kinematics():
    """The derived features agree with a direct computation from the raw CSV columns."""
    pd = pytest.importorskip("pandas")
    path = _shared_file(CMS_DIR, "peakdata6.csv")
    df = pd.read_csv(path)
    ev = read_cms_dimuon(path)
    assert len(ev) == len(df)  # no undefined rapidity in this file
    pt = np.hypot(df.px1 + df.px2, df.py1 + df.py2).to_numpy()
    np.testing.assert_allclose(ev["pt"], pt, rtol=1e-12)
    dphi = np.abs(np.angle(np.exp(1j * (df.phi1 - df.phi2).to_numpy())))
    np.testing.assert_allclose(ev["delta_phi"], dphi, atol=1e-9)
    np.testing.assert_allclose(ev["M"], df.M.to_numpy())


def test_helicity_cos_theta_known_decays():
    """Pairs built in the rest frame with a known cos theta* (relative to the later boost
    direction), boosted along random directions: the function recovers cos theta*."""
    from zfit_gbi.data import helicity_cos_theta

    rng = np.random.default_rng(0)
    n, m, pstar = 500, 9.46, 4.72
    cos = rng.uniform(-1, 1, n)
    phi = rng.uniform(0, 2 * np.pi, n)
    sin = np.sqrt(1 - cos**2)
    q = pstar * np.stack([sin * np.cos(phi), sin * np.sin(phi), cos], axis=1)  # mu+ in the rest frame, boost axis z
    e = np.sqrt(pstar**2 + 0.1057**2)
    beta = rng.uniform(0.05, 0.99, n)
    gamma = 1 / np.sqrt(1 - beta**2)

    def boost(e0, v):  # along z, then rotate z onto a random direction
        ez = gamma * (e0 + beta * v[:, 2])
        vz = gamma * (v[:, 2] + beta * e0)
        return ez, np.stack([v[:, 0], v[:, 1], vz], axis=1)

    rot = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    ep, vp = boost(e, q)
    em, vm = boost(e, -q)
    plus = np.column_stack([ep, vp @ rot.T])
    minus = np.column_stack([em, vm @ rot.T])
    np.testing.assert_allclose(helicity_cos_theta(plus, minus), cos, atol=1e-9)
    assert np.isnan(helicity_cos_theta(np.array([[m / 2, 0, 0, 1.0]]), np.array([[m / 2, 0, 0, -1.0]])))[0]


def test_read_zmumu_root():
    path = _shared_file(CMS_DIR, "uproot-Zmumu.root")
    raw = read_events(path, tree="events")
    assert "M" in raw.columns
    assert "Type" not in raw.columns  # a string branch is not a numeric column
    assert len(raw) == 2304
    assert raw.source.endswith(":events")
    ev = read_cms_dimuon(path, tree="events")
    assert ev.columns == CMS_DIMUON_FEATURES
    assert 0 < len(ev) <= 2304
    assert np.all((ev["pt_asym"] >= 0) & (ev["pt_asym"] <= 1))
    assert np.all((ev["delta_phi"] >= 0) & (ev["delta_phi"] <= np.pi))
    with pytest.raises(DataError, match=r"uproot-Zmumu\.root: no TTree named 'Events'"):
        read_events(path, tree="Events")


# ---------------------------------------------------------------------------------------------
# ResonantBenchmark
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bm() -> ResonantBenchmark:
    return ResonantBenchmark()


@pytest.fixture(scope="module")
def bkg_sample(bm) -> Events:
    return bm.sample(200_000, 0, seed=21)


def test_sample_counts_and_columns(bm):
    ev = bm.sample(3000, 250, seed=1)
    assert ev.columns == (*bm.columns, "label")
    assert ev.columns[:5] == ("mjj", "mj1", "delta_mj", "tau21_j1", "tau21_j2")
    assert len(ev) == 3250
    assert int(np.sum(ev["label"] == 0)) == 3000
    assert int(np.sum(ev["label"] == 1)) == 250
    assert set(np.unique(ev["label"])) == {0.0, 1.0}


def test_sample_poisson_counts_vary(bm):
    sizes = {len(bm.sample(1000, 50, seed=s, poisson=True)) for s in range(5)}
    assert len(sizes) > 1
    assert all(abs(n - 1050) < 8 * math.sqrt(1050) for n in sizes)


def test_sample_seed_reproducible(bm):
    a = bm.sample(2000, 100, seed=5)
    b = bm.sample(2000, 100, seed=5)
    c = bm.sample(2000, 100, seed=6)
    np.testing.assert_array_equal(a.values, b.values)
    assert not np.array_equal(a.values, c.values)
    assert not np.allclose(np.sort(a["mjj"]), np.sort(c["mjj"]))


def test_sample_inside_bounds_and_window(bm):
    ev = bm.sample(50_000, 5_000, seed=2)
    lo, hi = bm.fit_window
    assert np.all((ev["mjj"] >= lo) & (ev["mjj"] <= hi))
    for f in bm.features:
        flo, fhi = bm.bounds[f]
        assert np.all((ev[f] >= flo) & (ev[f] <= fhi)), f
    # validate accepts it without clipping and keeps every event
    out = validate(ev, bm.columns, {**bm.bounds, "mjj": bm.fit_window})
    assert len(out) == len(ev)


def test_background_mass_sampler_matches_density(bm, bkg_sample):
    from scipy import integrate, stats

    lo, _ = bm.fit_window

    def cdf(x):
        return integrate.quad(lambda m: math.exp(bm.log_prob_background_mass(m)), lo, x)[0]

    m = bkg_sample["mjj"][:20_000]
    grid = np.linspace(*bm.fit_window, 200)
    cdf_grid = np.array([cdf(x) for x in grid])
    res = stats.kstest(m, lambda x: np.interp(x, grid, cdf_grid))
    assert res.pvalue > 1e-3


def test_signal_mass_sampler_matches_density(bm):
    from scipy import stats

    rng = np.random.default_rng(9)
    m = bm.sample_signal_mass(20_000, rng)
    res = stats.kstest(m, stats.norm(bm.signal_mass, bm.signal_width).cdf)
    assert res.pvalue > 1e-3


@pytest.mark.parametrize("signal_mass", [3.5, 4.05, 2.92])
def test_mass_densities_normalized(signal_mass):
    from scipy import integrate

    bm = ResonantBenchmark(signal_mass=signal_mass)
    lo, hi = bm.fit_window
    ib, _ = integrate.quad(lambda m: math.exp(bm.log_prob_background_mass(m)), lo, hi)
    is_, _ = integrate.quad(
        lambda m: math.exp(bm.log_prob_signal_mass(m)), lo, hi, points=[signal_mass], limit=200
    )
    assert ib == pytest.approx(1.0, abs=1e-8)
    assert is_ == pytest.approx(1.0, abs=1e-6)


def _mixture_integral(log_p, sample_p, rng: np.random.Generator, n: int = 200_000):
    """∫ p over [0, 1]^4 with the proposal q = 0.5 p + 0.5 uniform (stratified 50/50).

    Returns the estimate and its standard error. The weight p / q is bounded by 2.
    """
    half = n // 2
    x_p = sample_p(half, rng)
    x_u = rng.random((half, 4))
    w = []
    for x in (x_p, x_u):
        p = np.exp(log_p(x))
        w.append(p / (0.5 * p + 0.5))
    est = 0.5 * w[0].mean() + 0.5 * w[1].mean()
    se = 0.5 * math.sqrt(w[0].var(ddof=1) / half + w[1].var(ddof=1) / half)
    return est, se


@pytest.mark.parametrize("mass", [2.95, 3.5, 4.05])
def test_background_feature_density_normalized(bm, mass):
    rng = np.random.default_rng(int(mass * 100))

    def log_p(x):
        return bm.log_prob_background_features(x, np.full(len(x), mass))

    def sample_p(n, r):
        return bm.sample_background_features(np.full(n, mass), r)

    est, se = _mixture_integral(log_p, sample_p, rng)
    assert se < 0.01
    assert abs(est - 1.0) < 5 * se + 1e-3, (est, se)


def test_signal_feature_density_normalized(bm):
    rng = np.random.default_rng(31)
    est, se = _mixture_integral(bm.log_prob_signal_features, bm.sample_signal_features, rng)
    assert se < 0.01
    assert abs(est - 1.0) < 5 * se + 1e-3, (est, se)


def _broad_proposal_integral(log_p, sample_p, rng: np.random.Generator, n: int = 200_000):
    """∫ p over [0, 1]^4 by importance sampling from an independent, exactly normalized proposal.

    The proposal is a Gaussian in logit space (x = expit(z)) with 3 times the covariance of the
    sampler's latent values, so p / h is bounded. Unlike the mixture estimator above, whose
    proposal is built from p itself, this one is directly proportional to a constant error in p.
    """
    from scipy.special import expit, logit
    from scipy.stats import multivariate_normal

    z0 = logit(sample_p(20_000, rng))
    h = multivariate_normal(z0.mean(axis=0), 3.0 * np.cov(z0.T))
    z = h.rvs(n, random_state=rng)
    x = expit(z)
    # log h(x) = log N(z) - log|dx/dz|, with dx/dz = expit(z) expit(-z)
    log_h = h.logpdf(z) + np.sum(np.logaddexp(0.0, -z) + np.logaddexp(0.0, z), axis=1)
    w = np.exp(log_p(x) - log_h)
    return w.mean(), w.std(ddof=1) / math.sqrt(n)


@pytest.mark.parametrize("mass", [2.95, 3.5, 4.05, None])
def test_feature_density_normalized_independent_proposal(bm, mass):
    rng = np.random.default_rng(77 if mass is None else int(mass * 1000))
    if mass is None:  # the signal feature density
        log_p, sample_p = bm.log_prob_signal_features, bm.sample_signal_features
    else:

        def log_p(x):
            return bm.log_prob_background_features(x, np.full(len(x), mass))

        def sample_p(n, r):
            return bm.sample_background_features(np.full(n, mass), r)

    est, se = _broad_proposal_integral(log_p, sample_p, rng)
    assert se < 0.006
    assert abs(est - 1.0) < 5 * se + 1e-3, (est, se)


def test_feature_density_matches_sampler(bm):
    """The density is the sampler's: the mean log p under its own samples beats a shifted mass."""
    rng = np.random.default_rng(41)
    m = np.full(50_000, 3.0)
    x = bm.sample_background_features(m, rng)
    own = bm.log_prob_background_features(x, m).mean()
    other = bm.log_prob_background_features(x, np.full_like(m, 4.0)).mean()
    sig = bm.log_prob_signal_features(x).mean()
    assert own > other + 0.05
    assert own > sig + 1.0


def test_signal_simulation(bm):
    n = 20_000
    sim = bm.signal_simulation(n, seed=4)
    assert sim.columns == (*bm.columns, "label")
    assert len(sim) == n
    assert np.all(sim["label"] == 1)
    m = sim["mjj"]
    assert abs(m.mean() - bm.signal_mass) < 4 * m.std(ddof=1) / math.sqrt(n)
    assert m.std() == pytest.approx(bm.signal_width, rel=0.05)
    shifted = bm.signal_simulation(5000, seed=4, mass=3.2)
    assert abs(shifted["mjj"].mean() - 3.2) < 4 * shifted["mjj"].std(ddof=1) / math.sqrt(5000)
    np.testing.assert_array_equal(bm.signal_simulation(n, seed=4).values, sim.values)
    assert not np.array_equal(bm.signal_simulation(n, seed=5).values, sim.values)


def test_log_prob_mixture_finite(bm):
    ev = bm.sample(5000, 500, seed=3)
    for lp in (
        bm.log_prob(ev, 500.0, 5000.0),
        bm.log_prob(ev, 0.0, 5000.0),
        bm.log_prob_signal(ev),
    ):
        assert lp.shape == (len(ev),)
        assert np.all(np.isfinite(lp))
    # the mixture lies between its components
    lb, ls = bm.log_prob_background(ev), bm.log_prob_signal(ev)
    mix = bm.log_prob(ev, 500.0, 5000.0)
    assert np.all(mix <= np.maximum(lb, ls) + 1e-9)
    assert np.all(mix >= np.minimum(lb, ls) - 1e-9)
    # signal events are more signal-like than background events on average
    llr = ls - lb
    assert llr[ev["label"] == 1].mean() > llr[ev["label"] == 0].mean() + 3.0


def test_log_prob_finite_on_box_edges(bm):
    x = np.array([[0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0], [0.0, 1.0, 0.5, 1e-12]])
    m = np.full(3, 3.5)
    assert np.all(np.isfinite(bm.log_prob_background_features(x, m)))
    assert np.all(np.isfinite(bm.log_prob_signal_features(x)))


def test_background_features_depend_on_mass(bm, bkg_sample):
    (slo, shi), (hlo, hhi) = bm.windows.sidebands
    m = bkg_sample["mjj"]
    low = bkg_sample["mj1"][(m >= slo) & (m < shi)]
    high = bkg_sample["mj1"][(m > hlo) & (m <= hhi)]
    assert len(low) > 1000
    assert len(high) > 1000
    diff = high.mean() - low.mean()
    se = math.sqrt(low.var(ddof=1) / len(low) + high.var(ddof=1) / len(high))
    assert abs(diff) > 10 * se, (diff, se)


def test_windows_of_benchmark(bm, bkg_sample):
    counts = bm.windows.counts(bkg_sample, "mjj")
    assert counts["fit"] == len(bkg_sample)
    assert counts["fit"] == counts["signal_region"] + counts["sidebands"]
    parts = bm.windows.split(bkg_sample, "mjj")
    assert len(parts["signal_region"]) == counts["signal_region"]


@pytest.mark.parametrize("suffix", [".npy", ".csv"])
def test_benchmark_write_read_round_trip(bm, tmp_path, suffix):
    ev = bm.sample(500, 20, seed=8)
    path = bm.write(tmp_path / f"bench{suffix}", ev)
    back = read_events(path, ev.columns if suffix == ".npy" else None)
    assert back.columns == ev.columns
    np.testing.assert_array_equal(back.values, ev.values)
    with pytest.raises(ValueError, match=r"write \.npy or \.csv"):
        bm.write(tmp_path / "bench.json", ev)


# ---------------------------------------------------------------------------------------------
# Regressions: defects found while writing these tests, now fixed
# ---------------------------------------------------------------------------------------------


def test_read_root_rntuple(tmp_path, table):
    uproot = pytest.importorskip("uproot")
    path = tmp_path / "ntuple.root"
    with uproot.recreate(path) as f:
        f["events"] = {"a": table["a"], "b": table["b"]}
    with uproot.open(path) as f:
        if f.classnames().get("events;1") != "ROOT::RNTuple":
            pytest.skip("this uproot writes a TTree for f[name] = {...}")
    ev = read_events(path, ["a", "b"], tree="events")
    np.testing.assert_array_equal(ev["a"], table["a"])


def test_read_csv_with_text_column_default_columns(tmp_path, table):
    pd = pytest.importorskip("pandas")
    path = tmp_path / "text.csv"
    df = pd.DataFrame(table)
    df["kind"] = "x"
    df.to_csv(path, index=False)
    ev = read_events(path)
    assert ev.columns == ("a", "b", "c")


def test_read_csv_requested_text_column_not_numeric(tmp_path):
    pd = pytest.importorskip("pandas")
    path = tmp_path / "text.csv"
    pd.DataFrame({"a": [1.0, 2.0], "kind": ["x", "y"]}).to_csv(path, index=False)
    with pytest.raises(DataError, match=r"text\.csv: column\(s\) \['kind'\] are not numeric"):
        read_events(path, ["a", "kind"])


def test_windows_split_no_events_names_window():
    """An empty table: a DataError naming the windows, not a bare numpy error."""
    w = Windows((2.9, 4.1), (3.3, 3.7))
    ev = Events(np.empty((0, 1)), ("mjj",), source="none.npy")
    with pytest.raises(DataError, match=r"none\.npy: no events, so every window"):
        w.split(ev, "mjj")


def test_read_truncated_csv_names_the_cut(tmp_path):
    """A CSV cut inside its last row is reported as truncated (not as a NaN event later)."""
    pd = pytest.importorskip("pandas")
    path = tmp_path / "cut.csv"
    pd.DataFrame({"a": np.arange(50.0), "b": np.arange(50.0), "c": np.arange(50.0)}).to_csv(path, index=False)
    text = path.read_bytes()
    path.write_bytes(text[: text.rindex(b",")])  # the last row loses its last field
    with pytest.raises(DataError, match=re.escape(f"{path}: the last row has 2 of the header's 3 fields; the file looks truncated")):
        read_events(path)


def test_read_csv_without_final_line_break_warns(tmp_path, caplog):
    path = tmp_path / "noeol.csv"
    path.write_text("a,b\n1,2\n3,4")
    ev = read_events(path)
    assert len(ev) == 2
    assert "does not end with a line break" in caplog.text


def test_read_binary_file_named_csv(tmp_path):
    path = tmp_path / "binary.csv"
    np.save(tmp_path / "arr.npy", np.ones((5, 2)))
    path.write_bytes((tmp_path / "arr.npy").read_bytes())
    with pytest.raises(DataError, match=re.escape(f"{path}: not a text .csv file")):
        read_events(path)


def test_read_truncated_parquet(tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    path = tmp_path / "t.parquet"
    pd.DataFrame({"a": np.arange(1000.0), "b": np.arange(1000.0)}).to_parquet(path)
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(DataError, match=re.escape(f"{path}: could not read as .parquet")):
        read_events(path)


def test_read_truncated_root(tmp_path):
    uproot = pytest.importorskip("uproot")
    path = tmp_path / "cut.root"
    with uproot.recreate(path) as f:
        f["events"] = {"a": np.arange(100_000.0)}  # large enough that a cut hits the baskets
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=re.escape(f"{path}: could not read as .root")):
        read_events(path, tree="events")


def test_read_root_without_trees(tmp_path):
    uproot = pytest.importorskip("uproot")
    path = tmp_path / "hist.root"
    with uproot.recreate(path) as f:
        f["h"] = np.histogram(np.arange(10.0), bins=5)
    with pytest.raises(DataError, match=re.escape(f"{path}: the file holds no TTree or RNTuple (its keys: ['h'])")):
        read_events(path)


def test_data_that_stop_inside_the_fit_window(bench):
    """A preselection cut at 3.0 inside the fit window [2.9, 4.1] is an error naming the edge;
    the benchmark's own falling spectrum (sparse at the high edge) is not."""
    ev = bench.sample(20_000, 0, seed=3)
    w = bench.windows
    w.check_data_cover_fit(ev, "mjj")
    cut = ev.select(ev["mjj"] > 3.0)
    with pytest.raises(DataError, match=r"the data stop at mjj = 3.0\d* inside the fit window \(2.9, 4.1\) \(low edge\)"):
        w.check_data_cover_fit(cut, "mjj")
    with pytest.raises(DataError, match=r"\(high edge\)"):
        w.check_data_cover_fit(ev.select(ev["mjj"] < 3.9), "mjj")
