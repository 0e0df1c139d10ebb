"""ltjax benchmarks (issue 7): train-step throughput against PyTorch, evaluation speed, multi-device scaling.

Prints one Markdown table per section and writes everything to JSON (``--json``; rewritten after every
row, so a run that is stopped early keeps what it measured).  Never a timed test.

Sections (``--sections``, default all):

* ``step``  ResNet-50 at ``--image-size`` + PFC neck + DB-focal, the DB/HMT image recipe
  (``configs/voc_lt.py:db_focal``: first stage frozen, backbone BN in eval mode, SGD momentum 0.9,
  wd 1e-4, clip 35), per batch size in ``--batch-sizes`` and compute dtype in ``--dtypes``.
* ``hmt``   the same with HMT-Net's group heads, group Gaussian noise and fused loss (``configs/hmt_voc.py``).
* ``cssfe`` CSSFE's train step (``configs/cssfe_voc.py``: the same ResNet-50, at ``--image-size`` and the
  ``step`` section's batch sizes and dtypes, so the two tables sit side by side; CSSFE's own recipe
  otherwise: nothing frozen, BN training, AdamW, ASL; label embeddings of all-MiniLM-L6-v2).  ltjax only:
  there is no PyTorch mirror of CSSFE here.
* ``ldrnet`` LDRNet's stage-1 train step (``configs/voc_lt.py:ldrnet``: the same ResNet-50 trunk, input size,
  batch sizes and dtypes; its 2 x 512 encoder over the prompt's MiniLM token states, the C label queries and
  the HW image tokens; BCE).  ltjax only, like ``cssfe``.
* ``comic`` COMIC's train step (``configs/comic_voc.py``: the same trunk, input size, batch sizes and dtypes;
  three branches with attention and cosine classifiers, MFM + RLC + HTB, Adam with the classifier group).  One
  step runs three streams (the batch is fed to each): ~3x the trunk's work per step.  ltjax only.
* ``mlp``   the feature-level MLP + BCE of ``configs/synthetic_lt.py:bce,large`` (256 features,
  1024-1024 hidden, batch 1024, AdamW) at C = ``--mlp-classes`` (20 80 1000).
* ``eval``  mAP / group mAP of ltjax.metrics over 5,000 x 80 and 100,000 x 1,000 score matrices,
  against sklearn's average_precision_score per class (time and max abs difference).
* ``scaling`` the same global batch over 1, 2, 4, 8 devices (fake CPU devices unless --real-devices).

Frameworks (``--frameworks``): ``jax`` is ltjax itself: the config is loaded with
``ltjax.config.load_config``, and ``ltjax.training.loop.Experiment`` builds the model (registry), the
optimizer, the shardings and the jitted, donated ``train_step`` exactly as training does; the batch
is a fixed on-device synthetic batch (N(0,1) images, label sets drawn from the dataset's real ones;
the dataset metadata n_c, N and groups are the real ones).  ``torch_eager`` / ``torch_compile`` are
the same networks written in plain PyTorch below (no torchvision): same architecture (parameter counts
are asserted equal), same initialisation distributions, same loss formula and constants, same
optimizer (torch.optim.SGD / AdamW + clip_grad_norm_) at the config's base learning rate (the warm-up
schedule is left out on the PyTorch side), same batch and input size.  bf16 = ltjax's
``train.compute_dtype=bfloat16`` (float32 parameters) and ``torch.autocast(dtype=torch.bfloat16)``.
On CUDA the PyTorch conv nets run in channels_last and with TF32 matmuls allowed (what a performance-
minded PyTorch user does; cuDNN convolutions use TF32 by default, and so does JAX's default precision).

Columns: step time median / p90 over ``--steps`` timed steps after ``--warmup`` (each step synchronised),
examples/s, compile s (JAX: lower + compile, persistent cache off; torch_compile: the first step, with
empty on-disk caches unless --warm-torch-cache; eager: -), GFLOP per step
from XLA's cost analysis of the JAX step (used for the PyTorch rows too), MFU = FLOP/step / step time
/ peak (peak per device kind, or --peak-tflops/--peak-tflops-fp32; '-' on CPU), memory (JAX: what XLA
plans for the step: arguments + outputs + temporaries - donated; torch: torch.cuda.max_memory_allocated),
the loss at the first step, and the throughput ratio ltjax / torch_eager and ltjax / torch_compile.

Install (PyTorch and sklearn are only needed for their rows; keep them out of the training venv)::

    python -m venv /tmp/benchvenv && /tmp/benchvenv/bin/pip install -e '.[bench]'   # + a CUDA jax/torch on a GPU

Examples::

    python scripts/bench.py --quick --json /tmp/bench_quick.json               # a few minutes on a laptop CPU
    python scripts/bench.py --sections mlp,eval --json bench_cpu.json
    python scripts/bench.py --real-devices --budget-s 270 --hmt-batch-sizes 256 \
        --compile-batch-sizes 256 --json bench_gpu.json           # one GPU, all sections, bounded to ~5 min
    python scripts/bench.py --real-devices --sections step --json step.json   # the full step grid
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as bc  # noqa: E402  (does not import jax)

SECTIONS = ("step", "hmt", "cssfe", "ldrnet", "comic", "mlp", "eval", "scaling")
NO_TORCH_MIRROR = ("cssfe", "ldrnet", "comic")  # sections measured for ltjax only
FRAMEWORKS = ("jax", "torch_eager", "torch_compile")


# ==================================================================================================
# PyTorch mirrors (defined lazily: torch is optional)
# ==================================================================================================
_TORCH = None


def torch_lib():
    """The PyTorch side as a namespace, or a string saying why it is unavailable."""
    global _TORCH
    if _TORCH is not None:
        return _TORCH
    try:
        import numpy as np
        import torch
        import torch.nn as nn
        import torch.nn.functional as F
    except Exception as e:  # ImportError, or a broken build
        _TORCH = f"torch not installed ({type(e).__name__})"
        return _TORCH

    def kaiming_fan_out(w):  # torchvision / ltjax conv and PFC init: N(0, 2 / fan_out)
        nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu")

    def lecun_truncated(w):  # flax's default Dense kernel init: truncated normal, variance 1 / fan_in
        fan_in = w.shape[1]
        std = math.sqrt(1.0 / fan_in) / 0.87962566103423978
        nn.init.trunc_normal_(w, std=std, a=-2 * std, b=2 * std)

    class Bottleneck(nn.Module):
        expansion = 4

        def __init__(self, inplanes, planes, stride):
            super().__init__()
            out = planes * 4
            self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)  # v1.5: stride on the 3x3
            self.bn2 = nn.BatchNorm2d(planes)
            self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(out)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = None
            if stride != 1 or inplanes != out:
                self.downsample = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride, bias=False), nn.BatchNorm2d(out))

        def forward(self, x):
            y = self.relu(self.bn1(self.conv1(x)))
            y = self.relu(self.bn2(self.conv2(y)))
            y = self.bn3(self.conv3(y))
            return self.relu(y + (x if self.downsample is None else self.downsample(x)))

    class ResNet50Trunk(nn.Module):
        """torchvision's ResNet-50 without avgpool/fc; mmcv's frozen_stages and norm_eval."""

        def __init__(self, frozen_stages=1, norm_eval=True):
            super().__init__()
            self.frozen_stages, self.norm_eval = frozen_stages, norm_eval
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            inplanes, layers = 64, []
            for stage, (planes, blocks) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3)), start=1):
                mods = []
                for i in range(blocks):
                    mods.append(Bottleneck(inplanes, planes, 2 if (i == 0 and stage > 1) else 1))
                    inplanes = planes * 4
                layers.append(nn.Sequential(*mods))
            self.layer1, self.layer2, self.layer3, self.layer4 = layers
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    kaiming_fan_out(m.weight)
            for stage in range(frozen_stages + 1):
                for mod in self._stage(stage):
                    for p in mod.parameters():
                        p.requires_grad_(False)

        def _stage(self, stage):
            return [self.conv1, self.bn1] if stage == 0 else [getattr(self, f"layer{stage}")]

        def train(self, mode=True):
            super().train(mode)
            if mode:
                for stage in range(self.frozen_stages + 1):
                    for mod in self._stage(stage):
                        mod.eval()
                if self.norm_eval:
                    for m in self.modules():
                        if isinstance(m, nn.modules.batchnorm._BatchNorm):
                            m.eval()
            return self

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    class PFCNeck(nn.Module):
        """GAP -> Linear -> BatchNorm1d -> Dropout, no activation (ltjax.models.necks.PFCNeck)."""

        def __init__(self, in_dim, dim, dropout):
            super().__init__()
            self.fc = nn.Linear(in_dim, dim)
            kaiming_fan_out(self.fc.weight)
            nn.init.zeros_(self.fc.bias)
            self.bn = nn.BatchNorm1d(dim)
            self.drop = nn.Dropout(dropout)

        def forward(self, x):
            return self.drop(self.bn(self.fc(x.float().mean(dim=(2, 3)).to(x.dtype))))

    def linear_head(dim, classes):
        head = nn.Linear(dim, classes)
        nn.init.normal_(head.weight, std=0.01)
        nn.init.zeros_(head.bias)
        return head

    class ImageClassifier(nn.Module):
        """ResNet-50 + PFC neck + (linear head | HMT group heads)."""

        def __init__(self, model_cfg, num_classes, hmt=None):
            super().__init__()
            assert model_cfg.name == "resnet50" and model_cfg.neck == "pfc" and model_cfg.head == "linear", model_cfg
            self.trunk = ResNet50Trunk(int(model_cfg.frozen_stages), bool(model_cfg.norm_eval))
            self.neck = PFCNeck(2048, int(model_cfg.neck_dim), float(model_cfg.neck_dropout))
            self.hmt = hmt
            dim = int(model_cfg.neck_dim)
            if hmt is None:
                self.head = linear_head(dim, num_classes)
            else:
                self.heads = nn.ModuleList([linear_head(dim, len(idx)) for idx in hmt["indices"]])
                for g, idx in enumerate(hmt["indices"]):
                    self.register_buffer(f"idx{g}", torch.as_tensor(idx, dtype=torch.long), persistent=False)
            self.num_classes = num_classes

        def forward(self, x):
            f = self.neck(self.trunk(x))
            if self.hmt is None:
                return self.head(f).float(), None
            fused = torch.zeros(f.shape[0], self.num_classes, device=f.device, dtype=torch.float32)
            group_logits = []
            for g, (head, sigma) in enumerate(zip(self.heads, self.hmt["sigmas"])):
                f_g = f
                if self.training and sigma > 0:
                    f_g = (f.float() + torch.randn(f.shape, device=f.device) * sigma).to(f.dtype)
                s_g = head(f_g).float()
                fused = fused.index_copy(1, getattr(self, f"idx{g}"), s_g)
                group_logits.append(s_g)
            return fused, group_logits

    class MLPNet(nn.Module):
        """ltjax 'mlp' (norm 'none', relu, no dropout) + linear head."""

        def __init__(self, model_cfg, in_dim, num_classes):
            super().__init__()
            assert model_cfg.norm == "none" and model_cfg.activation == "relu" and not model_cfg.dropout, model_cfg
            layers, d = [], in_dim
            for width in model_cfg.hidden:
                lin = nn.Linear(d, int(width))
                lecun_truncated(lin.weight)
                nn.init.zeros_(lin.bias)
                layers += [lin, nn.ReLU()]
                d = int(width)
            self.body = nn.Sequential(*layers)
            self.head = linear_head(d, num_classes)

        def forward(self, x):
            return self.head(self.body(x)).float(), None

    class DBFocalLoss(nn.Module):
        """ltjax.losses.distribution_balanced.db_loss, written out (rebalance, NTR, focal)."""

        def __init__(self, counts, num_train, h):
            super().__init__()
            self.h = {k: h[k] for k in ("rebalance", "alpha", "beta", "mu", "ntr", "kappa", "lam", "focal", "gamma", "balance")}
            counts = np.asarray(counts, np.float64)
            inv = 1.0 / np.maximum(counts, 1.0)
            n = np.clip(counts, 1.0, num_train - 0.5)
            bias = -h["kappa"] * np.log(num_train / n - 1.0) / h["lam"]
            self.register_buffer("inv", torch.as_tensor(inv, dtype=torch.float32), persistent=False)
            self.register_buffer("bias", torch.as_tensor(bias, dtype=torch.float32), persistent=False)

        def forward(self, logits, y, _group_logits=None):
            h = self.h
            z, y = logits.float(), y.float()
            pos = y > 0.5
            if h["rebalance"]:
                denom = torch.where(pos, self.inv, torch.zeros_like(z)).sum(dim=1, keepdim=True)
                has_pos = denom > 0
                r = self.inv / torch.where(has_pos, denom, torch.ones_like(denom))
                w = h["alpha"] + torch.sigmoid(h["beta"] * (r - h["mu"]))
                w = torch.where(has_pos, w, torch.full_like(w, h["alpha"] + 1.0))
            else:
                w = torch.ones_like(z)
            if h["ntr"]:
                z = z + self.bias
                z = torch.where(pos, z, h["lam"] * z)
                w = torch.where(pos, w, w / h["lam"])
            z_t = torch.where(pos, z, -z)
            values = w * -F.logsigmoid(z_t)
            if h["focal"] and h["gamma"] != 0:
                values = h["balance"] * torch.exp(h["gamma"] * F.logsigmoid(-z_t)) * values
            elif h["focal"]:
                values = h["balance"] * values
            return values.mean()

    class BCELoss(nn.Module):
        def forward(self, logits, y, _group_logits=None):
            return F.binary_cross_entropy_with_logits(logits.float(), y.float())

    class HMTLoss(nn.Module):
        """ltjax.methods.hmt.hmt_loss: eta * BCE(fused) + (1 - eta) * sum_g BCE_g."""

        def __init__(self, indices, eta):
            super().__init__()
            self.eta = float(eta)
            for g, idx in enumerate(indices):
                self.register_buffer(f"idx{g}", torch.as_tensor(idx, dtype=torch.long), persistent=False)
            self.groups = len(indices)

        def forward(self, fused, y, group_logits):
            y = y.float()
            total = self.eta * F.binary_cross_entropy_with_logits(fused, y)
            for g in range(self.groups):
                idx = getattr(self, f"idx{g}")
                total = total + (1.0 - self.eta) * F.binary_cross_entropy_with_logits(group_logits[g], y[:, idx])
            return total

    class Objective(nn.Module):
        """model + loss in one module, so torch.compile sees (and fuses) both."""

        def __init__(self, model, loss):
            super().__init__()
            self.model, self.loss = model, loss

        def forward(self, x, y):
            logits, groups = self.model(x)
            return self.loss(logits, y, groups)

    _TORCH = argparse.Namespace(
        torch=torch, nn=nn, ImageClassifier=ImageClassifier, MLPNet=MLPNet, DBFocalLoss=DBFocalLoss,
        BCELoss=BCELoss, HMTLoss=HMTLoss, Objective=Objective,
    )
    return _TORCH


def torch_device(real_devices: bool) -> str:
    T = torch_lib()
    if isinstance(T, str):
        return "cpu"
    return "cuda" if real_devices and T.torch.cuda.is_available() else "cpu"


def build_torch_objective(kind: str, config, meta, in_dim: int | None = None):
    """The PyTorch mirror of ltjax's model + method loss for ``config`` (kind: 'db', 'hmt', 'mlp')."""
    T = torch_lib()
    if kind == "db":
        model = T.ImageClassifier(config.model, meta.num_classes)
        h = dict(config.method.items())
        loss = T.DBFocalLoss(meta.class_counts, meta.num_train, h)
    elif kind == "hmt":
        import numpy as np

        names, indices = [], []
        for name, idx in zip(meta.groups.names, meta.groups.indices):
            if len(idx):
                names.append(name)
                indices.append([int(c) for c in idx])
        counts = np.asarray(meta.class_counts, np.float64)
        sigmas = [float(config.method.lam / counts[idx].mean()) for idx in indices]  # eq. 1
        model = T.ImageClassifier(config.model, meta.num_classes, hmt={"indices": indices, "sigmas": sigmas})
        loss = T.HMTLoss(indices, config.method.eta)
    elif kind == "mlp":
        model = T.MLPNet(config.model, in_dim, meta.num_classes)
        assert config.method.name == "bce", config.method.name
        loss = T.BCELoss()
    else:
        raise ValueError(kind)
    return T.Objective(model, loss)


