"""Events, readers, windows and input validation.

Plain numpy in and out: nothing here knows about TensorFlow or zfit.

An :class:`Events` is a float64 table of shape ``(n_events, n_columns)`` with named columns and
optional per-event weights. Readers return one; :class:`Windows` splits it into fit window,
signal region and sidebands along the resonant variable; :func:`validate` checks it before any
model sees it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "Box",
    "DataError",
    "Events",
    "Windows",
    "box_from_data",
    "helicity_cos_theta",
    "read_cms_dimuon",
    "read_events",
    "read_lhco",
    "validate",
]

log = logging.getLogger(__name__)

LHCO_COLUMNS = ("mjj", "mj1", "delta_mj", "tau21_j1", "tau21_j2", "label")
CMS_DIMUON_FEATURES = ("M", "pt", "y", "delta_eta", "delta_phi", "pt_asym", "cos_theta")

Box = dict[str, tuple[float, float]]
"""Per-column bounds ``{name: (low, high)}`` in the column's units."""


class DataError(ValueError):
    """Bad input data: the message names the file, column or window and what was expected."""


@dataclass(frozen=True)
class Events:
    """A table of events: ``values`` of shape ``(n_events, n_columns)``, float64.

    Args:
        values: The event table, shape ``(n_events, len(columns))``.
        columns: One name per column, unique.
        weights: Optional per-event weights, shape ``(n_events,)``.
        source: Where the events came from (a path or a description), used in error messages.
    """

    values: np.ndarray
    columns: tuple[str, ...]
    weights: np.ndarray | None = None
    source: str = "<array>"

    def __post_init__(self) -> None:
        values = np.asarray(self.values, dtype=np.float64)
        if values.ndim != 2:
            msg = f"{self.source}: events must be a 2-D array (n_events, n_columns), got shape {values.shape}"
            raise DataError(msg)
        columns = tuple(str(c) for c in self.columns)
        if len(columns) != values.shape[1]:
            msg = (
                f"{self.source}: {values.shape[1]} columns in the data but {len(columns)} names given "
                f"({list(columns)})"
            )
            raise DataError(msg)
        if len(set(columns)) != len(columns):
            dup = sorted({c for c in columns if columns.count(c) > 1})
            msg = f"{self.source}: duplicate column names {dup}"
            raise DataError(msg)
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "columns", columns)
        if self.weights is not None:
            w = np.asarray(self.weights, dtype=np.float64)
            if w.shape != (values.shape[0],):
                msg = f"{self.source}: weights must have shape ({values.shape[0]},), got {w.shape}"
                raise DataError(msg)
            if not np.all(np.isfinite(w)):
                msg = f"{self.source}: weights contain NaN or inf ({int(np.sum(~np.isfinite(w)))} events)"
                raise DataError(msg)
            object.__setattr__(self, "weights", w)

    @classmethod
    def from_dict(cls, data: Mapping[str, Sequence[float] | np.ndarray], source: str = "<dict>") -> Events:
        """Build from ``{column: 1-D array}``, all of one length."""
        columns = tuple(data)
        lengths = {c: len(np.asarray(data[c])) for c in columns}
        if len(set(lengths.values())) > 1:
            msg = f"{source}: columns have different lengths {lengths}"
            raise DataError(msg)
        values = np.column_stack([np.asarray(data[c], dtype=np.float64) for c in columns])
        return cls(values, columns, source=source)

    def __len__(self) -> int:
        return self.values.shape[0]

    def __getitem__(self, column: str) -> np.ndarray:
        """One column, shape ``(n_events,)``."""
        return self.values[:, self.index(column)]

    def index(self, column: str) -> int:
        """Position of ``column``; a :class:`DataError` names the available columns otherwise."""
        try:
            return self.columns.index(column)
        except ValueError:
            msg = f"{self.source}: no column {column!r}; available columns: {list(self.columns)}"
            raise DataError(msg) from None

    def array(self, columns: Iterable[str]) -> np.ndarray:
        """The named columns as a ``(n_events, len(columns))`` array, in that order."""
        idx = [self.index(c) for c in columns]
        return self.values[:, idx]

    def select(self, mask: np.ndarray) -> Events:
        """The events where the boolean ``mask`` (shape ``(n_events,)``) is true."""
        w = None if self.weights is None else self.weights[mask]
        return Events(self.values[mask], self.columns, w, self.source)

    def with_columns(self, columns: Iterable[str]) -> Events:
        """Only these columns, in this order (extra columns such as a truth label are dropped)."""
        columns = tuple(columns)
        return Events(self.array(columns), columns, self.weights, self.source)

    @property
    def sum_weights(self) -> float:
        """Sum of weights (the number of events when unweighted)."""
        return float(len(self) if self.weights is None else self.weights.sum())

    def __repr__(self) -> str:
        w = "" if self.weights is None else f", weighted (sum {self.sum_weights:.6g})"
        return f"Events({len(self)} events, columns={list(self.columns)}{w}, source={self.source!r})"


