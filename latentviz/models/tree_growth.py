"""TreeVAE's growth schedule (Manduchi et al. 2023, sec. 2.5; reference ``train_tree.py``):
train the root and two leaves, split the leaf holding most samples and train its new
subtree alone, retrain all every few splits, prune, fine-tune all. Every stage goes
through the shared trainer (:func:`latentviz.train.fit`).

A run can stop after any epoch and go on later: after every epoch ``on_stage()`` is
called with ``model.schedule_state`` saying where the schedule stands (the stage, the
epochs it has done, its training and test images, the CPU random state) and
``model._stage_opt`` holding the stage's Adam, so a caller can save a checkpoint; a model
loaded from it goes on where it stopped and, on the CPU, ends with the weights of the
uninterrupted run (each epoch's shuffle and noise depend on (seed, epoch) alone).
"""
from __future__ import annotations

import base64
import logging

import numpy as np
import torch
from torch import Tensor

log = logging.getLogger(__name__)

STEPS = ("initial", "grow", "retrain", "final")


def fit_schedule(model, data, config, callback=None, *, on_stage=None, history=None,
                 restore_optimizer=None, on_grown=None):
    """Grow, prune and fine-tune ``model``'s tree; returns the History.

    1. train the current tree (root + 2 leaves) for ``epochs_initial``;
    2. repeat: count the effective leaves (summed P(leaf|x) >= effective_leaf_fraction
       * N) and stop at ``max_leaves``; pick the leaf with most training samples with
       P(leaf|x) >= min(1/n_effective, subset_prob), skipping leaves under
       ``min_samples_split`` or at ``max_depth``; split it and train only the new
       subtree on those samples for ``epochs_subtree`` (the rest frozen, batch norm in
       eval mode; its test loss on the test images the same rule selects); after every
       ``retrain_every`` splits retrain all for ``epochs_retrain``;
    3. prune leaves holding under ``prune_fraction`` of the training samples;
    4. fine-tune all for ``epochs_final``, decoding every leaf exactly.

    Each stage starts a fresh Adam (lr, weight decay and batch size from ``config``;
    ``config.epochs`` is not used), multiplies the learning rate by ``lr_decay`` every
    ``lr_decay_every`` epochs, restarts the KL annealing and evaluates the test set every
    ``eval_every`` epochs and after its last. Labels are never used.

    ``on_stage()`` is called after every epoch and between stages (see the module
    docstring); ``on_grown()`` right after the ``on_stage()`` of the moment growth ends,
    before pruning: a checkpoint saved then, resumed with a larger ``max_leaves``, grows
    on exactly as a run started with it (the paper grows 20-leaf trees for DP and LP and
    10-leaf trees for ACC and NMI: one growth serves both); ``restore_optimizer(adam)`` loads the saved Adam state into the stage a
    resumed run continues. ``history`` (continued on resume) collects every epoch.
    """
    from ..train import History, adam, fit, pick_device

    c = model.config
    device = pick_device(config.device)
    model.to(device)
    data = data.to(device)
    history = history if history is not None else History()
    if model.schedule_state is None:  # a new run
        torch.manual_seed(config.seed)
        state = {"stages": 0, "splits": 0, "next": "initial"}
    else:  # a resumed one: the same stages follow, with the same random numbers
        state = dict(model.schedule_state)
        torch.set_rng_state(torch.tensor(state["rng"], dtype=torch.uint8))
    counter, splits, step = state["stages"], state["splits"], state["next"]
    pending = state.get("stage")  # a stage cut off after some of its epochs
    plan = planned_epochs(c)
    stage_start = [0]  # history.epochs when the current stage began

    def save(stage_info=None) -> None:
        model.schedule_state = {"stages": counter, "splits": splits, "next": step,
                                "rng": torch.get_rng_state().tolist()}
        if stage_info is not None:
            model.schedule_state["stage"] = stage_info
        if on_stage is not None:
            on_stage()

    def stage(name: str, epochs: int, anneal: int, focus: int | None = None,
              train_mask: Tensor | None = None, test_mask: Tensor | None = None,
              exact: bool = False) -> bool:
        """Train one stage (or what a resumed one has left); False if the user stopped."""
        nonlocal counter, pending
        if epochs <= 0:
            return True
        done = 0
        if pending is not None:
            done, pending = pending["epoch"], None
        else:
            counter += 1
        model._focus, model._anneal, model._stage_epoch, model._exact = focus, anneal, done, exact
        params = list(model.subtree_parameters(focus) if focus is not None
                      else model.parameters())
        tc = config.replace(seed=config.seed + 1000 * counter)
        model._stage_opt = adam(params, tc)
        if done and restore_optimizer is not None:
            restore_optimizer(model._stage_opt)
        info = {"name": name, "epoch": done, "epochs": epochs, "focus": focus,
                "train_mask": pack_mask(train_mask), "test_mask": pack_mask(test_mask)}
        stage_start[0] = history.epochs - done

        def report(p):
            """The stage's progress plus the whole schedule's fraction: epochs done over
            the planned total (growth may take more or fewer splits than planned; the bar
            then waits, or jumps, before the final fine-tune, which fills its last part).
            After each epoch, the position for a checkpoint."""
            in_stage = (p.epoch - 1) + p.step / max(p.steps, 1)
            if exact:  # the final fine-tune
                p.overall = (plan - c.epochs_final + in_stage) / plan
            else:
                p.overall = min(stage_start[0] + in_stage, plan - c.epochs_final) / plan
            p.overall = min(max(p.overall, 0.0), 1.0)
            if p.phase == "epoch":
                save({**info, "epoch": model._stage_epoch})
            return callback(p) if callback is not None else None

        x = y = xt = yt = None
        if train_mask is not None:
            x = data.x_train[train_mask.to(device)]
            y = torch.zeros(len(x), dtype=torch.long, device=device)
        if test_mask is not None:
            xt, yt = data.x_test[test_mask.to(device)], data.y_test[test_mask.to(device)]
        try:
            if done < epochs:
                fit(model, data, tc.replace(epochs=epochs - done), report,
                    optimizer=model._stage_opt, params=params, stage=name, prepare=False,
                    x_train=x, y_train=y, x_test=xt, y_test=yt, start_epoch=done,
                    eval_every=c.eval_every, history=history)
        finally:
            model._focus, model._anneal, model._stage_opt, model._exact = None, None, None, False
        return history.stopped is None

    try:
        while True:
            if step == "initial":
                if not stage("initial", c.epochs_initial, c.kl_anneal_epochs):
                    return history
                step = "grow"
            elif step == "grow":
                if pending is not None:  # the subtree of a split already made
                    leaf, mask = pending["focus"], unpack_mask(pending["train_mask"])
                    test_mask = unpack_mask(pending["test_mask"])
                else:
                    choice = (choose_split(model, data.x_train, config.eval_batch_size)
                              if splits < c.max_splits else None)
                    if choice is None:
                        if on_grown is not None:
                            # Where a run with more leaves would stand now: before the
                            # retrain this run skipped because it had its leaves, or growing.
                            last = history.stages[-1] if history.stages else ""
                            step = ("retrain" if splits and splits % c.retrain_every == 0
                                    and last.startswith("split") else "grow")
                            save()
                            on_grown()
                        if c.prune:
                            prune(model, data.x_train, config.eval_batch_size)
                        step = "final"
                        save()
                        continue
                    leaf, mask, threshold = choice
                    test_mask = select_samples(model, data.x_test, leaf, threshold,
                                               config.eval_batch_size)
                    model.split_leaf(leaf)
                    splits += 1
                    log.info("split %d: node %d (%d samples)", splits, leaf, int(mask.sum()))
                if not stage(f"split {splits}: node {leaf}", c.epochs_subtree,
                             c.kl_anneal_epochs, focus=leaf, train_mask=mask,
                             test_mask=test_mask):
                    return history
                step = "retrain"
            elif step == "retrain":
                if pending is not None or (splits % c.retrain_every == 0 and choose_split(
                        model, data.x_train, config.eval_batch_size) is not None):
                    if not stage("retrain", c.epochs_retrain, c.kl_anneal_epochs):
                        return history
                step = "grow"
            else:  # "final"
                stage("final", c.epochs_final, c.kl_anneal_epochs_final, exact=True)
                return history
            # A stage boundary: the weights, the tree and this are all it takes to go on.
            save()
    finally:
        model.schedule_state = None


