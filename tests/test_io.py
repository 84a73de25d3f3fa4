"""Saving and loading generators: round trips, the model.json content, and bad folders."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from zfit_gbi.generators import Flow, FlowConfig, FlowEnsemble, ModelFileError, load, save
from zfit_gbi.generators.io import FORMAT_VERSION, flow_from_state, flow_state, read_metadata

# ---- helpers ---------------------------------------------------------------------------------

_UNPICKLED: list[str] = []


def _mark_unpickled() -> str:
    _UNPICKLED.append("unpickled")
    return "unpickled"


class _Sentinel:
    """An object that records it was unpickled (so a test can tell that no pickle ran)."""

    def __reduce__(self):
        return (_mark_unpickled, ())


def _meta(folder: Path) -> dict:
    return json.loads((folder / "model.json").read_text())


def _write_meta(folder: Path, meta: dict) -> None:
    (folder / "model.json").write_text(json.dumps(meta, indent=1))


def _rehash(folder: Path) -> None:
    """Store the SHA-256 of the current weights.npz in model.json (so the checksum passes)."""
    meta = _meta(folder)
    meta["weights_sha256"] = hashlib.sha256((folder / "weights.npz").read_bytes()).hexdigest()
    _write_meta(folder, meta)


def _names(folder: Path, file: str) -> str:
    """A regex matching the path of ``file`` inside ``folder`` (the error must name it)."""
    return re.escape(str(folder / file))


@pytest.fixture(scope="module")
def events(bench):
    ev = bench.sample(300, 0, seed=21)
    return ev.array(bench.features), ev["mjj"]


def _log_prob(model, events) -> np.ndarray:
    x, m = events
    return model.log_prob(x, m if model.n_context else None)


def _sample(model, seed: int) -> np.ndarray:
    return model.sample(200, np.array([3.5]) if model.n_context else None, seed=seed)


@pytest.fixture(scope="module")
def ensemble_members(bench) -> list[Flow]:
    ev = bench.sample(2000, 0, seed=31)
    ens = FlowEnsemble.train(
        ev.array(bench.features),
        ev["mjj"],
        features=bench.features,
        bounds=bench.bounds,
        context_names=("mjj",),
        k=2,
        config=FlowConfig(n_layers=2, hidden_units=(8, 8)),
        epochs=1,
        progress=False,
        jit_compile=False,
    )
    return ens.members


@pytest.fixture(params=["cond", "uncond", "ensemble-prob", "ensemble-logprob"])
def model(request, ensemble_members):
    if request.param == "cond":
        return request.getfixturevalue("cond_flow")
    if request.param == "uncond":
        return request.getfixturevalue("uncond_flow")
    return FlowEnsemble(ensemble_members, request.param.removeprefix("ensemble-"))


@pytest.fixture
def saved(tmp_path, uncond_flow) -> Path:
    """A small flow saved to a fresh folder, to be damaged by the error tests."""
    return save(uncond_flow, tmp_path / "model")


# ---- round trips ------------------------------------------------------------------------------


def test_round_trip_log_prob_and_attributes(model, events, tmp_path):
    folder = save(model, tmp_path / "gen")
    assert folder == tmp_path / "gen"
    loaded = load(folder)

    assert type(loaded) is type(model)
    np.testing.assert_allclose(
        _log_prob(loaded, events), _log_prob(model, events), rtol=1e-12, atol=0
    )
    assert loaded.features == model.features
    assert loaded.bounds == model.bounds
    assert loaded.context == model.context
    assert repr(loaded) == repr(model)

    flows = loaded.members if isinstance(loaded, FlowEnsemble) else [loaded]
    originals = model.members if isinstance(model, FlowEnsemble) else [model]
    assert len(flows) == len(originals)
    for new, old in zip(flows, originals, strict=True):
        assert new.config == old.config
        assert new.history == old.history
        assert new.history.val_loss == old.history.val_loss
        assert new.history.best_epoch == old.history.best_epoch >= 0
        assert new.history.stopped == old.history.stopped
        assert new.history.n_train == old.history.n_train > 0
        np.testing.assert_array_equal(new.x_mean, old.x_mean)
        np.testing.assert_array_equal(new.x_std, old.x_std)
        np.testing.assert_array_equal(new.c_mean, old.c_mean)
        np.testing.assert_array_equal(new.c_std, old.c_std)
        for wn, wo in zip(new.get_weights(), old.get_weights(), strict=True):
            np.testing.assert_array_equal(wn, wo)
    if isinstance(model, FlowEnsemble):
        assert loaded.aggregate == model.aggregate


def test_round_trip_sampling_with_seed(model, tmp_path):
    loaded = load(save(model, tmp_path / "gen"))
    before = _sample(model, seed=7)
    after = _sample(loaded, seed=7)
    np.testing.assert_array_equal(after, before)
    assert not np.array_equal(_sample(loaded, seed=8), before)  # the seed matters


def test_load_twice_in_one_process(cond_flow, events, tmp_path):
    folder = save(cond_flow, tmp_path / "gen")
    first, second = load(folder), load(folder)
    assert first is not second
    lp1, lp2 = _log_prob(first, events), _log_prob(second, events)
    np.testing.assert_array_equal(lp1, lp2)
    np.testing.assert_allclose(lp1, _log_prob(cond_flow, events), rtol=1e-12, atol=0)


def test_load_accepts_str_path(uncond_flow, events, tmp_path):
    folder = save(uncond_flow, str(tmp_path / "a" / "b"))  # nested folders are created
    assert (folder / "model.json").is_file()
    assert (folder / "weights.npz").is_file()
    np.testing.assert_allclose(
        _log_prob(load(str(folder)), events), _log_prob(uncond_flow, events), rtol=1e-12, atol=0
    )


# ---- model.json -------------------------------------------------------------------------------


def test_model_json_content_flow(cond_flow, tmp_path):
    folder = save(cond_flow, tmp_path / "gen")
    meta = _meta(folder)
    assert meta["format"] == "zfit-gbi-generator"
    assert meta["format_version"] == FORMAT_VERSION == 2
    assert meta["flows"][0]["config"]["layout"] == cond_flow.config.layout == 1
    assert meta["kind"] == "flow"
    assert meta["aggregate"] is None
    assert meta["weights_file"] == "weights.npz"
    assert (
        meta["weights_sha256"] == hashlib.sha256((folder / "weights.npz").read_bytes()).hexdigest()
    )
    assert set(meta["versions"]) >= {"tensorflow", "tensorflow-probability", "zfit-gbi", "numpy"}
    assert meta["versions"]["numpy"] == np.__version__
    assert all(isinstance(v, str) and v for v in meta["versions"].values())

    (fm,) = meta["flows"]
    assert fm["features"] == list(cond_flow.features)
    assert fm["context"] == ["mjj"]
    assert fm["bounds"] == {k: list(v) for k, v in cond_flow.bounds.items()}
    assert fm["config"]["hidden_units"] == list(cond_flow.config.hidden_units)
    assert fm["config"]["n_layers"] == cond_flow.config.n_layers
    assert fm["config"]["transform"] == cond_flow.config.transform
    pre = fm["preprocessing"]
    assert "logit" in pre["box_to_R"]
    np.testing.assert_array_equal(pre["x_mean"], cond_flow.x_mean)
    np.testing.assert_array_equal(pre["x_std"], cond_flow.x_std)
    np.testing.assert_array_equal(pre["c_mean"], cond_flow.c_mean)
    np.testing.assert_array_equal(pre["c_std"], cond_flow.c_std)
    hist = fm["history"]
    assert hist["val_loss"] == cond_flow.history.val_loss
    assert hist["train_loss"] == cond_flow.history.train_loss
    assert hist["best_epoch"] == cond_flow.history.best_epoch
    assert hist["stopped"] == cond_flow.history.stopped
    assert hist["n_train"] == cond_flow.history.n_train


def test_model_json_content_ensemble(ensemble_members, tmp_path):
    ens = FlowEnsemble(ensemble_members, "logprob")
    meta = _meta(save(ens, tmp_path / "gen"))
    assert meta["kind"] == "ensemble"
    assert meta["aggregate"] == "logprob"
    assert len(meta["flows"]) == 2
    assert [fm["seed"] for fm in meta["flows"]] == [m._seed for m in ensemble_members]
    assert meta["flows"][0]["history"]["val_loss"] != meta["flows"][1]["history"]["val_loss"]


def test_read_metadata_does_not_need_weights(cond_flow, tmp_path, monkeypatch):
    folder = save(cond_flow, tmp_path / "gen")
    (folder / "weights.npz").unlink()

    def no_load(*args, **kwargs):
        raise AssertionError("read_metadata must not read weights")

    monkeypatch.setattr(np, "load", no_load)
    meta = read_metadata(folder)
    assert meta["kind"] == "flow"
    assert meta["flows"][0]["features"] == list(cond_flow.features)
    assert read_metadata(folder / "model.json") == meta  # the file itself also works


# ---- bad folders ------------------------------------------------------------------------------


def test_error_truncated_weights(saved):
    w = saved / "weights.npz"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    with pytest.raises(ModelFileError, match=_names(saved, "weights.npz") + ".*checksum"):
        load(saved)


def test_error_weights_from_another_model(saved, cond_flow, tmp_path):
    other = save(cond_flow, tmp_path / "other")
    shutil.copyfile(other / "weights.npz", saved / "weights.npz")
    with pytest.raises(ModelFileError, match=_names(saved, "weights.npz") + ".*another model"):
        load(saved)


def test_error_truncated_model_json(saved):
    m = saved / "model.json"
    m.write_text(m.read_text()[: len(m.read_text()) // 2])
    with pytest.raises(ModelFileError, match=_names(saved, "model.json") + ".*not valid JSON"):
        load(saved)
    with pytest.raises(ModelFileError, match=_names(saved, "model.json")):
        read_metadata(saved)


def test_error_future_format_version(saved):
    meta = _meta(saved)
    meta["format_version"] = 99
    _write_meta(saved, meta)
    with pytest.raises(ModelFileError, match=_names(saved, "model.json") + ".*99.*upgrade"):
        load(saved)


@pytest.mark.parametrize("version", [0, -1, "1", None])
def test_error_invalid_format_version(saved, version):
    meta = _meta(saved)
    meta["format_version"] = version
    _write_meta(saved, meta)
    with pytest.raises(ModelFileError, match=_names(saved, "model.json") + ".*format_version"):
        load(saved)


def test_error_wrong_format(saved):
    meta = _meta(saved)
    meta["format"] = "keras"
    _write_meta(saved, meta)
    with pytest.raises(
        ModelFileError, match=_names(saved, "model.json") + ".*not a zfit-gbi generator"
    ):
        load(saved)


def test_error_json_not_an_object(saved):
    (saved / "model.json").write_text("[1, 2, 3]")
    with pytest.raises(
        ModelFileError, match=_names(saved, "model.json") + ".*not a zfit-gbi generator"
    ):
        load(saved)


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda meta: meta.update(flows=[]), id="empty-flows"),
        pytest.param(lambda meta: meta.pop("flows"), id="no-flows"),
        pytest.param(lambda meta: meta.update(kind="transformer"), id="bad-kind"),
    ],
)
def test_error_invalid_kind_or_flows(saved, edit):
    meta = _meta(saved)
    edit(meta)
    _write_meta(saved, meta)
    with pytest.raises(ModelFileError, match=_names(saved, "model.json") + ".*'kind' / 'flows'"):
        load(saved)


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda fm: fm.pop("config"), id="no-config"),
        pytest.param(lambda fm: fm["config"].update(transform="bogus"), id="bad-transform"),
        pytest.param(lambda fm: fm["config"].update(colour="red"), id="unknown-config-key"),
        pytest.param(lambda fm: fm["bounds"].update(mj1=[1.0, 0.0]), id="reversed-bounds"),
        pytest.param(lambda fm: fm["preprocessing"].update(x_mean=[0.0]), id="x_mean-shape"),
        pytest.param(lambda fm: fm.update(seed=None), id="seed-none"),
    ],
)
def test_error_invalid_flow_entry(saved, edit):
    meta = _meta(saved)
    edit(meta["flows"][0])
    _write_meta(saved, meta)
    with pytest.raises(
        ModelFileError, match=_names(saved, "model.json") + ".*flow 0: invalid entry"
    ):
        load(saved)


def test_error_weights_do_not_fit_architecture(cond_flow, tmp_path):
    folder = save(cond_flow, tmp_path / "gen")
    meta = _meta(folder)
    assert meta["flows"][0]["config"]["hidden_units"] == [32, 32]
    # the checksum is left as it was: it still passes
    meta["flows"][0]["config"]["hidden_units"] = [16, 16]
    _write_meta(folder, meta)
    with pytest.raises(ModelFileError, match=_names(folder, "weights.npz") + ".*do not fit"):
        load(folder)


def test_error_missing_weight_array(saved):
    with np.load(saved / "weights.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays.pop("flow0/w1")
    np.savez(saved / "weights.npz", **arrays)
    _rehash(saved)
    with pytest.raises(ModelFileError, match=_names(saved, "weights.npz") + ".*do not fit"):
        load(saved)


def test_error_missing_weights_file(saved):
    (saved / "weights.npz").unlink()
    with pytest.raises(ModelFileError, match=_names(saved, "weights.npz") + ".*missing"):
        load(saved)


def test_error_missing_model_json(saved):
    (saved / "model.json").unlink()
    with pytest.raises(ModelFileError, match=_names(saved, "model.json") + ".*no such file"):
        load(saved)


def test_error_missing_folder(tmp_path):
    missing = tmp_path / "never-saved"
    with pytest.raises(
        ModelFileError, match=re.escape(str(missing)) + ".*no such file.*model.json"
    ):
        load(missing)
    assert not missing.exists()  # loading creates nothing


def test_error_pickled_weights_are_not_unpickled(saved):
    _UNPICKLED.clear()
    np.savez(
        saved / "weights.npz",
        **{
            "flow0/w0": np.array([object()], dtype=object),
            "flow0/w1": np.array([_Sentinel()], dtype=object),
        },
    )
    _rehash(saved)
    with pytest.raises(
        ModelFileError, match=_names(saved, "weights.npz") + ".*cannot read weights"
    ):
        load(saved)
    assert _UNPICKLED == []
    # the sentinel does record an unpickling, so the check above could fail
    with np.load(saved / "weights.npz", allow_pickle=True) as npz:
        _ = npz["flow0/w1"]
    assert _UNPICKLED == ["unpickled"]
    _UNPICKLED.clear()


def test_error_weights_not_a_numpy_file(saved):
    (saved / "weights.npz").write_bytes(b"this is not a zip archive\n" * 10)
    _rehash(saved)
    with pytest.raises(
        ModelFileError, match=_names(saved, "weights.npz") + ".*cannot read weights"
    ):
        load(saved)


def test_model_file_error_is_a_value_error():
    assert issubclass(ModelFileError, ValueError)


# ---- saving over an existing folder -----------------------------------------------------------


def test_save_over_existing_folder_replaces_both_files(uncond_flow, cond_flow, events, tmp_path):
    folder = save(uncond_flow, tmp_path / "gen")
    old_meta = _meta(folder)
    save(cond_flow, folder)
    new_meta = _meta(folder)
    assert new_meta["weights_sha256"] != old_meta["weights_sha256"]
    assert (
        new_meta["weights_sha256"]
        == hashlib.sha256((folder / "weights.npz").read_bytes()).hexdigest()
    )
    loaded = load(folder)
    assert loaded.context == ("mjj",)
    assert loaded.config == cond_flow.config
    np.testing.assert_allclose(
        _log_prob(loaded, events), _log_prob(cond_flow, events), rtol=1e-12, atol=0
    )
    assert sorted(os.listdir(folder)) == ["model.json", "weights.npz"]  # no .tmp left


def test_save_keeps_other_files_and_leaves_no_tmp(ensemble_members, tmp_path):
    folder = tmp_path / "gen"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    save(FlowEnsemble(ensemble_members, "prob"), folder)
    save(FlowEnsemble(ensemble_members, "logprob"), folder)
    assert sorted(os.listdir(folder)) == ["model.json", "notes.txt", "weights.npz"]
    assert (folder / "notes.txt").read_text() == "keep me"
    assert load(folder).aggregate == "logprob"


def test_interrupted_weights_write_keeps_old_model(
    uncond_flow, cond_flow, events, tmp_path, monkeypatch
):
    folder = save(uncond_flow, tmp_path / "gen")
    before = {f: (folder / f).read_bytes() for f in ("model.json", "weights.npz")}

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(KeyboardInterrupt):
        save(cond_flow, folder)
    monkeypatch.undo()
    assert sorted(os.listdir(folder)) == ["model.json", "weights.npz"]
    assert {f: (folder / f).read_bytes() for f in before} == before
    np.testing.assert_allclose(
        _log_prob(load(folder), events), _log_prob(uncond_flow, events), rtol=1e-12, atol=0
    )


def test_interrupted_metadata_write_does_not_load_a_mix(
    uncond_flow, cond_flow, tmp_path, monkeypatch
):
    folder = save(uncond_flow, tmp_path / "gen")
    old_json = (folder / "model.json").read_text()
    real_write_text = Path.write_text

    def boom(self, *args, **kwargs):
        if self.name.endswith(".tmp"):
            raise KeyboardInterrupt
        return real_write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", boom)
    with pytest.raises(KeyboardInterrupt):
        save(cond_flow, folder)
    monkeypatch.undo()
    assert sorted(os.listdir(folder)) == ["model.json", "weights.npz"]
    assert (folder / "model.json").read_text() == old_json
    # new weights with the old model.json: refused, never loaded as a mixture of the two
    with pytest.raises(ModelFileError, match=_names(folder, "weights.npz") + ".*checksum"):
        load(folder)


# ---- regressions for defects found while writing these tests ---------------------------------


def test_error_edited_architecture_leaves_unused_weights(cond_flow, tmp_path):
    """Fewer blocks in model.json than in weights.npz must not load a truncated model."""
    folder = save(cond_flow, tmp_path / "m")
    meta = _meta(folder)
    meta["flows"][0]["config"]["n_layers"] = 1
    _write_meta(folder, meta)
    with pytest.raises(ModelFileError, match=_names(folder, "weights.npz") + r".*not used"):
        load(folder)


def test_error_ensemble_with_a_member_removed(ensemble_members, tmp_path):
    folder = save(FlowEnsemble(ensemble_members, "prob"), tmp_path / "e")
    meta = _meta(folder)
    meta["flows"] = meta["flows"][:1]
    _write_meta(folder, meta)
    with pytest.raises(ModelFileError, match="not used"):
        load(folder)


@pytest.mark.parametrize("damage", ["half", "flip"])
def test_error_corrupt_zip_with_matching_checksum(saved, damage):
    w = saved / "weights.npz"
    blob = bytearray(w.read_bytes())
    if damage == "half":
        blob = blob[: len(blob) // 2]
    else:
        blob[len(blob) // 3] ^= 0xFF
    w.write_bytes(bytes(blob))
    _rehash(saved)
    with pytest.raises(ModelFileError, match=_names(saved, "weights.npz") + ": cannot read weights"):
        load(saved)


def test_error_invalid_aggregate_names_model_json(ensemble_members, tmp_path):
    folder = save(FlowEnsemble(ensemble_members, "prob"), tmp_path / "e")
    meta = _meta(folder)
    meta["aggregate"] = "foo"
    _write_meta(folder, meta)
    with pytest.raises(ModelFileError, match=_names(folder, "model.json") + ".*aggregate"):
        load(folder)


def test_n_norm_survives(ensemble_members, tmp_path):
    ens = FlowEnsemble(ensemble_members, "logprob", n_norm=500)
    assert load(save(ens, tmp_path / "e")).n_norm == 500


def test_load_accepts_model_json_path(uncond_flow, events, tmp_path):
    folder = save(uncond_flow, tmp_path / "m")
    back = load(folder / "model.json")
    np.testing.assert_allclose(back.log_prob(events[0]), uncond_flow.log_prob(events[0]), rtol=1e-12)


def test_format_1_files_load_with_their_layout(bench, train_events, tmp_path):
    """Files written before FlowConfig.layout (format 1) load as layout 1 and give the densities
    of a layout-1 flow with their weights (not layout 2's); a format-2 file without the layout
    is an error that names it. The flow is layout 1 by name, whatever the default."""
    from dataclasses import replace

    from conftest import FAST, SMALL

    cond_flow = Flow(bench.features, bench.bounds, ("mjj",), replace(SMALL, layout=1))
    cond_flow.fit(train_events.array(bench.features), train_events["mjj"], train=replace(FAST, epochs=5))
    meta, weights = flow_state(cond_flow)
    meta["config"]["layout"] = 2
    new = flow_from_state(meta, weights)  # the same weights in the other layout
    folder = save(cond_flow, tmp_path / "gen")
    m = _meta(folder)
    m["format_version"] = 1
    del m["flows"][0]["config"]["layout"]
    _write_meta(folder, m)
    back = load(folder)
    assert back.config.layout == 1
    ev = bench.sample(400, 0, seed=21)
    x, mjj = ev.array(bench.features), ev["mjj"]
    np.testing.assert_allclose(back.log_prob(x, mjj), cond_flow.log_prob(x, mjj), rtol=1e-10, atol=1e-10)
    assert np.max(np.abs(cond_flow.log_prob(x, mjj) - new.log_prob(x, mjj))) > 0.1
    m["format_version"] = 2
    _write_meta(folder, m)
    with pytest.raises(ModelFileError, match=r"config\.layout"):
        load(folder)


@pytest.mark.parametrize(("layout", "edited"), [(2, 3), (3, 2), (4, 3)])
def test_nflows_layouts_round_trip_with_their_own_networks(bench, events, tmp_path, layout, edited):
    """Layouts 2 (TFP's MADE), 3 and 4 (nflows' MADE: 3 as first mis-read, 4 as nflows computes)
    save and load with their own networks: the same densities; a file's layout edited to another
    does not load (layouts 3 and 4 have one context layer per MADE, not one per layer, and
    layout 4's context layer has a bias)."""
    x, m = events
    cfg = FlowConfig(n_layers=2, hidden_units=(8, 8), batch_norm=True, layout=layout)
    flow = Flow(bench.features, bench.bounds, ("mjj",), cfg, seed=3)
    flow.adapt(x, m)
    folder = save(flow, tmp_path / "gen")
    back = load(folder)
    assert back.config.layout == layout
    np.testing.assert_allclose(back.log_prob(x, m), flow.log_prob(x, m), rtol=1e-12)
    meta = _meta(folder)
    meta["flows"][0]["config"]["layout"] = edited
    _write_meta(folder, meta)
    with pytest.raises(ModelFileError, match=_names(folder, "weights.npz") + ".*(do not fit|not used)"):
        load(folder)