def concatenate(parts: Sequence[Events]) -> Events:
    """Stack event tables with identical columns."""
    if not parts:
        msg = "nothing to concatenate"
        raise DataError(msg)
    cols = parts[0].columns
    for p in parts:
        if p.columns != cols:
            msg = f"cannot concatenate {p.source} (columns {list(p.columns)}) with columns {list(cols)}"
            raise DataError(msg)
    weighted = any(p.weights is not None for p in parts)
    w = np.concatenate([p.weights if p.weights is not None else np.ones(len(p)) for p in parts]) if weighted else None
    return Events(np.concatenate([p.values for p in parts]), cols, w, parts[0].source)


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------


def validate(
    events: Events,
    columns: Sequence[str],
    bounds: Mapping[str, tuple[float, float]] | None = None,
    *,
    clip: bool = False,
    what: str = "events",
) -> Events:
    """Check ``events`` before a model sees them and return them restricted to ``columns``.

    Checks that every named column exists, holds only finite numbers and (when ``bounds`` are
    given) lies inside ``[low, high]``. With ``clip=True`` out-of-bounds events are *dropped*
    and the number dropped is logged; without it they raise. There is no silent repair.

    Args:
        events: The table to check.
        columns: The columns the model uses, in the model's order.
        bounds: ``{column: (low, high)}`` in the column's units.
        clip: Drop (and log) out-of-bounds events instead of raising.
        what: How to call these events in messages ("data", "signal simulation", ...).

    Raises:
        DataError: naming the column, the problem and how many events are affected.
    """
    src = f"{events.source} ({what})"
    missing = [c for c in columns if c not in events.columns]
    if missing:
        msg = f"{src}: missing column(s) {missing}; the file has {list(events.columns)}"
        raise DataError(msg)
    if len(events) == 0:
        msg = f"{src}: no events"
        raise DataError(msg)
    sub = events.with_columns(columns)
    bad = ~np.isfinite(sub.values)
    if bad.any():
        per_col = {c: int(n) for c, n in zip(columns, bad.sum(axis=0), strict=True) if n}
        first = int(np.argmax(bad.any(axis=1)))
        msg = f"{src}: NaN or inf values in column(s) {per_col} (first at event {first})"
        raise DataError(msg)
    if bounds:
        keep = np.ones(len(sub), dtype=bool)
        report = {}
        for c, (lo, hi) in bounds.items():
            if c not in columns:
                continue
            x = sub[c]
            out = (x < lo) | (x > hi)
            if out.any():
                report[c] = (int(out.sum()), float(x.min()), float(x.max()), lo, hi)
                keep &= ~out
        if report:
            text = "; ".join(
                f"{c}: {n} events outside [{lo:g}, {hi:g}] (data range {mn:g} to {mx:g})"
                for c, (n, mn, mx, lo, hi) in report.items()
            )
            if not clip:
                msg = f"{src}: events outside the declared bounds: {text}. Widen the bounds or pass clip=True to drop them."
                raise DataError(msg)
            log.warning("%s: dropping %d events outside the bounds: %s", src, int((~keep).sum()), text)
            sub = sub.select(keep)
            if len(sub) == 0:
                msg = f"{src}: no events left inside the bounds"
                raise DataError(msg)
    return sub


