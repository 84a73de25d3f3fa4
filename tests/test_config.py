"""The YAML run config: the reference config of issue 3 loads; every mistake is a ConfigError
whose message names the file, the key path and (for a choice) the allowed values."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml

from zfit_gbi.config import (
    ConfigError,
    ConfigWarning,
    GeneratorConfig,
    RunConfig,
    dump_config,
    load_config,
    validate_config,
)

# exactly the config of issue 3 (paths relative to the YAML file's folder)
REFERENCE = """\
data:
  path: data.npy               # .npy (2-D array, columns named below), .csv, .parquet, .root
  columns: [mjj, mj1, delta_mj, tau21_j1, tau21_j2]
  tree: events                 # ROOT only
  resonant: mjj
  features: [mj1, delta_mj, tau21_j1, tau21_j2]
  bounds: {mj1: [0.0, 1.0]}    # optional per feature; default: from data with a margin
windows:
  fit: [3.3, 3.7]
  signal_region: [3.44, 3.56]
background:
  mass_shape: dijet            # dijet | exppoly2 | bernstein3
  generator: {type: maf-rqs, ensemble: 5, epochs: 100, seed: 1}   # or {path: saved_model_dir}
signal:
  simulation: {path: sig.npy, columns: [mjj, mj1, delta_mj, tau21_j1, tau21_j2]}
  mass_shape: gauss            # gauss | dscb
  generator: {type: maf-rqs, epochs: 100, seed: 2}
nuisances:
  generator: eigen             # none | envelope | eigen | updown