def check_loss_mirror(kind: str, config, meta) -> float:
    """max |PyTorch loss - ltjax loss| over a few random logit / label batches (the method's own loss
    function on the ltjax side), so a table row never compares two different objectives."""
    import jax.numpy as jnp
    import numpy as np

    from ltjax.methods import METHODS

    T = torch_lib()
    torch = T.torch
    objective = build_torch_objective(kind, config, meta, in_dim=1)
    method = METHODS.get(config.method.name)
    stats = __import__("ltjax.losses", fromlist=["ClassStats"]).ClassStats.from_meta(meta)
    rng = np.random.default_rng(0)
    worst = 0.0
    for _ in range(3):
        z = (rng.standard_normal((16, meta.num_classes)) * 3).astype(np.float32)
        y = (rng.random((16, meta.num_classes)) < 0.2).astype(np.float32)
        y[0] = 0.0  # an example without positives
        outputs = {"logits": jnp.asarray(z)}
        groups_t = None
        if kind == "hmt":
            idx = [tuple(int(c) for c in i) for i in meta.groups.indices if len(i)]
            g = [(z[:, list(i)] * 0.5 + 0.1).astype(np.float32) for i in idx]
            outputs.update(group_logits=tuple(jnp.asarray(a) for a in g), group_indices=tuple(idx))
            groups_t = [torch.from_numpy(a) for a in g]
        ours, _ = method.loss(outputs, {"labels": jnp.asarray(y)}, stats, config.method)
        theirs = objective.loss(torch.from_numpy(z), torch.from_numpy(y), groups_t).item()
        worst = max(worst, abs(float(ours) - theirs))
    return worst