def box_from_data(events: Events, columns: Sequence[str], margin: float = 0.01) -> Box:
    """Bounds ``[min - margin * range, max + margin * range]`` for each column.

    Raises:
        DataError: if a column has zero variance (a flow cannot model a constant).
    """
    box: Box = {}
    if len(events) == 0:
        msg = f"{events.source}: no events to take bounds from"
        raise DataError(msg)
    for c in columns:
        x = events[c]
        if not np.all(np.isfinite(x)):
            msg = f"{events.source}: column {c!r} contains NaN or inf ({int(np.sum(~np.isfinite(x)))} events)"
            raise DataError(msg)
        lo, hi = float(np.min(x)), float(np.max(x))
        if not hi > lo:
            msg = f"{events.source}: column {c!r} has zero variance (all values {lo:g}); drop it from the features"
            raise DataError(msg)
        d = margin * (hi - lo)
        box[c] = (lo - d, hi + d)
    return box


# ---------------------------------------------------------------------------------------------
# Windows
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Windows:
    """Fit window and signal region along the resonant variable; the sidebands are the rest.

    Args:
        fit: ``(low, high)`` of the fit window, in the resonant variable's units.
        signal_region: ``(low, high)``, strictly inside ``fit``.
    """

    fit: tuple[float, float]
    signal_region: tuple[float, float]
    sidebands: tuple[tuple[float, float], tuple[float, float]] = field(init=False)

    def __post_init__(self) -> None:
        fit = (float(self.fit[0]), float(self.fit[1]))
        sr = (float(self.signal_region[0]), float(self.signal_region[1]))
        for name, (lo, hi) in {"fit": fit, "signal_region": sr}.items():
            if not (math.isfinite(lo) and math.isfinite(hi)) or not lo < hi:
                msg = f"window {name!r} = [{lo:g}, {hi:g}] must have finite low < high"
                raise DataError(msg)
        if not (fit[0] < sr[0] and sr[1] < fit[1]):
            msg = (
                f"signal_region [{sr[0]:g}, {sr[1]:g}] must lie strictly inside the fit window "
                f"[{fit[0]:g}, {fit[1]:g}] so that both sidebands are non-empty"
            )
            raise DataError(msg)
        object.__setattr__(self, "fit", fit)
        object.__setattr__(self, "signal_region", sr)
        object.__setattr__(self, "sidebands", ((fit[0], sr[0]), (sr[1], fit[1])))

    def in_fit(self, m: np.ndarray) -> np.ndarray:
        """Mask of events inside the fit window (``low <= m <= high``)."""
        return (m >= self.fit[0]) & (m <= self.fit[1])

    def in_signal_region(self, m: np.ndarray) -> np.ndarray:
        """Mask of events inside the signal region (``low <= m < high``)."""
        return (m >= self.signal_region[0]) & (m < self.signal_region[1])

    def in_sidebands(self, m: np.ndarray) -> np.ndarray:
        """Mask of fit-window events outside the signal region."""
        return self.in_fit(m) & ~self.in_signal_region(m)

    def split(self, events: Events, resonant: str) -> dict[str, Events]:
        """``{"fit", "signal_region", "sidebands"}`` event tables; raises if any is empty."""
        m = events[resonant]
        if len(m) == 0:
            msg = f"{events.source}: no events, so every window (fit {self.fit}, signal_region {self.signal_region}) is empty"
            raise DataError(msg)
        parts = {
            "fit": events.select(self.in_fit(m)),
            "signal_region": events.select(self.in_signal_region(m)),
            "sidebands": events.select(self.in_sidebands(m)),
        }
        for name, part in parts.items():
            if len(part) == 0:
                lo, hi = float(m.min()), float(m.max())
                msg = (
                    f"{events.source}: the {name} window is empty ({resonant} of the data spans "
                    f"{lo:g} to {hi:g}; windows: fit {self.fit}, signal_region {self.signal_region})"
                )
                raise DataError(msg)
        return parts

    def check_data_cover_fit(self, events: Events, resonant: str, min_expected: float = 25.0) -> None:
        """Raise if the data stop inside the fit window (a preselection cut or a window beyond the
        data's range): the mass shape is normalized over the whole window, so a window edge
        without data biases every yield. Flagged where the gap between a window edge and the
        nearest event would hold at least ``min_expected`` events at the data's density just
        inside the gap (the chance of such an empty gap in a continuous spectrum: e^-25)."""
        m = np.sort(events[resonant][self.in_fit(events[resonant])])
        if len(m) < 2 * min_expected:
            return
        lo, hi = self.fit
        for side, gap in (("low", m[0] - lo), ("high", hi - m[-1])):
            if gap <= 0:
                continue
            near = np.sum(m <= m[0] + gap) if side == "low" else np.sum(m >= m[-1] - gap)
            if near >= min_expected:
                edge = m[0] if side == "low" else m[-1]
                msg = (f"{events.source}: the data stop at {resonant} = {edge:g} inside the fit window {self.fit} ({side} edge): "
                       f"{int(near)} events lie within {gap:.3g} of that point but none between it and the window edge; "
                       f"move windows.fit inside the data's range (or drop the cut that made the gap)")
                raise DataError(msg)

    def counts(self, events: Events, resonant: str) -> dict[str, int]:
        """Event counts per window."""
        m = events[resonant]
        return {
            "fit": int(self.in_fit(m).sum()),
            "signal_region": int(self.in_signal_region(m).sum()),
            "sidebands": int(self.in_sidebands(m).sum()),
        }

    def __repr__(self) -> str:
        (a, b), (c, d) = self.sidebands
        return (
            f"Windows(fit=[{self.fit[0]:g}, {self.fit[1]:g}], signal_region=[{self.signal_region[0]:g}, "
            f"{self.signal_region[1]:g}], sidebands=[{a:g}, {b:g}] + [{c:g}, {d:g}])"
        )


