"""TreeVAE (Manduchi et al. 2023): the tree metrics, the model contract, growth, pruning
and checkpoints. Tiny models on digits and on a synthetic two-level dataset."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import latentviz as lv
from latentviz import tree as T
from latentviz.checkpoints import CheckpointError
from latentviz.models.tree_vae import (TreeVAEConfig, kl_bernoulli, kl_gauss,
                                       precision_weighted)
from latentviz.train import train_model

from conftest import brute_force_dp, brute_force_lp, tiny_model

TERMS = {"recon", "kl_nodes", "kl_decisions"}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These models are tiny: thread hand-offs cost more than they save on a shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ----------------------------------------------------------------------------- metrics

SMALL_TREES = [
    {0: [1, 2]},
    {0: [1, 2], 1: [3, 4]},
    {0: [1, 2], 1: [3, 4], 2: [5, 6], 5: [7, 8]},
    {0: [1, 2], 1: [3], 3: [4, 5]},            # node 1 passes through (a pruned sibling)
]


@pytest.mark.parametrize("children", SMALL_TREES)
def test_purities_agree_with_brute_force(children):
    tree = T.as_tree(children)
    rng = np.random.default_rng(len(children))
    for _ in range(5):
        leaf_ids = rng.choice(tree.leaves, size=40)
        y = rng.integers(0, 3, size=40)
        dp, lp = T.dendrogram_purity(children, leaf_ids, y), T.leaf_purity(children, leaf_ids, y)
        assert dp == pytest.approx(brute_force_dp(children, leaf_ids, y), abs=1e-12)
        assert lp == pytest.approx(brute_force_lp(leaf_ids, y), abs=1e-12)


def test_perfect_tree_has_purity_one_and_a_split_class_less():
    children = {0: [1, 2], 1: [3, 4], 2: [5, 6]}
    leaf_ids = np.repeat([3, 4, 5, 6], 10)
    y = np.repeat([0, 1, 2, 3], 10)
    assert T.dendrogram_purity(children, leaf_ids, y) == 1.0
    assert T.leaf_purity(children, leaf_ids, y) == 1.0
    y_split = np.repeat([0, 0, 1, 2], 10)  # class 0 in two sibling leaves: LCA node 1 is pure
    assert T.dendrogram_purity(children, leaf_ids, y_split) == 1.0
    y_far = np.repeat([0, 1, 0, 2], 10)    # class 0 across the root: its cross pairs score 1/2
    dp = T.dendrogram_purity(children, leaf_ids, y_far)
    assert dp == pytest.approx(brute_force_dp(children, leaf_ids, y_far)) and dp < 1.0


def test_leaf_counts_say_how_many_leaves_hold_images():
    leaf_ids = np.repeat([3, 4, 5, 6], [600, 395, 5, 0])        # leaf 6 empty, 5 under 1%
    assert T.leaves_with_mass(leaf_ids) == 2
    assert T.leaves_with_mass(leaf_ids, fraction=0.005) == 3
    table = [{"is_leaf": False, "n_samples": 1000}] + [
        {"is_leaf": True, "n_samples": n} for n in (600, 395, 5, 0)]
    assert T.leaf_count_text(table) == "4 leaves, 2 with at least 1% of the images"


# ----------------------------------------------------------------------------- math

def test_precision_weighting_and_kls():
    mu, var = precision_weighted(torch.tensor([[2.0]]), torch.tensor([[1.0]]),
                                 torch.tensor([[0.0]]), torch.tensor([[1.0]]))
    assert mu.item() == pytest.approx(1.0) and var.item() == pytest.approx(0.5)
    assert kl_gauss(torch.zeros(3, 4), torch.ones(3, 4)).abs().max() < 1e-6
    q = torch.tensor([0.2, 0.9])
    assert kl_bernoulli(q, q).abs().max() < 1e-6
    assert kl_bernoulli(torch.tensor([0.9]), torch.tensor([0.1])).item() == pytest.approx(
        0.9 * np.log(9) + 0.1 * np.log(1 / 9), abs=1e-5)


# ----------------------------------------------------------------------------- config

def test_config_schedule_presets_and_derived_latent_dim():
    ref = TreeVAEConfig(schedule="reference")
    assert (ref.epochs_initial, ref.epochs_subtree, ref.epochs_retrain, ref.retrain_every,
            ref.epochs_final) == (150, 150, 80, 3, 200)
    assert TreeVAEConfig(schedule="reference", epochs_final=7).epochs_final == 7
    assert TreeVAEConfig().latent_dim == 6 * 8
    assert TreeVAEConfig(max_depth=3, node_latent_dim=4).latent_dim == 16
    again = TreeVAEConfig.from_dict(ref.to_dict())
    assert again == ref
    assert TreeVAEConfig(latent_dim=12).latent_dim == 48, "derived, the value given is ignored"
    with pytest.raises(lv.ConfigError, match="backbone"):
        TreeVAEConfig(image_shape=(1, 8, 8), backbone="conv")


def test_kl_annealing_and_step_lr_follow_the_stage_epoch(digits):
    model = tiny_model("treevae", digits, kl_start=0.0, lr_decay_every=2, lr_decay=0.1)
    assert model.kl_weight == 1.0, "outside the schedule the loss is the plain negative ELBO"
    model._anneal, model._stage_epoch = 4, 0
    model._stage_opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    alphas, lrs = [], []
    for _ in range(4):
        alphas.append(model.kl_weight)
        model.on_epoch_end(digits)
        lrs.append(model._stage_opt.param_groups[0]["lr"])
    assert alphas == [0.25, 0.5, 0.75, 1.0]
    assert lrs == pytest.approx([1e-3, 1e-4, 1e-4, 1e-5])


# ----------------------------------------------------------------------------- contract

@pytest.fixture
def tiny(digits):
    torch.manual_seed(0)
    model = tiny_model("treevae", digits)
    left, _ = model.split_leaf(model.tree.leaves[0])  # root -> (node -> 2 leaves, leaf)
    model.train()
    return model


def test_loss_is_finite_with_the_three_terms_and_ignores_labels(tiny, digits):
    x, y = digits.x_train[:64], digits.y_train[:64]
    other = torch.randint(0, 10, (64,))
    torch.manual_seed(1)
    out = tiny.loss(x, y)
    assert set(out.terms) == TERMS
    assert all(torch.isfinite(v) for v in [out.total, *out.terms.values()])
    torch.manual_seed(1)
    assert tiny.loss(x, other).total.item() == pytest.approx(out.total.item())


def test_sparse_decoding_changes_nothing_when_every_leaf_is_likely(tiny, digits):
    x = digits.x_train[:64]
    losses = []
    for tau in (0.0, 1e-3):
        tiny.config = tiny.config.replace(decode_min_prob=tau)
        torch.manual_seed(3)
        losses.append(tiny.loss(x, None).terms["recon"].item())
    assert losses[0] == pytest.approx(losses[1], rel=1e-5), losses


def test_stacked_pass_equals_the_per_node_pass(tiny, digits):
    """The nodes' networks evaluated together (the default) compute what the per-node
    reference pass computes: loss terms, every gradient, the batch-norm statistics, the
    routing; on a grown tree with a pass-through node."""
    import copy

    tiny.split_leaf(tiny.tree.leaves[-1])
    tiny.split_leaf(tiny.tree.leaves[0])
    tiny.remove_leaf(tiny.tree.leaves[-1])              # its parent now passes through
    assert any(len(tiny.tree[n].children) == 1 for n in tiny.tree.preorder())
    x = digits.x_train[:64]                             # 64 x 4 noise: the same random stream
    start = copy.deepcopy(tiny.state_dict())
    runs = []
    for stacked in (False, True):
        tiny.load_state_dict(start)
        tiny.stacked = stacked
        tiny.zero_grad()
        torch.manual_seed(7)
        out = tiny.loss(x, None)
        out.total.backward()
        runs.append((out, {k: p.grad.clone() for k, p in tiny.named_parameters()},
                     copy.deepcopy(tiny.state_dict()), tiny.node_probs(x), tiny.encode(x).mu))
    (a, ga, sa, pa, ea), (b, gb, sb, pb, eb) = runs
    for k in TERMS:
        assert b.terms[k].item() == pytest.approx(a.terms[k].item(), rel=1e-5), k
    for k in ga:
        assert torch.allclose(gb[k], ga[k], rtol=1e-4, atol=1e-5 * ga[k].abs().max()), k
    assert all(torch.allclose(sa[k].float(), sb[k].float(), atol=1e-6) for k in sa)
    assert torch.allclose(pa, pb, atol=1e-6) and torch.allclose(ea, eb, atol=1e-5)


def test_exact_decoding_skips_only_what_cannot_count(tiny, digits, monkeypatch):
    """Exact decoding leaves out a leaf's last layer for the samples that reach it with
    P < NEGLIGIBLE_P (1e-20) and nothing else: the loss terms, every gradient and the
    batch-norm statistics are those of decoding every sample at every leaf."""
    import copy

    import latentviz.models.tree_vae as tv

    tiny.split_leaf(tiny.tree.leaves[0])
    root = tiny.tree.root
    with torch.no_grad():  # the root sends every sample right with P(left) ~ 1e-22
        tiny.router_q[str(root)].net[-1].bias.fill_(-50.0)
    tiny._exact = True
    x = digits.x_train[:64]
    start = copy.deepcopy(tiny.state_dict())
    rows: list[int] = []
    runs = []
    for negligible in (0.0, 1e-20):
        monkeypatch.setattr(tv, "NEGLIGIBLE_P", negligible)
        tiny.load_state_dict(start)
        tiny.zero_grad()
        seen = []
        for dec in tiny.decoder.values():
            monkeypatch.setattr(dec, "last", (lambda f: lambda h: (seen.append(len(h)), f(h))[1])(
                type(dec).last.__get__(dec)))
        torch.manual_seed(3)
        out = tiny.loss(x, None)
        out.total.backward()
        rows.append(sum(seen))
        runs.append((out, {k: p.grad.clone() for k, p in tiny.named_parameters()},
                     copy.deepcopy(tiny.state_dict())))
    (a, ga, sa), (b, gb, sb) = runs
    left_leaves = len(tiny.tree.leaves) - 1
    assert rows[0] == len(tiny.tree.leaves) * 64 and rows[1] == rows[0] - left_leaves * 64
    for k in TERMS:
        assert b.terms[k].item() == pytest.approx(a.terms[k].item(), rel=1e-6), k
    # Each gradient agrees, but for the parameters that only the P ~ 1e-22 samples reach
    # (the left subtree's): theirs is ~1e-23 either way, which Adam (epsilon 1e-8) turns
    # into steps of ~1e-15 of the learning rate.
    for k in ga:
        assert torch.allclose(gb[k], ga[k], rtol=1e-5, atol=max(1e-6 * ga[k].abs().max(), 1e-15)), k
    assert any(0 < ga[k].abs().max() < 1e-15 for k in ga), "the test routes samples at P ~ 1e-22"
    assert all(torch.equal(sa[k], sb[k]) for k in sa), "batch norm saw every sample"


def test_gradients_reach_every_parameter(tiny, digits):
    tiny.loss(digits.x_train[:64], None).total.backward()
    missing = [n for n, p in tiny.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient reaches {missing[:5]}"


def test_subtree_training_touches_only_the_new_subtree(tiny, digits):
    leaf = tiny.tree.leaves[-1]
    tiny.split_leaf(leaf)
    tiny._focus = leaf
    tiny.train()
    frozen_bn = tiny.bottom_up[0][1].running_mean.clone()
    tiny.loss(digits.x_train[:64], None).total.backward()
    trained = {id(p) for p in tiny.subtree_parameters(leaf)}
    stray = [n for n, p in tiny.named_parameters() if p.grad is not None and id(p) not in trained]
    assert not stray, f"frozen parameters got gradients: {stray[:5]}"
    assert all(p.grad is not None for p in tiny.subtree_parameters(leaf))
    assert torch.equal(frozen_bn, tiny.bottom_up[0][1].running_mean), "frozen batch norm moved"


def test_views_have_the_documented_shapes(tiny, digits):
    tiny.eval()
    x = digits.x_test[:50]
    c = tiny.config
    z = tiny.embed(x)
    assert z.shape == (50, c.latent_dim) == (50, (c.max_depth + 1) * c.node_latent_dim)
    assert tiny.decode(z).shape == (50, *digits.image_shape)
    assert tiny.decode(z, torch.tensor(1)).shape == (50, *digits.image_shape)
    k = tiny.predict_cluster(x)
    assert k.min() >= 0 and k.max() < tiny.n_leaves
    assert T.reconstruct_leaves(tiny, x).shape == (tiny.n_leaves, 50, *digits.image_shape)
    imgs = T.sample_nodes(tiny, 3, seed=0)
    assert set(imgs) == set(tiny.tree.nodes)
    assert all(v.shape == (3, *digits.image_shape) and 0 <= v.min() and v.max() <= 1
               for v in imgs.values())
    assert tiny.sample(4, y=2).shape == (4, *digits.image_shape)
    rows = T.tree_table(tiny, x, digits.y_test[:50], digits.n_classes)
    by_id = {r["id"]: r for r in rows}
    root = by_id[tiny.tree.root]
    assert root["parent"] is None and root["n_samples"] == 50 and root["mean_path_prob"] == pytest.approx(1)
    for r in rows:
        assert len(r["class_counts"]) == digits.n_classes and sum(r["class_counts"]) == r["n_samples"]
        if r["children"]:
            assert r["n_samples"] == sum(by_id[ch]["n_samples"] for ch in r["children"])
            assert r["mean_path_prob"] == pytest.approx(
                sum(by_id[ch]["mean_path_prob"] for ch in r["children"]), abs=1e-5)
    leaf = tiny.tree.leaves[0]
    assert T.node_mask(tiny, x, leaf).sum() == by_id[leaf]["n_samples"]


# ----------------------------------------------------------------------------- growth

def test_split_choice_takes_the_biggest_eligible_leaf(digits, monkeypatch):
    model = tiny_model("treevae", digits, max_depth=2, max_leaves=4, min_samples_split=10)
    model.split_leaf(model.tree.leaves[0])            # leaves: 3, 4 (depth 2), 2 (depth 1)
    assert model.tree.leaves == [3, 4, 2]
    col = {n: k for k, n in enumerate(model.node_order)}
    p = torch.zeros(100, len(col))                    # 60 samples in leaf 3, 40 in leaf 2
    p[:60, col[3]], p[:60, col[2]], p[:60, col[4]] = 0.9, 0.05, 0.05
    p[60:, col[2]], p[60:, col[3]], p[60:, col[4]] = 0.9, 0.05, 0.05
    monkeypatch.setattr(model, "node_probs_batched", lambda x, bs=4096: p[:len(x)])
    leaf, mask = model._choose_split(digits.x_train[:100])
    assert leaf == 2, "leaf 3 is biggest but at max_depth, so the next biggest is split"
    assert mask.sum() == 40 and mask[60:].all(), "its subtree trains on its own samples"
    model.config = model.config.replace(min_samples_split=41)
    assert model._choose_split(digits.x_train[:100]) is None, "too few samples: no split"
    model.config = model.config.replace(min_samples_split=10, max_leaves=3)
    p[:, col[4]] = 0.005                              # leaf 4 holds < 1%: not effective
    assert model._choose_split(digits.x_train[:100]) is not None, "2 effective leaves: grow"
    p[:, col[4]] = 0.05
    assert model._choose_split(digits.x_train[:100]) is None, "3 effective leaves: stop"


def test_pruning_removes_small_leaves_and_the_checkpoint_keeps_the_pass_through(
        tiny, digits, tmp_path, monkeypatch):
    tiny.eval()
    node = tiny.tree.splits[-1]                       # the split under the root: leaves 3, 4
    small = tiny.tree[node].children[1]
    x = digits.x_train[:1000]

    def assignment(xb, batch_size=4096):              # hard leaves: 0.5% in leaf 4
        k = torch.arange(len(xb)) % tiny.n_leaves
        if tiny.n_leaves == 3:
            k[k == 1] = 0
            k[:5] = 1
        return k

    monkeypatch.setattr(tiny, "predict_cluster_batched", assignment)
    assert tiny.prune(x) == [small]
    monkeypatch.undo()
    assert len(tiny.tree[node].children) == 1 and str(node) not in tiny.router_q
    assert tiny.n_leaves == 2 and str(small) not in tiny.decoder
    path = lv.save(tmp_path / "pruned.safetensors", tiny, dataset="digits")
    again, _ = lv.load(path)
    assert again.tree.to_state() == tiny.tree.to_state()
    assert torch.equal(again.predict_cluster(digits.x_test), tiny.predict_cluster(digits.x_test))


def two_pair_dataset(n_per_group: int = 150, seed: int = 0) -> lv.Dataset:
    """Four groups of 8x8 images in two pairs: pair 0+1 has the left half bright, pair 2+3
    the right half (64 pixels apart); the groups of a pair differ by a 2x2 dot at the top
    or the bottom of the dark half (8 pixels apart). Grey noise on top."""
    g = torch.Generator().manual_seed(seed)
    protos = torch.zeros(4, 8, 8)
    protos[:2, :, :4] = 1
    protos[2:, :, 4:] = 1
    protos[0, 1:3, 5:7] = protos[1, 5:7, 5:7] = 1
    protos[2, 1:3, 1:3] = protos[3, 5:7, 1:3] = 1

    def make(n):
        y = torch.arange(4).repeat_interleave(n)
        x = (protos[y] * 0.8 + 0.1 + 0.1 * torch.randn(len(y), 8, 8, generator=g)).clamp(0, 1)
        perm = torch.randperm(len(y), generator=g)
        return x[perm, None], y[perm]

    xtr, ytr = make(n_per_group)
    xte, yte = make(n_per_group // 3)
    return lv.Dataset("two_pairs", xtr, ytr, xte, yte, ("0", "1", "2", "3"))


GROWTH_SEED = 0


def test_growth_splits_into_one_leaf_per_group():
    """Root + 2 leaves, then the two largest leaves split (labels unused): four pure leaves.
    TreeVAE's growth is seed dependent (the paper reports +-7.5 ACC over 10 runs on MNIST);
    on this data seeds 0, 1 and 3 give four pure leaves, seed 2 three (one split collapses
    and its empty leaf is pruned). The seed is fixed; the tree the model picks above the
    leaves (which groups end up siblings) is its own choice and not asserted."""
    data = two_pair_dataset(seed=GROWTH_SEED)
    torch.manual_seed(GROWTH_SEED)
    model = lv.build("treevae", image_shape=data.image_shape, n_classes=4, hidden=16,
                     node_latent_dim=1, max_depth=2, max_leaves=4, min_samples_split=50,
                     epochs_initial=20, epochs_subtree=30, epochs_retrain=0, epochs_final=5,
                     kl_anneal_epochs=30, kl_anneal_epochs_final=5, lr_decay_every=1000,
                     warm_start_decoders=False, decode_min_prob=1e-3)
    cutoff = {}        # stage -> the decoding cut-off in force while it trained
    history = train_model(model, data, lv.TrainConfig(batch_size=32, seed=GROWTH_SEED),
                          lambda p: cutoff.setdefault(p.stage, model._decode_tau()))
    stages = list(dict.fromkeys(history.stages))
    assert stages[0] == "initial" and stages[-1] == "final" and len(stages) == 4, stages
    # Growth stages may skip unlikely leaves; the final fine-tune decodes every leaf.
    assert {s: cutoff[s] for s in stages} == {**{s: 1e-3 for s in stages[:-1]}, "final": 0.0}
    assert [s.split(":")[0] for s in stages[1:3]] == ["split 1", "split 2"], stages
    assert model.n_leaves == 4, f"{model.n_leaves} leaves"
    m = model.extra_metrics(data)
    assert m["lp"] >= 0.95, f"leaf purity {m['lp']:.3f}"
    assert m["dp"] >= 0.95, f"dendrogram purity {m['dp']:.3f}"
    assert m["leaf_acc"] >= 0.95, f"leaf ACC {m['leaf_acc']:.3f}"


# ----------------------------------------------------------------------------- checkpoints

@pytest.fixture(scope="module")
def trained(digits, tmp_path_factory):
    torch.manual_seed(0)
    model = tiny_model("treevae", digits)
    history = train_model(model, digits, lv.TrainConfig(batch_size=64, seed=0))
    path = lv.save(tmp_path_factory.mktemp("tree") / "tree.safetensors", model,
                   dataset="digits", history=history)
    return model, path


def test_tiny_schedule_grows_and_reports_stages(trained):
    model, _ = trained
    stages = list(dict.fromkeys(load_history(trained).stages))
    assert stages[0] == "initial" and stages[-1] == "final" and model.n_leaves >= 3, stages


def test_evaluation_reports_the_tree_metrics_and_its_whole_kl(trained, digits):
    from latentviz.metrics import evaluate_model
    from latentviz.train import evaluate

    model, _ = trained
    m = evaluate_model(model, digits, classifiers=())
    terms = evaluate(model, digits.x_test, digits.y_test)
    assert m["test_kl"] == pytest.approx(terms["kl_nodes"] + terms["kl_decisions"])
    assert {"dp", "lp", "leaf_acc", "leaf_nmi", "n_leaves", "n_leaves_mass"} <= set(m)
    assert all(np.isfinite(v) for v in m.values()), m
    assert m["n_leaves_mass"] == T.leaves_with_mass(T.assign_leaves(model, digits.x_test))
    assert 1 <= m["n_leaves_mass"] <= m["n_leaves"]


def load_history(trained):
    _, path = trained
    return lv.History.from_dict(lv.checkpoints.read_meta(path).meta["history"])


def test_progress_covers_the_whole_schedule_not_each_stage(digits):
    """Every stage restarts its epochs; the fraction a progress bar shows does not."""
    seen = []
    model = tiny_model("treevae", digits)
    train_model(model, digits, lv.TrainConfig(batch_size=64, seed=0),
                lambda p: seen.append((p.stage, p.epoch, p.fraction)))
    stages = list(dict.fromkeys(stage for stage, _, _ in seen))
    assert len(stages) >= 3 and any(e == 1 for s, e, _ in seen if s == stages[-1])
    fractions = [f for _, _, f in seen]
    assert all(b >= a for a, b in zip(fractions, fractions[1:])), "the bar went back"
    assert fractions[-1] == pytest.approx(1.0) and fractions[0] < 0.2


def test_checkpoint_round_trip_gives_the_same_leaves(trained, digits):
    model, path = trained
    again, ckpt = lv.load(path)
    assert ckpt.meta["extra"]["tree"] == model.tree.to_state()
    assert torch.equal(again.predict_cluster(digits.x_test), model.predict_cluster(digits.x_test))
    assert torch.allclose(again.embed(digits.x_test), model.embed(digits.x_test))


def corrupt(path, tmp_path, edit) -> bytes:
    tensors = load_file(path)
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        meta = json.loads(json.loads(f.read(n))["__metadata__"]["latentviz"])
    edit(meta["extra"]["tree"])
    out = tmp_path / "bad.safetensors"
    save_file(tensors, out, metadata={"latentviz": json.dumps(meta)})
    return out


def grow_a_leaf(t):
    leaf, k = t["nodes"][-1], t["next_id"]
    leaf["children"] = [k, k + 1]
    t["nodes"] += [{"id": i, "parent": leaf["id"], "depth": leaf["depth"] + 1, "children": []}
                   for i in (k, k + 1)]
    t["next_id"] = k + 2


@pytest.mark.parametrize("edit", [
    lambda t: t["nodes"][0]["children"].append(999),                 # a child that is not there
    lambda t: t["nodes"].append({"id": 50, "parent": None, "depth": 0, "children": []}),
    lambda t: t["nodes"][-1].update(depth=7),                         # deeper than max_depth
    lambda t: t.update(nodes="root"),
    grow_a_leaf,                                                      # valid, but no weights
], ids=["missing-child", "two-roots", "too-deep", "not-a-list", "weights-missing"])
def test_corrupt_topology_is_a_checkpoint_error(trained, tmp_path, edit):
    _, path = trained
    with pytest.raises(CheckpointError):
        lv.load(corrupt(path, tmp_path, edit))