def torch_optimizer(params, opt_cfg):
    T = torch_lib()
    if opt_cfg.name == "sgd":
        return T.torch.optim.SGD(params, lr=float(opt_cfg.lr), momentum=float(opt_cfg.momentum),
                                 weight_decay=float(opt_cfg.weight_decay), nesterov=bool(opt_cfg.nesterov))
    if opt_cfg.name == "adamw":
        return T.torch.optim.AdamW(params, lr=float(opt_cfg.lr), betas=(float(opt_cfg.b1), float(opt_cfg.b2)),
                                   eps=float(opt_cfg.eps), weight_decay=float(opt_cfg.weight_decay))
    raise ValueError(opt_cfg.name)


def run_torch_train_step(kind, config, meta, batch_np, dtype, framework, args, in_dim=None) -> dict:
    """Build the mirror, then time its train step (zero_grad, forward+loss under autocast, backward,
    clip, optimizer step) on the same batch as the JAX row."""
    import numpy as np

    T = torch_lib()
    torch = T.torch
    dev = torch_device(args.real_devices)
    torch.manual_seed(0)
    objective = build_torch_objective(kind, config, meta, in_dim)
    n_params = sum(p.numel() for p in objective.parameters())
    conv = kind in ("db", "hmt")
    channels_last = conv and dev == "cuda"
    objective = objective.to(dev)
    if channels_last:
        objective = objective.to(memory_format=torch.channels_last)
    objective.train()
    x = torch.from_numpy(batch_np["inputs"])
    if conv:
        x = x.permute(0, 3, 1, 2)  # NHWC -> NCHW
    x = x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()
    x = x.to(dev)
    y = torch.from_numpy(batch_np["labels"]).to(dev)
    trainable = [p for p in objective.parameters() if p.requires_grad]
    opt = torch_optimizer(trainable, config.optimizer)
    clip = float(config.optimizer.grad_clip_norm or 0.0)
    fn = objective
    if framework == "torch_compile":
        # a fresh dynamo state per row: otherwise every new model instance counts as a recompilation of
        # Objective.forward, and past torch._dynamo's recompile limit the rows silently run eagerly
        torch._dynamo.reset()
        fn = torch.compile(objective, mode=args.torch_compile_mode)
    autocast = dtype == "bfloat16"

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=dev, dtype=torch.bfloat16, enabled=autocast):
            loss = fn(x, y)
        loss.backward()
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(trainable, clip)
        opt.step()
        return loss

    def sync(loss):
        if dev == "cuda":
            torch.cuda.synchronize()
        return loss

    if dev == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    loss0 = float(sync(step()).detach())
    first_s = time.perf_counter() - t0
    times, _ = bc.time_steps(step, sync, args.steps, max(args.warmup - 1, 0))
    last = float(step().detach())
    row = {
        "compile_s": first_s if framework == "torch_compile" else None,
        "first_step_s": first_s,
        "loss_step0": loss0,
        "loss_last": last,
        "params": int(n_params),
        "torch_peak_bytes": int(torch.cuda.max_memory_allocated()) if dev == "cuda" else None,
        "channels_last": channels_last,
        **bc.step_stats(times, int(batch_np["labels"].shape[0])),
    }
    if not np.isfinite(last):
        row["note"] = "non-finite loss"
    del objective, fn, opt, x, y
    if dev == "cuda":
        torch.cuda.empty_cache()
    return row