# ---------------------------------------------------------------------------------------------
# Readers
# ---------------------------------------------------------------------------------------------

_MAGIC = {".npy": b"\x93NUMPY", ".parquet": b"PAR1", ".root": b"root"}


def _check_file(path: Path) -> None:
    if not path.exists():
        msg = f"{path}: no such file"
        raise DataError(msg)
    if path.is_dir():
        msg = f"{path}: is a directory, expected a data file"
        raise DataError(msg)
    magic = _MAGIC.get(path.suffix.lower())
    if magic is not None:
        with path.open("rb") as f:
            head = f.read(len(magic))
        if head != magic:
            msg = f"{path}: not a {path.suffix} file (its first bytes are {head!r}, expected {magic!r})"
            raise DataError(msg)


def read_events(
    path: str | Path,
    columns: Sequence[str] | None = None,
    *,
    tree: str | None = None,
) -> Events:
    """Read an event table from ``.npy``, ``.csv``, ``.parquet`` or ``.root``.

    Args:
        path: The file. The format is taken from the extension and checked against the content.
        columns: Column names. Required for ``.npy`` (a 2-D array has no names; it must have
            exactly this many columns). For the other formats, the columns to read (default all
            numeric ones).
        tree: The TTree name for ROOT files (default: the only tree in the file).

    Raises:
        DataError: for a missing, truncated or mislabelled file, a missing tree or column,
            or a wrong shape.
    """
    path = Path(path)
    _check_file(path)
    suffix = path.suffix.lower()
    src = str(path)
    try:
        if suffix == ".npy":
            return _read_npy(path, columns)
        if suffix == ".csv":
            import pandas as pd

            _check_csv_end(path)
            df = pd.read_csv(path)
            return _from_frame(df, columns, src)
        if suffix in (".parquet", ".pq"):
            import pandas as pd

            df = pd.read_parquet(path)
            return _from_frame(df, columns, src)
        if suffix == ".root":
            return _read_root(path, columns, tree)
    except DataError:
        raise
    except Exception as err:  # a broken file: name it and say what the library said
        msg = f"{path}: could not read as {suffix} ({type(err).__name__}: {err})"
        raise DataError(msg) from err
    msg = f"{path}: unknown file type {suffix!r}; supported: .npy, .csv, .parquet, .root"
    raise DataError(msg)