inference:
  discovery: true
  upper_limit: {cl: 0.95, calculator: asymptotic}   # asymptotic | toys
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A folder with (empty) data and signal files next to where the config goes."""
    (tmp_path / "data.npy").touch()
    (tmp_path / "sig.npy").touch()
    return tmp_path


def raw() -> dict:
    """The reference config as a mapping, without the (ignored) `tree` of a .npy file."""
    out = yaml.safe_load(REFERENCE)
    del out["data"]["tree"]
    return out


def write(folder: Path, cfg: dict | str, name: str = "run.yaml") -> Path:
    path = folder / name
    path.write_text(cfg if isinstance(cfg, str) else yaml.safe_dump(cfg, sort_keys=False))
    return path


def error(folder: Path, cfg: dict | str, **kwargs) -> str:
    """The message of the ConfigError that loading ``cfg`` raises; it starts with the file."""
    path = write(folder, cfg)
    with pytest.raises(ConfigError) as info:
        load_config(path, **kwargs)
    msg = str(info.value)
    assert msg.startswith(f"{path}: ")
    assert "pydantic.dev" not in msg
    return msg


def test_reference_config_loads(folder: Path) -> None:
    path = write(folder, REFERENCE)
    with pytest.warns(ConfigWarning, match=r"data\.tree: only used for \.root files"):
        cfg = load_config(path)
    assert cfg.data.path == folder / "data.npy"
    assert cfg.data.path.is_absolute()
    assert cfg.data.columns == ["mjj", "mj1", "delta_mj", "tau21_j1", "tau21_j2"]
    assert cfg.data.tree == "events"
    assert cfg.data.resonant == "mjj"
    assert cfg.data.features == ["mj1", "delta_mj", "tau21_j1", "tau21_j2"]
    assert cfg.data.bounds == {"mj1": (0.0, 1.0)}
    assert cfg.windows.fit == (3.3, 3.7)
    assert cfg.windows.signal_region == (3.44, 3.56)
    assert cfg.windows.sidebands == ((3.3, 3.44), (3.56, 3.7))
    bg = cfg.background
    assert bg.mass_shape == "dijet"
    assert (bg.generator.type, bg.generator.ensemble, bg.generator.epochs, bg.generator.seed) == (
        "maf-rqs",
        5,
        100,
        1,
    )
    assert not bg.generator.is_saved
    assert (bg.generator.layers, bg.generator.hidden, bg.generator.bins) == (5, 64, 8)
    assert bg.generator.aggregate == "prob"
    assert bg.generator.bootstrap is True
    assert bg.generator.flow_kwargs()["transform"] == "rqs"
    assert bg.generator.train_kwargs()["seed"] == 1
    sig = cfg.signal
    assert sig.simulation.path == folder / "sig.npy"
    assert sig.simulation.columns == cfg.data.columns
    assert sig.mass_shape == "gauss"
    assert (sig.generator.type, sig.generator.ensemble, sig.generator.seed) == ("maf-rqs", 1, 2)
    assert sig.mass is None
    assert cfg.nuisances.generator == "eigen"
    assert cfg.nuisances.n_eigen == 2
    assert cfg.model.hisigma_sidebands is False
    assert cfg.inference.discovery is True
    assert cfg.inference.upper_limit is not None
    assert cfg.inference.upper_limit.cl == 0.95
    assert cfg.inference.upper_limit.calculator == "asymptotic"
    assert (cfg.inference.poi, cfg.inference.seed, cfg.inference.backend) == ("yield", 0, "zfit")


def test_defaults(folder: Path) -> None:
    cfg = raw()
    for key in ("background", "nuisances", "inference"):
        del cfg[key]
    out = load_config(write(folder, cfg))
    assert out.background.mass_shape == "dijet"
    assert out.background.generator.type == "maf-rqs"
    assert out.nuisances.generator == "none"
    assert out.inference.discovery is True
    assert out.inference.upper_limit is None


def test_import_is_pure() -> None:
    code = "import sys, zfit_gbi.config; print(sorted({'tensorflow', 'zfit'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_round_trip(folder: Path) -> None:
    cfg = raw()
    cfg["background"]["generator"] = {"path": "bkg_model"}
    cfg["signal"]["generator"] = {"type": "maf-affine", "epochs": 3}
    (folder / "bkg_model").mkdir()
    cfg["nuisances"] = {"generator": "none"}
    first = load_config(write(folder, cfg))
    assert first.background.generator.is_saved
    assert first.background.generator.path == folder / "bkg_model"
    assert RunConfig.model_validate(first.model_dump()) == first
    dumped = first.model_dump()
    assert dumped["background"]["generator"] == {"path": folder / "bkg_model"}
    assert "bins" not in dumped["signal"]["generator"]  # maf-rqs only
    out = folder / "sub" / "dumped.yaml"
    out.parent.mkdir()
    assert load_config(dump_config(first, out)) == first  # absolute paths: any folder


def test_unknown_keys_are_named(folder: Path) -> None:
    cfg = raw()
    cfg["backgrund"] = cfg.pop("background")
    msg = error(folder, cfg)
    assert "  backgrund: unknown key (did you mean 'background'?)" in msg
    assert "allowed keys: data, windows, background, signal" in msg

    cfg = raw()
    cfg["background"]["generator"] = {"typ": "maf-rqs"}
    msg = error(folder, cfg)
    assert "background.generator.typ: unknown key (did you mean 'type'?)" in msg


def test_wrong_type_names_the_key(folder: Path) -> None:
    cfg = raw()
    cfg["background"]["generator"]["epochs"] = "many"
    msg = error(folder, cfg)
    assert "background.generator.epochs: " in msg
    assert "valid integer (got 'many')" in msg

    cfg = raw()
    cfg["inference"]["discovery"] = "yes"
    cfg["signal"]["generator"]["epochs"] = 0
    msg = error(folder, cfg)
    assert "invalid config (2 problems)" in msg
    assert "inference.discovery: Input should be a valid boolean (got 'yes')" in msg
    assert "signal.generator.epochs: Input should be greater than or equal to 1 (got 0)" in msg


def test_allowed_values_are_listed(folder: Path) -> None:
    cfg = raw()
    cfg["background"]["mass_shape"] = "expo"
    cfg["signal"]["mass_shape"] = "crystalball"
    cfg["nuisances"]["generator"] = "bootstrap"
    cfg["inference"]["upper_limit"]["calculator"] = "toy"
    msg = error(folder, cfg)
    assert (
        "background.mass_shape: unknown value 'expo'; allowed values: "
        "dijet, exppoly2, exppoly3, bernstein3, bernstein4"
    ) in msg
    assert "signal.mass_shape: unknown value 'crystalball'; allowed values: gauss, dscb" in msg
    assert (
        "nuisances.generator: unknown value 'bootstrap'; allowed values: none, envelope, eigen, updown"
        in msg
    )
    assert (
        "inference.upper_limit.calculator: unknown value 'toy'; allowed values: asymptotic, toys"
        in msg
    )


@pytest.mark.parametrize(
    ("windows", "key", "text"),
    [
        (
            {"fit": [3.3, 3.7], "signal_region": [3.2, 3.5]},
            "windows.signal_region",
            "strictly inside the fit window [3.3, 3.7]",
        ),
        (
            {"fit": [3.3, 3.7], "signal_region": [3.5, 3.9]},
            "windows.signal_region",
            "strictly inside the fit window",
        ),
        (
            {"fit": [3.3, 3.7], "signal_region": [3.3, 3.5]},
            "windows.signal_region",
            "strictly inside the fit window",
        ),
        (
            {"fit": [3.7, 3.3], "signal_region": [3.44, 3.56]},
            "windows.fit",
            "[3.7, 3.3] must have low < high",
        ),
        (
            {"fit": [3.3, 3.7], "signal_region": [3.56, 3.44]},
            "windows.signal_region",
            "must have low < high",
        ),
        (
            {"fit": [3.3], "signal_region": [3.44, 3.56]},
            "windows.fit[1]",
            "missing item: expected [low, high]",
        ),
    ],
)
def test_bad_windows(folder: Path, windows: dict, key: str, text: str) -> None:
    cfg = raw()
    cfg["windows"] = windows
    msg = error(folder, cfg)
    assert f"  {key}: " in msg
    assert text in msg


def test_path_and_training_keys_are_exclusive(folder: Path) -> None:
    cfg = raw()
    cfg["background"]["generator"] = {"path": "model", "epochs": 10, "type": "maf-rqs"}
    msg = error(folder, cfg)
    assert "background.generator: `path` (load a saved generator) and training settings" in msg
    assert "(type, epochs) are mutually exclusive" in msg
    with pytest.raises(ValueError, match="mutually exclusive"):
        GeneratorConfig.model_validate({"path": "m", "seed": 1})


def test_rqs_only_keys_and_ensemble_nuisances(folder: Path) -> None:
    cfg = raw()
    cfg["background"]["generator"] = {"type": "maf-affine", "bins": 4, "ensemble": 1}
    msg = error(folder, cfg)
    assert "background.generator.bins: only for type maf-rqs" in msg

    cfg = raw()
    cfg["background"]["generator"]["ensemble"] = 1
    msg = error(folder, cfg)
    assert (
        "nuisances.generator: 'eigen' needs an ensemble: set background.generator.ensemble >= 2"
        in msg
    )
    cfg["nuisances"]["generator"] = "updown"
    assert "nuisances.generator: 'updown' needs an ensemble" in error(folder, cfg)

    cfg = raw()
    cfg["nuisances"]["n_eigen"] = 5
    msg = error(folder, cfg)
    assert "nuisances.n_eigen: 5 > background.generator.ensemble - 1 = 4" in msg


def test_spurious_signal_key(folder: Path) -> None:
    for value in (True, 12.5, 3, False):
        cfg = raw()
        cfg["nuisances"]["spurious_signal"] = value
        assert validate_config(cfg, base_dir=folder).nuisances.spurious_signal == value
    cfg = raw()
    cfg["nuisances"]["spurious_signal"] = -2.0
    assert "nuisances.spurious_signal" in error(folder, cfg)
    cfg["nuisances"]["spurious_signal"] = "yes"
    assert "nuisances.spurious_signal" in error(folder, cfg)
    cfg = raw()
    cfg["nuisances"] = {"generator": "none", "spurious_signal": True}
    cfg["background"]["generator"]["ensemble"] = 1
    assert "nuisances.spurious_signal: true measures the width with the background ensemble's members" in error(folder, cfg)
    cfg["nuisances"]["spurious_signal"] = 4.0  # a given width needs no ensemble
    assert validate_config(cfg, base_dir=folder).nuisances.spurious_signal == 4.0
    cfg["inference"]["backend"] = "pyhf"  # the binned route has it too
    assert validate_config(cfg, base_dir=folder).nuisances.spurious_signal == 4.0


def test_data_cross_checks(folder: Path) -> None:
    cfg = raw()
    cfg["data"]["features"] = ["mjj", "mj1", "pt"]
    msg = error(folder, cfg)
    assert "data.features: must not contain the resonant variable 'mjj'" in msg
    assert "data.features: ['pt'] not in data.columns" in msg

    cfg = raw()
    cfg["data"]["bounds"] = {"mjj": [3.0, 4.0], "mj1": [1.0, 0.0]}
    msg = error(folder, cfg)
    assert "data.bounds.mjj: not a feature (its range is windows.fit)" in msg
    assert "data.bounds.mj1: bounds [1, 0] must have low < high" in msg

    cfg = raw()
    cfg["data"]["resonant"] = "m"
    cfg["signal"]["simulation"]["columns"] = ["mjj", "mj1"]
    msg = error(folder, cfg)
    assert "data.resonant: ['m'] not in data.columns" in msg

    cfg = raw()
    cfg["signal"]["simulation"]["columns"] = ["mjj", "mj1"]
    cfg["signal"]["mass"] = 4.0
    msg = error(folder, cfg)
    assert "signal.simulation.columns: missing ['delta_mj', 'tau21_j1', 'tau21_j2']" in msg
    assert "signal.mass: 4 is outside the fit window [3.3, 3.7]" in msg


def test_npy_needs_columns_and_file_types(folder: Path) -> None:
    cfg = raw()
    del cfg["data"]["columns"]
    msg = error(folder, cfg)
    assert "data.columns: required for a .npy file" in msg

    cfg = raw()
    cfg["data"]["path"] = "data.txt"
    msg = error(folder, cfg)
    assert "data.path: unknown file type '.txt'" in msg
    assert "allowed: .npy, .csv, .parquet, .pq, .root" in msg

    # other formats: columns optional, tree fine for ROOT
    cfg = raw()
    (folder / "data.root").touch()
    cfg["data"] = {"path": "data.root", "tree": "events", "resonant": "mjj", "features": ["mj1"]}
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConfigWarning)
        out = load_config(write(folder, cfg))
    assert out.data.tree == "events"
    assert out.data.columns is None


def test_relative_paths_resolve_against_the_yaml_folder(folder: Path, monkeypatch) -> None:
    sub = folder / "configs"
    sub.mkdir()
    cfg = raw()
    cfg["data"]["path"] = "../data.npy"
    cfg["signal"]["simulation"]["path"] = str(folder / "sig.npy")  # absolute stays
    monkeypatch.chdir("/")
    out = load_config(write(sub, cfg))
    assert out.data.path == sub / ".." / "data.npy"
    assert out.data.path.resolve() == (folder / "data.npy").resolve()
    assert out.signal.simulation.path == folder / "sig.npy"

    # a missing file is named with its resolved path; check_paths=False skips the check
    cfg["data"]["path"] = "nothere.npy"
    msg = error(sub, cfg)
    assert f"data.path: no such file or folder: {sub / 'nothere.npy'}" in msg
    assert load_config(sub / "run.yaml", check_paths=False).data.path == sub / "nothere.npy"


def test_yaml_python_tags_are_not_executed(folder: Path) -> None:
    """The safe loader refuses Python tags anywhere in the file; nothing runs."""
    marker = folder / "executed"
    for text in (f"!!python/object/apply:os.system ['touch {marker}']\n",
                 f"data: !!python/object/apply:os.system ['touch {marker}']\nwindows: {{}}\n"):
        msg = error(folder, text)
        assert "could not determine a constructor for the tag" in msg
        assert "python/object/apply" in msg
    assert not marker.exists()


def test_no_config_key_names_an_output_path(folder: Path) -> None:
    """Outputs go under --out with fixed names: the only key that shapes a file name, the plot
    format, takes png or pdf only (no '../' smuggled into a suffix)."""
    cfg = raw()
    cfg["plots"] = {"formats": ["png", "../../escape"]}
    msg = error(folder, cfg)
    assert "plots.formats" in msg
    assert "png" in msg


def test_yaml_syntax_errors_have_line_numbers(folder: Path) -> None:
    text = REFERENCE.replace("  resonant: mjj\n", "  resonant: mjj\n   oops: 1\n")
    msg = error(folder, text)
    assert "YAML syntax error" in msg
    assert "line 6, column 8: mapping values are not allowed here" in msg

    msg = error(folder, "data: {}\nwindows: {}\ndata: {}\n")
    assert "line 3, column 1: duplicate key 'data' (first at line 1)" in msg


def test_top_level_and_missing_file(folder: Path) -> None:
    msg = error(folder, "- data\n- windows\n")
    assert "the top level must be a mapping with keys data, windows" in msg
    assert "got a list" in msg
    assert "the file is empty" in error(folder, "# nothing\n")

    missing = folder / "absent.yaml"
    with pytest.raises(
        ConfigError, match=rf"^{missing}: cannot read config\n  no such config file"
    ):
        load_config(missing)

    msg = error(folder, {"data": raw()["data"]})
    assert "  windows: required key is missing" in msg
    assert "  signal: required key is missing" in msg


def test_yaml_floats_and_strict_scalars(folder: Path) -> None:
    text = REFERENCE.replace("epochs: 100, seed: 1}", "epochs: 100, seed: 1, learning_rate: 1e-3}")
    text = text.replace("  tree: events                 # ROOT only\n", "")
    assert load_config(write(folder, text)).background.generator.learning_rate == 1e-3
    assert yaml.safe_load("x: 1e-3") == {"x": "1e-3"}  # the global SafeLoader is untouched

    cfg = raw()
    cfg["background"]["generator"]["epochs"] = 100.5
    cfg["data"]["columns"][0] = True  # e.g. an unquoted `on` or `yes`
    cfg["windows"]["fit"] = [3.3, float("inf")]
    msg = error(folder, cfg)
    assert "background.generator.epochs: Input should be a valid integer" in msg
    assert "data.columns[0]: Input should be a valid string (got True); YAML reads yes/no" in msg
    assert "windows.fit[1]: Input should be a finite number" in msg


def test_validate_config_without_a_file(monkeypatch, folder: Path) -> None:
    monkeypatch.chdir(folder)
    cfg = validate_config(raw())
    assert cfg.data.path == folder / "data.npy"  # relative to the working directory
    bad = raw()
    bad["inference"]["poi"] = "mu"
    with pytest.raises(ConfigError) as info:
        validate_config(bad, source="inline")
    assert str(info.value).startswith("inline: invalid config (1 problem)")
    assert info.value.problems == [
        (
            "inference.reference_yield",
            "required when poi is 'mu' (mu = signal yield / reference_yield)",
        )
    ]


def test_backend_plots_and_profile_keys(folder: Path) -> None:
    """The binned backend takes asymptotic calculators and eigen/updown nuisances only; the
    binned section, plots and the profile scan are configurable and their values checked."""
    cfg = raw()
    cfg["inference"]["backend"] = "pyhf"
    cfg["inference"]["upper_limit"] = {"calculator": "toys"}
    cfg["binned"] = {"mass_bins": 0, "modifier": "shapesys"}
    cfg["inference"]["profile_points"] = 2
    cfg["plots"] = {"style": "Belle", "formats": ["png", "svg"]}
    msg = error(folder, cfg)
    assert "inference.upper_limit.calculator: 'toys' is available for the zfit backend only (backend is 'pyhf')" in msg
    assert "binned.mass_bins" in msg
    assert "binned.modifier: unknown value 'shapesys'" in msg
    assert "inference.profile_points: 2: use 0 (no scan) or at least 3" in msg
    assert "plots.style: unknown value 'Belle'; allowed values: CMS, ATLAS, LHCb" in msg
    assert "plots.formats[1]: unknown value 'svg'; allowed values: 'png' or 'pdf'" in msg
    cfg = raw()
    cfg["inference"]["backend"] = "both"
    cfg["nuisances"] = {"generator": "envelope"}
    cfg["background"]["generator"]["ensemble"] = 3
    assert "nuisances.generator: 'envelope' (profiling over models) has no binned equivalent" in error(folder, cfg)
    cfg = raw()
    cfg["binned"] = {"variation_bins": 2}
    cfg["nuisances"] = {"generator": "none"}
    assert "binned.variation_bins: splits the bins by the generator variations: needs nuisances.generator 'eigen' or 'updown'" in error(folder, cfg)
    cfg["nuisances"] = {"generator": "eigen", "n_eigen": 2}
    cfg["background"]["generator"]["ensemble"] = 3
    assert load_config(write(folder, cfg)).binned.variation_bins == 2
    cfg = raw()
    cfg["plots"] = {"style": "ATLAS", "label": "Open Data", "enabled": False}
    run = load_config(write(folder, cfg))
    assert (run.plots.style, run.plots.label, run.plots.enabled, run.plots.formats) == ("ATLAS", "Open Data", False, ["png", "pdf"])
    assert run.inference.profile_points == 15
    assert (run.binned.mass_bins, run.binned.score_bins, run.binned.variation_bins, run.binned.modifier) == (4, 10, None, "custom")
    # the default split: 2 with one or two variation parameters, none without or with more
    assert [run.binned.split_for(j) for j in range(5)] == [1, 2, 2, 1, 1]
    cfg["binned"] = {"variation_bins": 3}
    assert [load_config(write(folder, cfg)).binned.split_for(j) for j in (0, 1, 4)] == [3, 3, 3]


def test_compute_executor_validated(tmp_path):
    """compute.executor takes the executor names and scheduler addresses; a typo names the key
    and the allowed forms."""
    from zfit_gbi.config import ConfigError, validate_config

    base = {"data": {"path": "d.npy", "columns": ["m", "a"], "resonant": "m", "features": ["a"]},
            "windows": {"fit": [0.0, 1.0], "signal_region": [0.4, 0.6]},
            "signal": {"simulation": {"path": "s.npy", "columns": ["m", "a"]}}}
    for ok in ("sequential", "processes", "processes:4", "dask", "tcp://10.0.0.1:8786"):
        assert validate_config({**base, "compute": {"executor": ok}}, base_dir=tmp_path).compute.executor == ok
    assert validate_config(base, base_dir=tmp_path).compute.executor == "sequential"
    with pytest.raises(ConfigError, match=r"compute\.executor.*unknown executor 'proceses'"):
        validate_config({**base, "compute": {"executor": "proceses"}}, base_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"compute\.executor"):
        validate_config({**base, "compute": {"executor": "processes:0"}}, base_dir=tmp_path)


def test_signal_model_keys(tmp_path):
    """signal.model: simulation needs a simulation; data-driven takes one or a width (not both),
    trains its signal flow (no saved path, no ensemble), keeps signal.mass inside the signal
    region, and warns about the keys it does not use; a typo of the model lists the allowed ones."""
    from zfit_gbi.config import ConfigError, ConfigWarning, validate_config

    base = {"data": {"path": "d.npy", "columns": ["m", "a"], "resonant": "m", "features": ["a"]},
            "windows": {"fit": [0.0, 1.0], "signal_region": [0.4, 0.6]}}
    sim = {"path": "s.npy", "columns": ["m", "a"]}

    def problems(signal: dict, **more) -> str:
        with pytest.raises(ConfigError) as info:
            validate_config({**base, "signal": signal, **more}, base_dir=tmp_path)
        return str(info.value)

    assert "signal.simulation: required for model 'simulation'" in problems({})
    assert "signal.width: only for model 'data-driven'" in problems({"simulation": sim, "width": 0.1})
    assert "signal.width: required for model 'data-driven' without a simulation" in problems({"model": "data-driven"})
    assert "signal.width: not with a simulation" in problems({"model": "data-driven", "simulation": sim, "width": 0.1})
    assert "signal.generator.ensemble" in problems({"model": "data-driven", "width": 0.1, "generator": {"ensemble": 3}})
    assert "signal.generator.path" in problems({"model": "data-driven", "width": 0.1, "generator": {"path": "g"}})
    assert "outside the signal region [0.4, 0.6]" in problems({"model": "data-driven", "width": 0.1, "mass": 0.2})
    assert "allowed values: simulation, data-driven" in problems({"model": "parametrised", "simulation": sim})
    assert "signal.data_driven.w_range: needs 0 < low < high <= 1" in problems(
        {"model": "data-driven", "width": 0.1, "data_driven": {"w_range": [0.1, 0.01]}})
    cfg = validate_config({**base, "signal": {"model": "data-driven", "width": 0.05}}, base_dir=tmp_path)
    assert cfg.signal.simulation is None
    assert cfg.signal.data_driven.null_toys == 10
    with pytest.warns(ConfigWarning, match="nuisances.generator 'eigen' not used"):
        validate_config({**base, "signal": {"model": "data-driven", "simulation": sim},
                         "background": {"generator": {"ensemble": 3}}, "nuisances": {"generator": "eigen"}}, base_dir=tmp_path)


def test_signal_in_sidebands_keys(tmp_path):
    """background.signal_in_sidebands: auto (default), model or ignore; only the simulation mode
    uses it (the others warn); a typo names the allowed values, zero iterations are refused."""
    from zfit_gbi.config import ConfigError, ConfigWarning, validate_config

    base = {"data": {"path": "d.npy", "columns": ["m", "a"], "resonant": "m", "features": ["a"]},
            "windows": {"fit": [0.0, 1.0], "signal_region": [0.4, 0.6]},
            "signal": {"simulation": {"path": "s.npy", "columns": ["m", "a"]}}}
    assert validate_config(base, base_dir=tmp_path).background.signal_in_sidebands == "auto"
    cfg = validate_config({**base, "background": {"signal_in_sidebands": "model", "signal_in_sidebands_iterations": 2}}, base_dir=tmp_path)
    assert (cfg.background.signal_in_sidebands, cfg.background.signal_in_sidebands_iterations) == ("model", 2)
    with pytest.raises(ConfigError, match=r"background\.signal_in_sidebands.*auto, model, ignore"):
        validate_config({**base, "background": {"signal_in_sidebands": "subtract"}}, base_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"background\.signal_in_sidebands_iterations"):
        validate_config({**base, "background": {"signal_in_sidebands_iterations": 0}}, base_dir=tmp_path)
    with pytest.warns(ConfigWarning, match="background.signal_in_sidebands 'model' not used"):
        validate_config({**base, "signal": {"model": "data-driven", "width": 0.1}, "background": {"signal_in_sidebands": "model"}},
                        base_dir=tmp_path)
    with pytest.warns(ConfigWarning, match="background.signal_in_sidebands 'model' needs a signal density"):
        validate_config({**base, "signal": {**base["signal"], "model": "parametrized"}, "background": {"signal_in_sidebands": "model"}},
                        base_dir=tmp_path)


def test_jit_compile_unset_means_xla_only_for_generators_trained_once() -> None:
    """Unset: the generators trained once per run use XLA, the data-driven mode's signal flows
    (hundreds per run; TensorFlow keeps every compiled step) do not; set, it applies to both,
    and survives a dump and reload (None is not turned into a value)."""
    from types import SimpleNamespace

    from zfit_gbi.config import DataDrivenConfig
    from zfit_gbi.data_driven import _settings

    def data_driven_jit(g: GeneratorConfig) -> bool:
        cfg = SimpleNamespace(signal=SimpleNamespace(data_driven=DataDrivenConfig(), generator=g),
                              data=SimpleNamespace(features=["a"]))
        return _settings(cfg, {"a": (0.0, 1.0)})["train"]["jit_compile"]

    unset = GeneratorConfig(type="maf-affine")
    assert unset.jit_compile is None
    assert unset.train_kwargs()["jit_compile"] is True
    assert data_driven_jit(unset) is False
    assert GeneratorConfig.model_validate(unset.model_dump(mode="json")).jit_compile is None
    for value in (True, False):
        g = GeneratorConfig(type="maf-affine", jit_compile=value)
        assert g.train_kwargs()["jit_compile"] is value
        assert data_driven_jit(g) is value


def test_generator_layout_reaches_the_flow(tmp_path) -> None:
    """The default layout is FlowConfig's (1); ``background.generator.layout: 4`` (nflows'
    blocks and MADE, as CATHODE and HI-SIGMA train) reaches FlowConfig; an out-of-range or
    non-integer layout names the key; a layout with a saved ``path`` is a training setting, so
    an error."""
    from zfit_gbi.config import ConfigError, validate_config
    from zfit_gbi.generators import FlowConfig

    assert GeneratorConfig().layout == FlowConfig().layout == 1
    assert FlowConfig(**GeneratorConfig().flow_kwargs()).layout == 1
    g = GeneratorConfig(type="maf-affine", batch_norm=True, layout=4)
    assert FlowConfig(**g.flow_kwargs()).layout == 4
    assert GeneratorConfig.model_validate(g.model_dump(mode="json")).layout == 4
    base = {"data": {"path": "d.npy", "columns": ["m", "a"], "resonant": "m", "features": ["a"]},
            "windows": {"fit": [0.0, 1.0], "signal_region": [0.4, 0.6]},
            "signal": {"simulation": {"path": "s.npy", "columns": ["m", "a"]}}}
    for bad in (5, 0, "4", True, 4.0):
        with pytest.raises(ConfigError, match=r"background\.generator\.layout"):
            validate_config({**base, "background": {"generator": {"layout": bad}}}, base_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"mutually exclusive"):
        validate_config({**base, "background": {"generator": {"path": "gen", "layout": 4}}}, base_dir=tmp_path)


def test_generator_mixed_precision_reaches_training(tmp_path) -> None:
    """``background.generator.mixed_precision``: unset is float32; float16 / bfloat16 reach
    TrainConfig (the generators' and the data-driven signal flows'); anything else names the
    key and the choices; a dump keeps it."""
    from zfit_gbi.config import ConfigError, validate_config
    from zfit_gbi.generators import TrainConfig

    assert GeneratorConfig().train_kwargs()["mixed_precision"] is None
    g = GeneratorConfig(type="maf-affine", mixed_precision="bfloat16")
    assert TrainConfig(**g.train_kwargs()).mixed_precision == "bfloat16"
    assert TrainConfig(**g.train_kwargs(many=True)).mixed_precision == "bfloat16"
    assert GeneratorConfig.model_validate(g.model_dump(mode="json")).mixed_precision == "bfloat16"
    base = {"data": {"path": "d.npy", "columns": ["m", "a"], "resonant": "m", "features": ["a"]},
            "windows": {"fit": [0.0, 1.0], "signal_region": [0.4, 0.6]},
            "signal": {"simulation": {"path": "s.npy", "columns": ["m", "a"]}}}
    for bad in ("fp16", "float32", True, 16):
        with pytest.raises(ConfigError, match=r"background\.generator\.mixed_precision: .*allowed values: float16, bfloat16"):
            validate_config({**base, "background": {"generator": {"mixed_precision": bad}}}, base_dir=tmp_path)