# ==================================================================================================
# the benchmark
# ==================================================================================================
class Bench:
    def __init__(self, args):
        self.args = args
        self.t_start = time.perf_counter()
        self.results = {"setup": {}, "sections": {}, "notes": []}

    # -- bookkeeping -----------------------------------------------------------------------------
    def over_budget(self) -> bool:
        return bool(self.args.budget_s) and time.perf_counter() - self.t_start > self.args.budget_s

    def save(self):
        bc.write_json(self.args.json, self.results)

    def add_row(self, section: str, row: dict):
        self.results["sections"].setdefault(section, []).append(row)
        self.save()

    def guarded(self, fn, *a, **kw) -> dict:
        """fn(*a, **kw), or {'error': ...} (the table shows it instead of crashing)."""
        if self.over_budget():
            return {"error": "skipped (--budget-s spent)"}
        try:
            return fn(*a, **kw)
        except Exception as e:  # a failure of one row must not end the benchmark
            if self.args.verbose:
                traceback.print_exc()
            msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
            return {"error": f"{type(e).__name__}: {msg[:160]}"}

    # -- header ----------------------------------------------------------------------------------
    def header(self):
        import jax

        info = bc.machine_summary()
        T = torch_lib() if any(f.startswith("torch") for f in self.args.frameworks) else "not requested"
        info["torch"] = T.replace("torch ", "", 1) if isinstance(T, str) else T.torch.__version__
        info["torch_device"] = torch_device(self.args.real_devices) if not isinstance(T, str) else "-"
        try:
            import sklearn

            info["sklearn"] = sklearn.__version__
        except Exception:
            info["sklearn"] = "not installed"
        bf16, fp32 = bc.default_peaks(info["device_kind"], info["platform"], self.args.fp32_peak)
        self.peak = {
            "bfloat16": self.args.peak_tflops if self.args.peak_tflops else bf16,
            "float32": self.args.peak_tflops_fp32 if self.args.peak_tflops_fp32 else fp32,
        }
        info["peak_tflops"] = self.peak
        try:
            info["matmul_precision"] = str(getattr(jax.config, "jax_default_matmul_precision", None))
        except Exception:  # a jax that no longer exposes config options as attributes
            info["matmul_precision"] = "?"
        info["devices_kind"] = "real" if self.args.real_devices else "fake CPU"
        info["command"] = "python " + " ".join(sys.argv)
        self.results["setup"] = info
        print(
            f"# ltjax benchmarks, {info['date']}\n\n"
            f"{info['device_kind']} ({info['platform']}, {info['num_devices']} {info['devices_kind']} device(s)); "
            f"CPU {info['cpu']}, {info['cpu_cores']} cores; Python {info['python']}, jax {info['jax']}, "
            f"flax {info.get('flax', '?')}, optax {info.get('optax', '?')}, torch {info['torch']} "
            f"(on {info['torch_device']}), sklearn {info['sklearn']}; peak TFLOP/s bf16 {bc.fmt(self.peak['bfloat16'])}, "
            f"fp32 rows {bc.fmt(self.peak['float32'])} ({self.args.fp32_peak}).\n"
            f"Command: `{info['command']}`\n",
            flush=True,
        )
        self.save()

    # -- train-step sections ---------------------------------------------------------------------
    def _image_config(self, spec: str, dtype: str, batch: int):
        cfg = bc.load_config(spec)
        cfg.train.compute_dtype = dtype
        cfg.data.batch_size = batch
        cfg.mesh.data = 1
        cfg.model.pretrained = ""
        return cfg

    def train_section(self, section: str):
        a = self.args
        cases = []  # (label, kind, config builder, dataset+batch builder, in_dim)
        if section in ("step", "hmt", "cssfe", "ldrnet", "comic"):
            spec = {"step": "voc_lt.py:db_focal", "hmt": "hmt_voc.py:rs", "cssfe": "cssfe_voc.py",
                    "ldrnet": "voc_lt.py:ldrnet", "comic": "comic_voc.py"}[section]
            kind = {"step": "db", "hmt": "hmt", "cssfe": "cssfe", "ldrnet": "ldrnet", "comic": "comic"}[section]
            size = a.image_size
            title = f"ResNet-50 {size}x{size} + " + {
                "step": "PFC neck + linear head + DB-focal",
                "hmt": "PFC neck + HMT-Net group heads + noise + fused BCE",
                "cssfe": "CSSFE (CAM head, label-embedding attention, Transformer block, ASL; AdamW; ltjax only)",
                "ldrnet": "LDRNet stage 1 (prompt + label queries + image tokens, 2 x 512 encoder, BCE; ltjax only)",
                "comic": "COMIC (3 branches + attention, cosine classifiers, MFM + RLC + HTB; 3 streams: each step "
                         "runs the trunk on 3 x batch images, ex/s counts one batch; Adam; ltjax only)",
            }[section] + f" (configs/{spec}; VOC-LT metadata, 20 classes)"
            for batch in a.batch_sizes if section != "hmt" else (a.hmt_batch_sizes or a.batch_sizes):
                for dtype in a.dtypes:
                    def make(batch=batch, dtype=dtype):
                        cfg = self._image_config(spec, dtype, batch)
                        cfg.data.image_size = size
                        ds, pool = bc.voc_lt_dataset(cfg, size)
                        return cfg, ds, bc.image_batch(pool, batch, size, seed=batch), None
                    cases.append((f"{batch}", batch, dtype, kind, make))
        else:  # mlp
            title = (
                f"MLP {a.mlp_features} -> {'-'.join(str(h) for h in a.mlp_hidden)} -> C + BCE, AdamW "
                f"(configs/synthetic_lt.py:bce,large; synthetic_lt features), batch {a.mlp_batch}"
            )
            for classes in a.mlp_classes:
                for dtype in a.dtypes:
                    def make(classes=classes, dtype=dtype):
                        cfg = bc.load_config("synthetic_lt.py:bce,large")
                        cfg.data.num_classes = classes
                        cfg.data.num_features = a.mlp_features
                        cfg.data.num_train = a.mlp_num_train
                        cfg.data.num_test = 100
                        cfg.model.hidden = tuple(a.mlp_hidden)
                        cfg.data.batch_size = a.mlp_batch
                        cfg.train.compute_dtype = dtype
                        cfg.mesh.data = 1
                        ds, _ = bc.synthetic_dataset(cfg)
                        return cfg, ds, bc.feature_batch(ds.split("train"), a.mlp_batch, seed=classes), a.mlp_features
                    cases.append((f"C={classes}", a.mlp_batch, dtype, "mlp", make))
        print(f"## {section}: {title}\n", flush=True)
        if "torch_compile" in a.frameworks and (a.compile_dtypes or (a.compile_batch_sizes and section != "mlp")):
            only = [f"dtypes {' '.join(a.compile_dtypes)}"] if a.compile_dtypes else []
            if a.compile_batch_sizes and section != "mlp":
                only.append(f"batch sizes {' '.join(map(str, a.compile_batch_sizes))}")
            print(f"torch_compile rows only for {', '.join(only)}.\n", flush=True)
        rows = []
        checked = False
        for label, batch, dtype, kind, make in cases:
            built = self.guarded(lambda make=make: {"built": make()})
            if not checked and kind not in NO_TORCH_MIRROR and "error" not in built and not isinstance(torch_lib(), str) and any(
                f.startswith("torch") for f in a.frameworks
            ):
                checked = True
                cfg, ds = built["built"][:2]
                diff = self.guarded(lambda: {"d": check_loss_mirror(kind, cfg, ds.meta)})
                self.results.setdefault("loss_mirror_check", {})[section] = diff.get("d", diff.get("error"))
                print(f"PyTorch loss vs ltjax loss on random logits: max abs diff "
                      f"{bc.fmt(diff.get('d'), '.1e', diff.get('error', '-'))}\n", flush=True)
            group = []
            for fw in a.frameworks:
                if fw == "torch_compile" and not self._compile_wanted(section, batch, dtype):
                    continue
                if fw != "jax" and kind in NO_TORCH_MIRROR:  # no PyTorch mirror of CSSFE / LDRNet / COMIC
                    continue
                base = {"section": section, "case": label, "batch": batch, "dtype": dtype, "framework": fw}
                if "error" in built:
                    r = {**base, **built}
                elif fw == "jax":
                    cfg, ds, batch_np, _ = built["built"]
                    r = {**base, **self.guarded(self._jax_row, cfg, ds, batch_np)}
                else:
                    T = torch_lib()
                    if isinstance(T, str):
                        r = {**base, "error": T}
                    else:
                        cfg, ds, batch_np, in_dim = built["built"]
                        r = {**base, **self.guarded(run_torch_train_step, kind, cfg, ds.meta, batch_np, dtype, fw, a, in_dim)}
                group.append(r)
                print(f"  {section} {label} {dtype} {fw}: " + self._brief(r), flush=True)
            self._finish_group(group)
            for r in group:
                self.add_row(section, r)
            rows += group
        print()
        print(self._train_table(rows, label_name="batch" if section != "mlp" else "classes"))
        print(flush=True)

    def _compile_wanted(self, section, batch, dtype) -> bool:
        a = self.args
        if a.compile_dtypes and dtype not in a.compile_dtypes:
            return False
        return section == "mlp" or not a.compile_batch_sizes or batch in a.compile_batch_sizes

    def _jax_row(self, cfg, ds, batch_np):
        exp = bc.jax_experiment(cfg, ds)
        return bc.run_jax_train_step(exp, batch_np, self.args.steps, self.args.warmup)

    @staticmethod
    def _brief(r):
        if "error" in r:
            return r["error"]
        return f"{r['step_ms_median']:.2f} ms, {r['examples_per_s']:,.1f} ex/s, loss0 {r['loss_step0']:.4g}"

    def _finish_group(self, group):
        """Ratios, FLOPs/MFU and the parameter-count check for one (case, dtype)."""
        by = {r["framework"]: r for r in group if "error" not in r}
        j = by.get("jax")
        flops = j.get("flops_per_step") if j else None
        for r in group:
            if "error" in r:
                continue
            r["flops_per_step_used"] = flops
            peak = self.peak.get(r["dtype"])
            r["mfu"] = (flops / (r["step_ms_median"] / 1e3) / (peak * 1e12)) if (flops and peak) else None
        if j:
            for fw in ("torch_eager", "torch_compile"):
                if fw in by:
                    j[f"ratio_vs_{fw}"] = j["examples_per_s"] / by[fw]["examples_per_s"]
                    if by[fw]["params"] != j["params"]:
                        raise AssertionError(
                            f"parameter counts differ: ltjax {j['params']:,} vs PyTorch {by[fw]['params']:,} "
                            f"({j['section']} {j['case']}): the PyTorch mirror is not the same architecture"
                        )

    def _train_table(self, rows, label_name):
        headers = [label_name, "dtype", "framework", "params", "compile s", "step ms (median)", "step ms (p90)",
                   "ex/s", "ltjax/torch eager", "ltjax/torch compile", "GFLOP/step", "MFU", "mem MiB", "loss@0"]
        out = []
        for r in rows:
            lead = [r["case"], r["dtype"], r["framework"]]
            if "error" in r:
                out.append(lead + [r["error"]] + ["-"] * (len(headers) - 4))
                continue
            mem = r.get("xla_memory_bytes") if r["framework"] == "jax" else r.get("torch_peak_bytes")
            out.append(lead + [
                bc.fmt(r["params"], ","),
                bc.fmt(r.get("compile_s"), ".1f"),
                bc.fmt(r["step_ms_median"], ".2f"),
                bc.fmt(r["step_ms_p90"], ".2f"),
                bc.fmt(r["examples_per_s"], ",.1f"),
                bc.fmt(r.get("ratio_vs_torch_eager"), ".2f"),
                bc.fmt(r.get("ratio_vs_torch_compile"), ".2f"),
                bc.fmt_sig(r["flops_per_step_used"] / 1e9 if r.get("flops_per_step_used") else None),
                bc.fmt(r["mfu"] * 100 if r.get("mfu") is not None else None, ".1f") + ("%" if r.get("mfu") is not None else ""),
                bc.fmt_sig(mem / 2**20 if mem else None),
                bc.fmt(r["loss_step0"], ".4f"),
            ])
        return bc.markdown_table(headers, out, [False, False, False] + [True] * (len(headers) - 3))

    # -- evaluation ------------------------------------------------------------------------------
    def eval_section(self):
        import jax
        import jax.numpy as jnp
        import numpy as np

        from ltjax import metrics
        from ltjax.data.groups import class_groups
        from ltjax.data.synthetic import target_prevalences

        a = self.args
        print("## eval: per-class AP -> mAP and group mAP (ltjax.metrics) vs sklearn\n", flush=True)
        try:
            from sklearn.metrics import average_precision_score
        except Exception:
            average_precision_score = None
            self.results["notes"].append("sklearn not installed: no sklearn rows")
        on_cpu = jax.devices()[0].platform == "cpu"
        rows = []
        for n, c in a.eval_sizes:
            if self.over_budget():
                rows.append({"size": f"{n:,} x {c:,}", "what": "all", "error": "skipped (--budget-s spent)"})
                continue
            rng = np.random.default_rng(0)
            prev = target_prevalences(c, 0.4, 0.001, 6.0)
            labels = (rng.random((n, c)) < prev).astype(np.int8)
            labels[rng.integers(0, n, c), np.arange(c)] = 1  # every class has a positive
            scores = (rng.standard_normal((n, c)) + 1.5 * labels).astype(np.float32)
            counts = labels.sum(axis=0)
            groups = class_groups(counts, mode="quantile")
            names = [f"c{i}" for i in range(c)]
            reps = a.eval_repeats if n * c <= 10**6 else max(1, a.eval_repeats // 3)
            size = f"{n:,} x {c:,}"

            def group_means(ap):
                return {g: float(np.nanmean(ap[np.asarray(idx)])) if len(idx) else None
                        for g, idx in zip(groups.names, groups.indices)}

            ref_ap = None
            cand, skipped = [], []
            cand.append(("ltjax average_precision -> mAP (from numpy; jit; CPU: host kernel)", True,
                         lambda: np.asarray(metrics.average_precision(scores, labels))))
            s_dev, y_dev = jnp.asarray(scores), jnp.asarray(labels)
            rank = getattr(metrics, "_rank_metrics_jit", None)
            if rank is not None:
                if on_cpu and n * c > a.eval_xla_cpu_max:
                    skipped.append({"size": size, "what": "ltjax ranking kernel, XLA (device arrays)",
                                    "error": "skipped on CPU (XLA's CPU sort is slow; --eval-xla-cpu-max)"})
                else:
                    cand.append(("ltjax ranking kernel, XLA (device arrays)", True,
                                 lambda: np.asarray(jax.block_until_ready(rank(s_dev, y_dev, impl="xla")[0]))))
                cand.append(("ltjax ranking kernel, host numpy (device arrays)", True,
                             lambda: np.asarray(jax.block_until_ready(rank(s_dev, y_dev, impl="host")[0]))))
            cand.append(("ltjax evaluate(): mAP + group mAP + AUC, F1, P@k, nDCG@k", False,
                         lambda: metrics.evaluate(scores, labels, groups, counts, names)))
            if average_precision_score is not None:
                cand.append(("sklearn average_precision_score per class", True,
                             lambda: np.array([average_precision_score(labels[:, k], scores[:, k]) for k in range(c)])))
            results = {}
            for what, is_ap, fn in cand:
                r = {"size": size, "what": what}
                out = self.guarded(lambda fn=fn, what=what: {
                    "t": bc.median_time(fn, 1 if what.startswith("sklearn") and n * c > 10**6 else reps,
                                        warmup=0 if what.startswith("sklearn") else 1)})
                if "error" in out:
                    r.update(out)
                else:
                    t, res = out["t"]
                    r["ms"] = t * 1e3
                    if is_ap:
                        ap = np.asarray(res, np.float64)
                        r["mAP"] = float(np.nanmean(ap))
                        r["group_mAP"] = group_means(ap)
                        results[what] = ap
                    else:
                        r["mAP"] = res["mAP"]
                        r["group_mAP"] = res["group_mAP"]
                        results[what] = np.array([p["ap"] if p["ap"] is not None else np.nan for p in res["per_class"]])
                    if what.startswith("sklearn"):
                        ref_ap = results[what]
                rows.append(r)
            rows += skipped
            for r in rows:
                if r["size"] == size and "error" not in r and ref_ap is not None and r["what"] in results:
                    r["max_abs_diff_ap_vs_sklearn"] = float(np.nanmax(np.abs(results[r["what"]] - ref_ap)))
            for r in rows:
                if r["size"] == size:
                    print(f"  eval {size} {r['what']}: " + (r.get("error") or f"{r['ms']:.1f} ms"), flush=True)
        for r in rows:
            self.add_row("eval", r)
        headers = ["scores", "what", "ms (median)", "mAP", "group mAP (head / medium / tail)", "max |AP - sklearn AP|"]
        out = []
        for r in rows:
            if "error" in r:
                out.append([r["size"], r["what"], r["error"], "-", "-", "-"])
                continue
            g = r.get("group_mAP") or {}
            out.append([r["size"], r["what"], bc.fmt(r["ms"], ",.1f"), bc.fmt(r.get("mAP"), ".4f"),
                        " / ".join(bc.fmt(g.get(k), ".4f") for k in ("head", "medium", "tail")),
                        bc.fmt(r.get("max_abs_diff_ap_vs_sklearn"), ".1e")])
        print()
        print(bc.markdown_table(headers, out, [True, False, True, True, False, True]))
        print(flush=True)

    # -- scaling ---------------------------------------------------------------------------------
    def scaling_section(self):
        import jax

        a = self.args
        avail = len(jax.devices())
        kind = "real" if a.real_devices else "fake CPU (all share the same cores: ideal = same step time)"
        print(f"## scaling: same global batch over {a.scaling_devices} devices ({kind}; {avail} available)\n", flush=True)
        rows = []
        for model in a.scaling_models:
            base_t = None
            for n in a.scaling_devices:
                r = {"model": model, "devices": n}
                if n > avail:
                    r["error"] = f"only {avail} device(s)"
                    rows.append(r)
                    self.add_row("scaling", r)
                    continue

                def run(n=n, model=model):
                    if model == "mlp":
                        cfg = bc.load_config("synthetic_lt.py:bce,large")
                        cfg.data.num_classes = a.scaling_mlp_classes
                        cfg.data.num_features = a.mlp_features
                        cfg.data.num_train = a.mlp_num_train
                        cfg.data.num_test = 100
                        cfg.model.hidden = tuple(a.mlp_hidden)
                        batch = a.scaling_batch_mlp
                        cfg.data.batch_size = batch
                        ds, _ = bc.synthetic_dataset(cfg)
                        batch_np = bc.feature_batch(ds.split("train"), batch)
                    else:
                        batch = a.scaling_batch_resnet
                        cfg = self._image_config("voc_lt.py:db_focal", a.scaling_dtype, batch)
                        ds, pool = bc.voc_lt_dataset(cfg, a.scaling_image_size)
                        batch_np = bc.image_batch(pool, batch, a.scaling_image_size)
                    cfg.train.compute_dtype = a.scaling_dtype
                    cfg.mesh.data = n
                    exp = bc.jax_experiment(cfg, ds)
                    return {"batch": batch, **bc.run_jax_train_step(exp, batch_np, a.scaling_steps, a.warmup)}

                r.update(self.guarded(run))
                if "error" not in r:
                    if base_t is None and n == 1:
                        base_t = r["step_ms_median"]
                    r["per_device_examples_per_s"] = r["examples_per_s"] / n
                    if base_t:
                        r["time_vs_1_device"] = r["step_ms_median"] / base_t
                        r["efficiency_vs_ideal_speedup"] = base_t / (n * r["step_ms_median"])
                print(f"  scaling {model} x{n}: " + (r.get("error") or f"{r['step_ms_median']:.2f} ms"), flush=True)
                rows.append(r)
                self.add_row("scaling", r)
        headers = ["model", "devices", "global batch", "compile s", "step ms (median)", "step ms (p90)", "ex/s",
                   "ex/s per device", "step time / 1 device", "speed-up efficiency"]
        out = []
        for r in rows:
            if "error" in r:
                out.append([r["model"], str(r["devices"]), r["error"]] + ["-"] * 7)
                continue
            out.append([r["model"], str(r["devices"]), str(r["batch"]), bc.fmt(r["compile_s"], ".1f"),
                        bc.fmt(r["step_ms_median"], ".2f"), bc.fmt(r["step_ms_p90"], ".2f"),
                        bc.fmt(r["examples_per_s"], ",.1f"), bc.fmt(r["per_device_examples_per_s"], ",.1f"),
                        bc.fmt(r.get("time_vs_1_device"), ".2f"), bc.fmt(r.get("efficiency_vs_ideal_speedup"), ".2f")])
        print()
        print(bc.markdown_table(headers, out, [False] + [True] * 9))
        print(flush=True)


# ==================================================================================================
# CLI
# ==================================================================================================
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    p.add_argument("--frameworks", default=",".join(FRAMEWORKS), help=f"comma-separated subset of {','.join(FRAMEWORKS)}")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=None, help="step section (default 32 64 128 256)")
    p.add_argument("--hmt-batch-sizes", type=int, nargs="+", default=None, help="hmt section (default: --batch-sizes)")
    p.add_argument("--dtypes", nargs="+", default=None, choices=["float32", "bfloat16"], help="default: both")
    p.add_argument("--image-size", type=int, default=None, help="default 224")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 50)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 5)")
    p.add_argument("--mlp-classes", type=int, nargs="+", default=None, help="default 20 80 1000")
    p.add_argument("--mlp-batch", type=int, default=None, help="default 1024")
    p.add_argument("--eval-repeats", type=int, default=5)
    p.add_argument("--eval-xla-cpu-max", type=float, default=2e6,
                   help="on CPU, time the pure-XLA ranking kernel only up to this many scores")
    p.add_argument("--scaling-devices", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--scaling-models", default=None, help="comma-separated of mlp,resnet50 (default: mlp on fake CPU "
                   "devices, mlp,resnet50 with --real-devices)")
    p.add_argument("--scaling-dtype", default=None, choices=["float32", "bfloat16"],
                   help="default float32 on CPU, bfloat16 with --real-devices")
    p.add_argument("--real-devices", action="store_true", help="use the machine's accelerators (default: fake CPU devices)")
    p.add_argument("--json", default="", help="write all results here")
    p.add_argument("--quick", action="store_true", help="tiny sizes: the whole benchmark in a few minutes on a CPU")
    p.add_argument("--budget-s", type=float, default=0.0,
                   help="stop starting new rows after this many seconds (they are reported as skipped); 0 = no limit")
    p.add_argument("--peak-tflops", type=float, default=0.0, help="peak TFLOP/s of one device for bf16 rows (MFU)")
    p.add_argument("--peak-tflops-fp32", type=float, default=0.0, help="peak TFLOP/s for float32 rows (MFU)")
    p.add_argument("--fp32-peak", default="tf32", choices=["tf32", "fp32"],
                   help="which default peak float32 rows use on a known GPU (TF32 tensor cores or CUDA-core fp32)")
    p.add_argument("--compile-batch-sizes", type=int, nargs="+", default=None,
                   help="step/hmt: torch_compile rows only at these batch sizes (each new shape recompiles; default all)")
    p.add_argument("--compile-dtypes", nargs="+", default=None, choices=["float32", "bfloat16"],
                   help="torch_compile rows only for these dtypes (default: all; --quick: float32)")
    p.add_argument("--warm-torch-cache", action="store_true",
                   help="keep torch.compile's on-disk caches (default: a fresh, empty cache per run, so the "
                   "torch_compile 'compile s' is a cold compile like the JAX one)")
    p.add_argument("--torch-compile-mode", default=None, help="torch.compile mode (default: torch's default)")
    p.add_argument("--verbose", action="store_true", help="print tracebacks of failed rows")
    args = p.parse_args(argv)

    args.sections = [s for s in args.sections.split(",") if s]
    args.frameworks = [f for f in args.frameworks.split(",") if f]
    for s in args.sections:
        if s not in SECTIONS:
            p.error(f"unknown section {s!r}; choose from {','.join(SECTIONS)}")
    for f in args.frameworks:
        if f not in FRAMEWORKS:
            p.error(f"unknown framework {f!r}; choose from {','.join(FRAMEWORKS)}")
    q = args.quick
    dflt = lambda value, quick, full: value if value is not None else (quick if q else full)  # noqa: E731
    args.batch_sizes = dflt(args.batch_sizes, [8], [32, 64, 128, 256])
    args.dtypes = dflt(args.dtypes, ["float32", "bfloat16"], ["float32", "bfloat16"])
    args.image_size = dflt(args.image_size, 32, 224)
    args.compile_dtypes = dflt(args.compile_dtypes, ["float32"], None)
    args.steps = dflt(args.steps, 5, 50)
    args.warmup = dflt(args.warmup, 2, 5)
    args.mlp_classes = dflt(args.mlp_classes, [20, 80, 1000], [20, 80, 1000])
    args.mlp_batch = dflt(args.mlp_batch, 64, 1024)
    args.mlp_features = 64 if q else 256
    args.mlp_hidden = (256,) if q else (1024, 1024)
    args.mlp_num_train = 4000 if q else 20000
    args.eval_sizes = [(5000, 80), (20000, 200)] if q else [(5000, 80), (100000, 1000)]
    if q:
        args.eval_repeats = min(args.eval_repeats, 3)
    args.scaling_models = (args.scaling_models.split(",") if args.scaling_models
                           else (["mlp", "resnet50"] if args.real_devices else ["mlp"]))
    args.scaling_dtype = args.scaling_dtype or ("bfloat16" if args.real_devices else "float32")
    args.scaling_batch_mlp = args.mlp_batch if not q else 256
    args.scaling_batch_resnet = max(args.batch_sizes) if not q else 16
    args.scaling_image_size = args.image_size if not q else 32
    args.scaling_mlp_classes = 1000
    args.scaling_steps = args.steps
    return args


def main(argv=None):
    args = parse_args(argv)
    fake = max(args.scaling_devices) if ("scaling" in args.sections and not args.real_devices) else 1
    wants_torch = any(f.startswith("torch") for f in args.frameworks)
    bc.configure_jax_env(args.real_devices, fake, preallocate=False if wants_torch else None)
    if wants_torch and not args.warm_torch_cache:
        # cold torch.compile caches, as the JAX side compiles without its persistent cache (set before
        # torch is imported; removed at exit)
        import atexit
        import shutil
        import tempfile

        cache = tempfile.mkdtemp(prefix="ltjax_bench_inductor_")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
        os.environ["TRITON_CACHE_DIR"] = os.path.join(cache, "triton")
        atexit.register(shutil.rmtree, cache, ignore_errors=True)
    if wants_torch and torch_device(args.real_devices) == "cuda":
        T = torch_lib()
        T.torch.backends.cuda.matmul.allow_tf32 = True  # TF32 for fp32 matmuls, like JAX's default precision
        T.torch.backends.cudnn.allow_tf32 = True
        T.torch.backends.cudnn.benchmark = True
    bench = Bench(args)
    bench.header()
    for section in args.sections:
        t = time.perf_counter()
        if section in ("step", "hmt", "cssfe", "ldrnet", "comic", "mlp"):
            bench.train_section(section)
        elif section == "eval":
            bench.eval_section()
        elif section == "scaling":
            bench.scaling_section()
        print(f"({section}: {time.perf_counter() - t:.0f} s)\n", flush=True)
    bench.results["total_s"] = time.perf_counter() - bench.t_start
    bench.save()


if __name__ == "__main__":
    main()
