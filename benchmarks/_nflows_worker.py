"""The nflows (PyTorch) side of ``training.py``, run in its own interpreter.

It needs only numpy, torch and nflows (``pip install nflows torch``), never TensorFlow, so the
two frameworks do not share a process or a thread pool. It reads the already preprocessed
events (the same logit-space, standardized coordinates and the same train/validation split
that this package's flow uses) from an ``.npz`` file, builds the architecture named in the JSON
settings, trains with the same optimizer settings and prints one JSON object.

Usage: ``python _nflows_worker.py DATA.npz SETTINGS.json``
"""

from __future__ import annotations

import json
import math
import sys
import time

import numpy as np
import torch
from nflows import distributions, flows, transforms
from torch.nn import functional as F


def build(s: dict, n_features: int, n_context: int) -> flows.Flow:
    layers = []
    for k in range(s["n_layers"]):
        # nflows' MADE: an input layer plus num_blocks hidden layers, so 2 hidden layers = 1 block
        common = {"features": n_features, "hidden_features": s["hidden"], "context_features": n_context,
                  "num_blocks": s["hidden_layers"] - 1, "use_residual_blocks": False, "activation": F.relu}
        if s["transform"] == "affine":
            layers.append(transforms.MaskedAffineAutoregressiveTransform(**common))
        else:
            layers.append(transforms.MaskedPiecewiseRationalQuadraticAutoregressiveTransform(
                **common, num_bins=s["n_bins"], tails="linear", tail_bound=s["tail_bound"]))
        if s["batch_norm"]:
            layers.append(transforms.BatchNorm(n_features))
        if k < s["n_layers"] - 1:
            layers.append(transforms.ReversePermutation(n_features))
    return flows.Flow(transforms.CompositeTransform(layers), distributions.StandardNormal([n_features]))


def restart_like_tfp(flow: flows.Flow, init: str) -> None:
    """Re-initialise nflows' MADEs the way this package's layouts 1 and 2 start theirs, to
    measure what the start costs: ``"tfp"``, Glorot-uniform kernels, zero biases and the output
    layer's weights x 0.01; ``"tfp-output"``, only the output layer's weights and biases x 0.01."""
    from nflows.transforms.made import MADE

    for made in (mod for mod in flow.modules() if isinstance(mod, MADE)):
        with torch.no_grad():
            if init == "tfp":
                for lin in (made.initial_layer, made.context_layer, *(b.linear for b in made.blocks), made.final_layer):
                    torch.nn.init.xavier_uniform_(lin.weight)
                    torch.nn.init.zeros_(lin.bias)
                made.final_layer.weight.mul_(0.01)
            elif init == "tfp-output":
                made.final_layer.weight.mul_(0.01)
                made.final_layer.bias.mul_(0.01)
            else:
                raise ValueError(f"unknown init {init!r}")


def main(data_path: str, settings_path: str) -> None:
    with open(settings_path) as fh:
        s = json.load(fh)
    d = np.load(data_path)
    torch.manual_seed(s["seed"])
    want = s.get("device", "cpu")
    dev = torch.device(want if want == "cpu" or torch.cuda.is_available() else "cpu")  # the device used is reported

    def t(a):
        return torch.as_tensor(a, dtype=torch.float32, device=dev)

    z_tr, c_tr, z_val, c_val = t(d["z_train"]), t(d["c_train"]), t(d["z_val"]), t(d["c_val"])
    logj_val = float(np.mean(d["logj_val"]))
    flow = build(s, z_tr.shape[1], c_tr.shape[1])
    if s.get("init", "nflows") != "nflows":
        restart_like_tfp(flow, s["init"])
    flow = flow.to(dev)
    n_params = sum(p.numel() for p in flow.parameters())
    opt = torch.optim.Adam(flow.parameters(), lr=s["learning_rate"])
    rng = np.random.default_rng(s["seed"])
    bs, n = s["batch_size"], len(z_tr)
    n_batches = n // bs  # as in zfit_gbi: the remainder is dropped
    epoch_seconds, val_losses = [], []
    for epoch in range(s["epochs"]):
        t0 = time.perf_counter()
        for g in opt.param_groups:  # the cosine schedule zfit_gbi uses
            g["lr"] = s["learning_rate"] * 0.5 * (1 + math.cos(math.pi * epoch / s["epochs"]))
        flow.train()
        order = torch.as_tensor(rng.permutation(n), device=dev)
        for b in range(n_batches):
            idx = order[b * bs : (b + 1) * bs]
            loss = -flow.log_prob(z_tr[idx], context=c_tr[idx]).mean()
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(flow.parameters(), s["clipnorm"])
            opt.step()
        flow.eval()
        with torch.no_grad():
            lp = torch.cat([flow.log_prob(z_val[i : i + 65536], context=c_val[i : i + 65536]) for i in range(0, len(z_val), 65536)])
            val_losses.append(-(float(lp.mean()) + logj_val))  # -mean log p(x | m), original coordinates
        if dev.type == "cuda":
            torch.cuda.synchronize()
        epoch_seconds.append(time.perf_counter() - t0)
    print(json.dumps({"n_train": n, "epoch_seconds": epoch_seconds, "val_loss": val_losses, "n_parameters": int(n_params),
                      "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU",
                      "threads": torch.get_num_threads(), "torch": torch.__version__}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