def _check_csv_end(path: Path) -> None:
    """A CSV cut while it was written loses the end of its last row: compare that row's number
    of fields with the header's (a cut inside the last number cannot be seen; a missing final
    line break is reported as a warning)."""
    with path.open("rb") as f:
        header = f.readline()
        f.seek(0, 2)
        size = f.tell()
        f.seek(max(size - 65536, 0))
        tail = f.read()
    if b"\x00" in header or b"\x00" in tail:
        msg = f"{path}: not a text .csv file (it contains NUL bytes)"
        raise DataError(msg)
    lines = [ln for ln in tail.splitlines() if ln.strip()]
    if not header.strip() or (len(lines) < 2 and size <= len(header)):
        return  # empty or header only: the reader says so
    n_head, n_last = header.count(b",") + 1, lines[-1].count(b",") + 1
    if n_last < n_head:
        msg = (f"{path}: the last row has {n_last} of the header's {n_head} fields; the file looks truncated "
               f"(cut while it was written or copied)")
        raise DataError(msg)
    if not tail.endswith((b"\n", b"\r")):
        log.warning("%s does not end with a line break; if it was cut while written, its last event may be wrong", path)


def _read_npy(path: Path, columns: Sequence[str] | None) -> Events:
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as err:
        msg = f"{path}: could not read the array ({err}); the file may be truncated or hold Python objects"
        raise DataError(msg) from err
    if arr.ndim != 2:
        msg = f"{path}: expected a 2-D array (n_events, n_columns), got shape {arr.shape}"
        raise DataError(msg)
    if columns is None:
        msg = f"{path}: a .npy file has no column names; give `columns` ({arr.shape[1]} names)"
        raise DataError(msg)
    if len(columns) != arr.shape[1]:
        msg = f"{path}: the array has {arr.shape[1]} columns but {len(columns)} names were given: {list(columns)}"
        raise DataError(msg)
    return Events(arr.astype(np.float64), tuple(columns), source=str(path))


def _from_frame(df, columns: Sequence[str] | None, src: str) -> Events:
    from pandas.api.types import is_numeric_dtype

    if columns is None:
        columns = [c for c in df.columns if is_numeric_dtype(df[c].dtype)]
    missing = [c for c in columns if c not in df.columns]
    if missing:
        msg = f"{src}: missing column(s) {missing}; the file has {list(df.columns)}"
        raise DataError(msg)
    nonnum = [c for c in columns if not is_numeric_dtype(df[c].dtype)]
    if nonnum:
        msg = f"{src}: column(s) {nonnum} are not numeric"
        raise DataError(msg)
    return Events(df[list(columns)].to_numpy(dtype=np.float64), tuple(columns), source=src)


def _read_root(path: Path, columns: Sequence[str] | None, tree: str | None) -> Events:
    import uproot

    with uproot.open(path) as f:
        kinds = ("TTree", "ROOT::RNTuple")  # uproot >= 5.4 writes RNTuples by default
        trees = [k.split(";")[0] for k, cls in f.classnames().items() if cls in kinds]
        if not trees:
            msg = f"{path}: the file holds no TTree or RNTuple (its keys: {sorted({k.split(';')[0] for k in f})})"
            raise DataError(msg)
        if tree is None:
            if len(trees) != 1:
                msg = f"{path}: give `tree`; the file holds the trees {sorted(set(trees))}"
                raise DataError(msg)
            tree = trees[0]
        if tree not in trees:
            msg = f"{path}: no TTree named {tree!r}; the file holds {sorted(set(trees)) or 'no trees'}"
            raise DataError(msg)
        t = f[tree]
        names = list(t.keys())
        if columns is None:
            first = t.arrays(names, entry_stop=1, library="np")
            columns = [n for n in names if np.asarray(first[n]).dtype.kind in "fiub"]
        missing = [c for c in columns if c not in names]
        if missing:
            msg = f"{path}:{tree}: missing branch(es) {missing}; the tree has {names}"
            raise DataError(msg)
        arrays = t.arrays(list(columns), library="np")
    return Events.from_dict({c: arrays[c] for c in columns}, source=f"{path}:{tree}")


def read_lhco(path: str | Path) -> Events:
    """An LHC Olympics R&D file as prepared in ``shared/data/lhco_rnd_sr`` (CATHODE split).

    Columns: ``mjj, mj1, delta_mj, tau21_j1, tau21_j2`` (masses in TeV) and ``label``
    (1 = signal, 0 = background; use it only for truth comparisons).
    """
    return read_events(path, LHCO_COLUMNS)


