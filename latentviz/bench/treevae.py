"""Section ``treevae``: the growth schedule's wall time (GPU) or its estimate from seconds per
epoch (CPU), one step of a 10-leaf tree, stacked against per node, and one step of a tree
the reference schedule trained, subnormal floats flushed against kept (CPU)."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import torch

from .environment import REPO, _load_mnist, _slice
from .results import Report, Row, _met
from .timing import Clock, _median, interleave, paired_speedup, rate


def _grow(model, leaves: int) -> None:
    """Split leaves breadth-first (shallowest first, within max_depth) to ``leaves``."""
    while model.n_leaves < leaves:
        order = sorted(model.leaf_order, key=lambda n: model.tree[n].depth)
        leaf = next((n for n in order if model.tree[n].depth < model.config.max_depth), None)
        if leaf is None:
            return
        model.split_leaf(leaf)


def _tree_epoch_seconds(variant, cfg, data, leaves, train_cfg, device, repeats,
                        subtree: bool = False) -> tuple[float, int, float]:
    """(median seconds (CPU seconds on the CPU) per training image of the shared trainer
    on a tree grown to ``leaves``, the leaves it has, seconds per test image of its
    evaluation). With ``subtree``, one more leaf is split and only its new subtree trains,
    as in a subtree stage. Training epochs are timed without their test pass, which the
    schedule runs every ``eval_every`` epochs (timed separately)."""
    from ..train import evaluate, fit

    torch.manual_seed(0)
    model = variant.cls(cfg).to(device)
    _grow(model, leaves)
    params = None
    if subtree:
        leaf = min(model.leaf_order, key=lambda n: model.tree[n].depth)
        model.split_leaf(leaf)
        model._focus, params = leaf, model.subtree_parameters(leaf)
    model.to(device)
    none = data.x_test[:0], data.y_test[:0]
    try:
        fit(model, _slice(data, 2 * train_cfg.batch_size, 256), train_cfg.replace(epochs=1),
            prepare=False, params=params, x_test=none[0], y_test=none[1])
        per_image = []
        for r in range(repeats):
            with Clock(device) as c:
                fit(model, data, train_cfg.replace(epochs=1, seed=r + 1), prepare=False,
                    params=params, x_test=none[0], y_test=none[1])
            per_image.append(_seconds(c, device) / len(data.x_train))
        with Clock(device) as c:
            evaluate(model, data.x_test, data.y_test, train_cfg.eval_batch_size)
    finally:
        model._focus = None
    return _median(per_image), model.n_leaves, _seconds(c, device) / len(data.x_test)


def _seconds(clock: Clock, device) -> float:
    """CPU seconds on the CPU (a shared machine stretches the wall clock), else wall."""
    return clock.cpu if device.type == "cpu" else clock.wall


def _steps(model, opt, x, steps: int, stacked: bool, flush: bool | None = None,
           negligible: float | None = None):
    """A bench runner: ``steps`` training steps (forward, backward, Adam) of ``model`` on
    the batch x, its nodes stacked or not, subnormals flushed or kept (None: as they are;
    the mode is this thread's), exact decoding's last layer skipped below ``negligible``
    (``tree_vae.NEGLIGIBLE_P``; 0: every row decoded; None: the library's value)."""
    from ..models import tree_vae

    default = tree_vae.NEGLIGIBLE_P

    def run() -> int:
        if flush is not None:
            torch.set_flush_denormal(flush)
        tree_vae.NEGLIGIBLE_P = default if negligible is None else negligible
        model.stacked = stacked
        for _ in range(steps):
            out = model.loss(x)
            opt.zero_grad(set_to_none=True)
            out.total.backward()
            opt.step()
        tree_vae.NEGLIGIBLE_P = default
        return steps
    return run


def _tree_step_row(rep: Report, variant, cfg, tc, device, quick: bool) -> None:
    """One training step of a 10-leaf tree (exact decoding), the nodes' networks evaluated
    together (``model.stacked``, the default) against one node at a time (the
    implementation before issue 16, kept as the reference), interleaved in one run on one
    thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = variant.cls(cfg).to(device)
        _grow(model, cfg.max_leaves)
        model.to(device).train()
        x = torch.rand(tc.batch_size, *cfg.image_shape, device=device)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        steps = 2 if quick else 5

        runs = interleave({"stacked": _steps(model, opt, x, steps, stacked=True),
                           "per node": _steps(model, opt, x, steps, stacked=False)},
                          2 if quick else 6, device)
        model.stacked = True
    finally:
        torch.set_num_threads(threads)
    ms = {k: 1000 / rate(v) for k, v in runs.items()}
    cpu = {k: 1000 * _median([c / n for n, _, c in v]) for k, v in runs.items()}
    if device.type == "cpu":  # CPU seconds: other jobs on a shared machine stretch the wall
        shown, other = cpu, ("wall", ms)
        ratio = _median([b[2] / a[2] for a, b in zip(runs["stacked"], runs["per node"])
                         if a[2] > 0])
    else:
        shown, other = ms, ("CPU", cpu)
        ratio = paired_speedup(runs["stacked"], runs["per node"])
    rep.row(Row(f"step of a {model.n_leaves}-leaf tree, stacked nodes vs per node",
                shown["stacked"], shown["per node"], "ms", ratio, ">= 3x", _met(ratio, 3.0),
                f"{'CPU' if device.type == 'cpu' else 'wall'} ms, {device.type}, 1 thread, "
                f"batch {tc.batch_size}, exact decoding, forward + backward + Adam; {other[0]} "
                f"ms {other[1]['stacked']:.0f} vs {other[1]['per node']:.0f}"))


def trained_tree(root: Path) -> Path | None:
    """A MNIST TreeVAE the reference schedule trained: the shipped one if it is, else the
    open run's partial checkpoint (``checkpoints/partial/``), else None."""
    from ..checkpoints import read_meta

    shipped = root / "checkpoints" / "mnist-treevae.safetensors"
    candidates = [shipped] + sorted((root / "checkpoints" / "partial").glob("*/*.safetensors"))
    for path in candidates:
        try:
            ck = read_meta(path)
        except Exception:  # noqa: BLE001 - missing or unreadable: try the next
            continue
        if (ck.variant, ck.dataset) == ("treevae", "mnist") \
                and ck.meta.get("config", {}).get("schedule") == "reference":
            return path
    return None


def _subnormal_step_row(rep: Report, data, device, quick: bool, root: Path = REPO) -> None:
    """One training step (exact decoding, batch 256, one thread) of a tree the reference
    schedule trained, as latentviz runs it now (stacked nodes, subnormal floats flushed to
    zero: ``openmp.flush_subnormals``; exact decoding's last layer skipped for the rows
    with P < 1e-20: ``TreeVAE._exact_recon``) against each change undone, and against
    the step before issue 16 (per-node pass, subnormals kept, every row decoded),
    interleaved in one run.
    A trained tree routes most images to most leaves with P < 1e-30, so the backward pass
    through the decoders is full of subnormal numbers; a fresh tree (the row above) has
    none, which is why this row needs a trained one."""
    from ..checkpoints import load

    if device.type != "cpu":
        rep.skip("subnormals flushed vs kept", "a CPU matter: GPUs handle subnormals at full speed")
        return
    path = trained_tree(root)
    if path is None:
        rep.skip("subnormals flushed vs kept", "no MNIST TreeVAE trained with the reference "
                 "schedule here (shipped or under checkpoints/partial/)")
        return
    from .. import openmp

    threads, flushing = torch.get_num_threads(), openmp.flushing_now()
    torch.set_num_threads(1)  # one thread: the flush mode below is this thread's
    try:
        model, ck = load(path)
        model.train()
        model._exact = True
        x = data.x_train[:256]
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        steps = 2 if quick else 5

        runs = interleave({"flushed": _steps(model, opt, x, steps, True, flush=True),
                           "kept": _steps(model, opt, x, steps, True, flush=False),
                           "decoded": _steps(model, opt, x, steps, True, flush=True,
                                             negligible=0.0),
                           "before": _steps(model, opt, x, steps, False, flush=False,
                                            negligible=0.0)},
                          2 if quick else 6, device)
    finally:
        torch.set_flush_denormal(flushing)
        torch.set_num_threads(threads)
    cpu = {k: 1000 * _median([c / n for n, _, c in v]) for k, v in runs.items()}
    whats = {"kept": "subnormals flushed vs kept",
             "decoded": "last layer skipped at P<1e-20 vs run",
             "before": "now vs before issue 16"}
    notes = {"kept": "both stacked, skipping; ", "decoded": "both stacked, flushed; ",
             "before": "now: stacked, flushed, skipping; before: per node, kept, decoded; "}
    for ref, what in whats.items():
        ratio = _median([b[2] / a[2] for a, b in zip(runs["flushed"], runs[ref]) if a[2] > 0])
        rep.row(Row(f"trained {model.n_leaves}-leaf step, {what}", cpu["flushed"],
                    cpu[ref], "ms", ratio, ">= 3x" if ref == "before" else "",
                    _met(ratio, 3.0) if ref == "before" else None,
                    f"CPU ms, 1 thread, batch 256, exact decoding, forward + backward + Adam; "
                    + notes[ref] + f"{path.relative_to(root)} ({ck.epochs} epochs)"))


def schedule_epochs(cfg, leaves_final: int) -> list[tuple[str, float, int]]:
    """The growth schedule as (stage, full-data-equivalent epochs, leaves during it).

    Assumes growth runs from 2 leaves to ``leaves_final`` one split at a time, each new
    subtree trains on the share of the data of the leaf it splits (1 / leaves before the
    split, leaves of equal size), retrains follow every ``retrain_every`` splits while
    growth goes on, and pruning removes nothing."""
    out = [("initial", float(cfg.epochs_initial), 2)]
    splits = leaves_final - 2
    for s in range(1, splits + 1):
        out.append((f"subtree {s}", cfg.epochs_subtree / (1 + s), 2 + s))
        if s % cfg.retrain_every == 0 and s < splits:
            out.append((f"retrain after {s}", float(cfg.epochs_retrain), 2 + s))
    out.append(("final", float(cfg.epochs_final), leaves_final))
    return out


def bench_treevae(rep: Report, ctx: dict) -> None:
    rep.section("treevae", "TreeVAE: the full MNIST growth schedule")
    from ..models import VARIANTS
    from ..train import TrainConfig, pick_device, train_model

    variant = VARIANTS.get("treevae")
    if variant is None:
        rep.skip("TreeVAE", "no TreeVAE module (latentviz.models.VARIANTS has no 'treevae')")
        return
    device = pick_device("auto")
    quick = ctx["quick"]
    try:
        data, _ = _load_mnist(ctx["data_dir"])
    except Exception as exc:  # noqa: BLE001
        rep.skip("TreeVAE", f"MNIST not available ({type(exc).__name__}: {exc})"[:300])
        return
    module = sys.modules[variant.cls.__module__]
    ref_train = dict(getattr(module, "REFERENCE_TRAIN", {"batch_size": 256, "lr": 1e-3,
                                                         "weight_decay": 1e-5, "seed": 42}))
    tc = TrainConfig(**{k: v for k, v in ref_train.items() if k in ("batch_size", "lr",
                                                                  "weight_decay", "seed")},
                     device=device.type)
    cfg = variant.config(image_shape=(1, 28, 28), n_classes=10, schedule="reference")
    if device.type != "cuda":
        rep.skip("full schedule wall time", "no CUDA GPU here: the schedule runs only on a GPU; "
                 "below, a CPU estimate from measured epochs")
    elif quick or not ctx.get("full_schedule", True):
        rep.skip("full schedule wall time", ("--quick" if quick else "--no-full-schedule")
                 + " (hours of GPU time)")
    else:
        torch.manual_seed(tc.seed)
        model = variant.cls(cfg)
        model.variant_name = "treevae"
        with Clock(device) as c:
            hist = train_model(model, data, tc)
        rep.row(Row(f"full MNIST schedule on {ctx['env']['device']}", c.wall / 3600, None, "h",
                    None, "", None, f"{hist.epochs} epochs, {model.n_leaves} leaves, "
                    f"final test recon {hist.test[-1].get('recon', float('nan')):.1f}"))
    _tree_step_row(rep, variant, cfg, tc, device, quick)
    _subnormal_step_row(rep, data, device, quick)
    # CPU (or GPU) seconds per epoch at the initial and the final size, extrapolated.
    n = 512 if quick else 5120
    d = _slice(data, n, max(n // 6, 64))
    repeats = 1 if quick else 3
    leaves_final = cfg.max_leaves
    per_img, per_test = {}, {}
    clock = "CPU seconds" if device.type == "cpu" else "wall"
    for leaves in (2, leaves_final):
        per_img[leaves], got, per_test[leaves] = _tree_epoch_seconds(variant, cfg, d, leaves, tc,
                                                                     device, repeats)
        rep.row(Row(f"epoch of 60k at {got} leaves ({device.type}, measured on {n})",
                    per_img[leaves] * 60000, None, "s", None, "", None,
                    f"{clock}, batch {tc.batch_size}, {repeats} repeats, median; its 10k test pass "
                    f"{per_test[leaves] * 10000:.1f} s"))
        if got != leaves:
            leaves_final = got
            per_img[leaves_final] = per_img.pop(leaves)
            per_test[leaves_final] = per_test.pop(leaves)
    sub, _, _ = _tree_epoch_seconds(variant, cfg, d, leaves_final - 1, tc, device, repeats,
                                    subtree=True)
    rep.row(Row(f"epoch of 60k training a new subtree ({device.type}, measured on {n})",
                sub * 60000, None, "s", None, "", None,
                f"{clock}; the path to the split leaf frozen, 3 new nodes trained"))
    stages = schedule_epochs(cfg, leaves_final)
    lo, hi = per_img[2], per_img[leaves_final]
    lo_t, hi_t = per_test[2], per_test[leaves_final]

    def cost(name, e, k):
        f = (k - 2) / max(leaves_final - 2, 1)
        train = e * 60000 * (sub if name.startswith("subtree") else lo + (hi - lo) * f)
        stage_epochs = cfg.epochs_subtree if name.startswith("subtree") else e
        tests = math.ceil(stage_epochs / cfg.eval_every) * 10000 * (lo_t + (hi_t - lo_t) * f)
        if name.startswith("subtree"):  # on the test images the split selects
            tests *= e / cfg.epochs_subtree
        return train + tests
    total = sum(cost(*s) for s in stages)
    full_eq = sum(e for _, e, _ in stages)
    rep.row(Row(f"ESTIMATE: full schedule on {device.type} (not run)", total / 3600, None, "h",
                None, "", None, f"{full_eq:.0f} full-data epochs; subtrees priced as "
                f"subtree epochs, test passes every {cfg.eval_every} epochs"))
    rep.note(f"reference schedule: {cfg.epochs_initial} initial, {cfg.epochs_subtree} per subtree, "
             f"{cfg.epochs_retrain} retrain every {cfg.retrain_every} splits, {cfg.epochs_final} "
             f"final epochs, up to {cfg.max_leaves} leaves; the estimate assumes "
             f"{leaves_final - 2} splits, subtrees on 1/leaves of the data, no pruning, full-tree "
             "cost linear in the leaves.")