def planned_epochs(c) -> int:
    """Epochs of the schedule if growth takes the usual course: splits until
    ``max_leaves`` leaves (from the initial two), a retrain after every ``retrain_every``
    of them but the last, the final fine-tune."""
    splits = min(c.max_splits, max(c.max_leaves - 2, 0))
    retrains = (splits - 1) // c.retrain_every if splits else 0
    return max(1, c.epochs_initial + splits * c.epochs_subtree
               + retrains * c.epochs_retrain + c.epochs_final)


def _leaf_probs(model, x: Tensor, batch_size: int) -> Tensor:
    probs = model.node_probs_batched(x, batch_size)
    col = {n: k for k, n in enumerate(model.node_order)}
    return probs[:, [col[n] for n in model.leaf_order]]  # (N, L)


def choose_split(model, x: Tensor, batch_size: int = 4096
                 ) -> tuple[int, Tensor, float] | None:
    """The leaf to split next, the mask of its training samples and the P(leaf|x)
    threshold that selected them, or None when the tree has ``max_leaves`` effective
    leaves or no leaf qualifies."""
    c = model.config
    probs = _leaf_probs(model, x, batch_size)
    mass = probs.sum(dim=0)
    n_eff = int((mass >= c.effective_leaf_fraction * len(x)).sum())
    if n_eff >= c.max_leaves:
        log.info("growth stops: %d effective leaves (max_leaves %d)", n_eff, c.max_leaves)
        return None
    threshold = min(1.0 / max(n_eff, 1), c.subset_prob)
    selected = probs >= threshold  # (N, L)
    counts = selected.sum(dim=0)
    for k in counts.argsort(descending=True, stable=True).tolist():
        leaf = model.leaf_order[k]
        if int(counts[k]) < c.min_samples_split:
            break
        if model.tree[leaf].depth >= c.max_depth:
            continue  # the reference stops growing here; trying the next leaf is kinder
        return leaf, selected[:, k].to(x.device), threshold
    log.info("growth stops: no leaf with >= %d samples below max_depth", c.min_samples_split)
    return None