def helicity_cos_theta(p_plus: np.ndarray, p_minus: np.ndarray) -> np.ndarray:
    """cos theta* of the positive lepton in the helicity frame: the angle between its momentum in
    the pair's rest frame and the pair's flight direction in the lab.

    Args:
        p_plus, p_minus: Four-momenta ``(E, px, py, pz)``, shape ``(n, 4)``, any energy unit.

    Returns:
        Shape ``(n,)``, in ``[-1, 1]``; ``nan`` for a pair at rest in the lab (no direction).
    """
    p_plus, p_minus = np.asarray(p_plus, dtype=float), np.asarray(p_minus, dtype=float)
    tot = p_plus + p_minus
    e, vec = tot[:, 0], tot[:, 1:]
    pmag = np.linalg.norm(vec, axis=1)
    mass = np.sqrt(np.maximum(e**2 - pmag**2, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        n_hat = vec / pmag[:, None]
        gamma, beta = e / mass, pmag / e
        q = p_plus[:, 1:]
        q_par = np.sum(q * n_hat, axis=1)
        q_par_rest = gamma * (q_par - beta * p_plus[:, 0])  # boost along the flight direction
        q_perp = np.linalg.norm(q - q_par[:, None] * n_hat, axis=1)
        return np.clip(q_par_rest / np.hypot(q_par_rest, q_perp), -1.0, 1.0)


def read_cms_dimuon(path: str | Path, *, tree: str | None = None) -> Events:
    """CMS open-data dimuon pairs (CSV or the scikit-hep ROOT file) with dimuon features.

    Columns: ``M`` (GeV, the resonant variable), ``pt`` (dimuon transverse momentum, GeV),
    ``y`` (dimuon rapidity), ``delta_eta`` (``|eta1 - eta2|``), ``delta_phi`` (in ``[0, pi]``),
    ``pt_asym`` (``|pt1 - pt2| / (pt1 + pt2)``, in ``[0, 1]``) and ``cos_theta`` (the positive
    muon's helicity-frame cos theta*, :func:`helicity_cos_theta`; muon 1 for a same-sign pair),
    computed from the muon kinematics.
    """
    path = Path(path)
    need = ("E1", "px1", "py1", "pz1", "pt1", "eta1", "phi1", "Q1", "E2", "px2", "py2", "pz2", "pt2", "eta2", "phi2", "Q2", "M")
    ev = read_events(path, need, tree=tree)
    e = ev["E1"] + ev["E2"]
    px, py, pz = ev["px1"] + ev["px2"], ev["py1"] + ev["py2"], ev["pz1"] + ev["pz2"]
    pt = np.hypot(px, py)
    with np.errstate(divide="ignore", invalid="ignore"):
        y = 0.5 * np.log((e + pz) / (e - pz))
    dphi = np.abs((ev["phi1"] - ev["phi2"] + np.pi) % (2 * np.pi) - np.pi)
    feats = {
        "M": ev["M"],
        "pt": pt,
        "y": y,
        "delta_eta": np.abs(ev["eta1"] - ev["eta2"]),
        "delta_phi": dphi,
        "pt_asym": np.abs(ev["pt1"] - ev["pt2"]) / (ev["pt1"] + ev["pt2"]),
    }
    mu1 = np.stack([ev["E1"], ev["px1"], ev["py1"], ev["pz1"]], axis=1)
    mu2 = np.stack([ev["E2"], ev["px2"], ev["py2"], ev["pz2"]], axis=1)
    first_plus = (ev["Q1"] > 0) | (ev["Q1"] == ev["Q2"])
    feats["cos_theta"] = helicity_cos_theta(np.where(first_plus[:, None], mu1, mu2), np.where(first_plus[:, None], mu2, mu1))
    out = Events.from_dict(feats, source=ev.source)
    good = np.all(np.isfinite(out.values), axis=1)
    if not good.all():
        log.warning("%s: dropping %d events with undefined dimuon rapidity or cos theta* (a pair at rest)", path, int((~good).sum()))
        out = out.select(good)
    return out