def select_samples(model, x: Tensor, leaf: int, threshold: float, batch_size: int = 4096
                   ) -> Tensor:
    """Which rows of x reach ``leaf`` with P(leaf|x) >= threshold -> (N,) bool."""
    return _leaf_probs(model, x, batch_size)[:, model.leaf_order.index(leaf)] >= threshold


def prune(model, x: Tensor, batch_size: int = 4096) -> list[int]:
    """Remove, smallest first, the leaves holding fewer than ``prune_fraction`` of the
    samples of x under the hard assignment; returns the removed leaf ids."""
    removed = []
    while model.n_leaves > 1:
        counts = torch.bincount(model.predict_cluster_batched(x, batch_size),
                                minlength=model.n_leaves)
        k = int(counts.argmin())
        if int(counts[k]) >= model.config.prune_fraction * len(x):
            break
        leaf = model.leaf_order[k]
        log.info("pruning leaf %d (%d of %d samples)", leaf, int(counts[k]), len(x))
        model.remove_leaf(leaf)
        removed.append(leaf)
    return removed


# ----------------------------------------------------------------------------- the saved position

def pack_mask(mask: Tensor | None) -> dict | None:
    """A boolean mask as JSON: its length and its bits, packed and base64-encoded."""
    if mask is None:
        return None
    m = mask.detach().cpu().numpy().astype(bool)
    return {"n": int(m.size), "bits": base64.b64encode(np.packbits(m).tobytes()).decode()}


def unpack_mask(packed: dict | None) -> Tensor | None:
    if packed is None:
        return None
    bits = np.frombuffer(base64.b64decode(packed["bits"], validate=True), dtype=np.uint8)
    return torch.from_numpy(np.unpackbits(bits)[:packed["n"]].astype(bool))


def check_schedule_state(state) -> None:
    """Refuse a malformed saved schedule position (a checkpoint is untrusted input)."""
    ok = (isinstance(state, dict) and state.get("next") in STEPS
          and all(isinstance(state.get(k), int) and state[k] >= 0 for k in ("stages", "splits"))
          and isinstance(state.get("rng"), list)
          and all(isinstance(b, int) and 0 <= b < 256 for b in state["rng"]))
    if not ok or len(state["rng"]) != len(torch.get_rng_state()):
        raise ValueError("its saved growth-schedule position is malformed")
    st = state.get("stage")
    if st is None:
        return
    try:
        ok = (isinstance(st, dict) and isinstance(st.get("name"), str)
              and all(isinstance(st.get(k), int) and st[k] >= 0 for k in ("epoch", "epochs"))
              and st["epoch"] <= st["epochs"]
              and (st.get("focus") is None or isinstance(st["focus"], int)))
        for key in ("train_mask", "test_mask"):
            m = st.get(key)
            if m is not None and not (isinstance(m, dict) and isinstance(m.get("n"), int)
                                      and len(unpack_mask(m)) == m["n"]):
                ok = False
    except (ValueError, TypeError, KeyError):
        ok = False
    if not ok or (state["next"] == "grow") != (st.get("train_mask") is not None):
        raise ValueError("its saved growth-schedule stage is malformed")
