"""The tree of a TreeVAE as data, and the hierarchical-clustering metrics over it.

No Streamlit or Plotly here: the app and the report draw from these tables and arrays.

Topology (:class:`Tree`): integer node ids, each node with its parent, children (0 for a
leaf, 2 for a split, 1 for a pass-through node left by pruning) and depth (root 0).
Leaves are ordered left to right (depth first, left child first), so leaf index k of
``model.predict_cluster`` is ``tree.leaves[k]`` and siblings are adjacent.

Metrics (Manduchi et al. 2023, Table 1; the definitions follow Heller & Ghahramani 2005,
Kobren et al. 2017 and the reference code's ``dendrogram_purity`` / ``leaf_purity``),
with every test sample placed at its most probable leaf:

- dendrogram purity over the learned tree, for P* the set of same-class pairs::

      DP = 1/|P*| sum_{(i, j) in P*} purity(lca(i, j), y_i),
      purity(v, c) = n_c(v) / n(v)   (class-c share of the samples under node v)

  computed from class counts per node: the same-class pairs of class c whose lowest
  common ancestor is v number C(n_c(v), 2) - sum_{u child of v} C(n_c(u), 2), so DP costs
  O(nodes x classes), not O(N^2).
- leaf purity, the size-weighted majority share: LP = 1/N sum_leaves max_c n_c(leaf).

The paper's baseline, "VAE + Agg": Ward's agglomerative clustering of a VAE's latent means
(scikit-learn), its merge tree cut to a number of leaves and scored by the same metrics
(:func:`agglomerative_scores`); the report's section 4 and the TreeVAE page use it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np
import torch
from torch import Tensor

TOPOLOGY_VERSION = 1


@dataclass
class TreeNode:
    id: int
    parent: int | None
    depth: int
    children: list[int] = field(default_factory=list)

    @property
    def is_leaf(self) -> bool:
        return not self.children


class Tree:
    """A rooted tree with integer node ids; the growth and pruning operations of TreeVAE."""

    def __init__(self, nodes: Iterable[TreeNode] = ()):
        self.nodes: dict[int, TreeNode] = {}
        for n in nodes:
            self.nodes[n.id] = n
        self.root = next((n.id for n in self.nodes.values() if n.parent is None), 0)
        self.next_id = max(self.nodes, default=-1) + 1

    @classmethod
    def single(cls) -> "Tree":
        return cls([TreeNode(0, None, 0)])

    # -- structure
    def __contains__(self, node_id) -> bool:
        return node_id in self.nodes

    def __len__(self) -> int:
        return len(self.nodes)

    def __getitem__(self, node_id: int) -> TreeNode:
        return self.nodes[node_id]

    def preorder(self, start: int | None = None) -> list[int]:
        """Node ids depth first, left child first: parents before children."""
        out, stack = [], [self.root if start is None else start]
        while stack:
            n = stack.pop()
            out.append(n)
            stack.extend(reversed(self.nodes[n].children))
        return out

    @property
    def leaves(self) -> list[int]:
        """Leaf ids, left to right."""
        return [n for n in self.preorder() if self.nodes[n].is_leaf]

    @property
    def splits(self) -> list[int]:
        """Ids of the nodes with two children (the ones with routers)."""
        return [n for n in self.preorder() if len(self.nodes[n].children) == 2]

    @property
    def depth(self) -> int:
        return max(n.depth for n in self.nodes.values())

    def path(self, node_id: int) -> list[int]:
        """Node ids from the root down to ``node_id``."""
        out = [node_id]
        while self.nodes[out[-1]].parent is not None:
            out.append(self.nodes[out[-1]].parent)
        return out[::-1]

    def subtree(self, node_id: int) -> list[int]:
        return self.preorder(node_id)

    def children_map(self) -> dict[int, list[int]]:
        return {i: list(n.children) for i, n in self.nodes.items()}

    # -- growth and pruning
    def add_children(self, leaf: int) -> tuple[int, int]:
        """Turn leaf ``leaf`` into a split with two new leaves; returns their ids."""
        node = self.nodes[leaf]
        if not node.is_leaf:
            raise ValueError(f"node {leaf} is not a leaf")
        left, right = self.next_id, self.next_id + 1
        self.next_id += 2
        for c in (left, right):
            self.nodes[c] = TreeNode(c, leaf, node.depth + 1)
        node.children = [left, right]
        return left, right

    def remove_leaf(self, leaf: int) -> list[int]:
        """Remove ``leaf``; a parent left with one child becomes a pass-through node, a
        parent left with none is removed too. Returns the ids removed."""
        if not self.nodes[leaf].is_leaf or leaf == self.root:
            raise ValueError(f"node {leaf} is not a removable leaf")
        removed = []
        n = leaf
        while True:
            parent = self.nodes[n].parent
            del self.nodes[n]
            removed.append(n)
            self.nodes[parent].children.remove(n)
            if self.nodes[parent].children or parent == self.root:
                return removed
            n = parent

    # -- serialisation
    def to_state(self) -> dict:
        return {"version": TOPOLOGY_VERSION, "next_id": self.next_id,
                "nodes": [{"id": n.id, "parent": n.parent, "depth": n.depth,
                           "children": list(n.children)} for n in
                          (self.nodes[i] for i in self.preorder())]}

    @classmethod
    def from_state(cls, state: Mapping[str, Any], max_depth: int | None = None) -> "Tree":
        """Rebuild a tree from :meth:`to_state`; ValueError names what is inconsistent."""
        if not isinstance(state, Mapping) or state.get("version") != TOPOLOGY_VERSION:
            raise ValueError(f"tree topology: expected a table with version {TOPOLOGY_VERSION}")
        raw = state.get("nodes")
        if not isinstance(raw, list) or not raw:
            raise ValueError("tree topology: 'nodes' must be a non-empty list")
        nodes: dict[int, TreeNode] = {}
        for r in raw:
            if not isinstance(r, Mapping):
                raise ValueError(f"tree topology: node entry {r!r} is not a table")
            i, parent, depth, children = r.get("id"), r.get("parent"), r.get("depth"), r.get("children")
            if not _is_int(i) or i < 0 or i in nodes:
                raise ValueError(f"tree topology: bad or repeated node id {i!r}")
            if not (parent is None or _is_int(parent)) or not _is_int(depth):
                raise ValueError(f"tree topology: node {i} has a bad parent or depth")
            if (not isinstance(children, list) or len(children) > 2
                    or not all(_is_int(c) for c in children) or len(set(children)) != len(children)):
                raise ValueError(f"tree topology: node {i} must have 0, 1 or 2 distinct children")
            nodes[i] = TreeNode(i, parent, depth, list(children))
        roots = [n for n in nodes.values() if n.parent is None]
        if len(roots) != 1 or roots[0].depth != 0:
            raise ValueError("tree topology: there must be exactly one root, at depth 0")
        for n in nodes.values():
            for c in n.children:
                if c not in nodes or nodes[c].parent != n.id or nodes[c].depth != n.depth + 1:
                    raise ValueError(f"tree topology: child {c} of node {n.id} is missing or "
                                     "does not name it as parent one level down")
            if n.parent is not None and (n.parent not in nodes or n.id not in nodes[n.parent].children):
                raise ValueError(f"tree topology: node {n.id} is not a child of its parent {n.parent}")
            if max_depth is not None and n.depth > max_depth:
                raise ValueError(f"tree topology: node {n.id} at depth {n.depth} is deeper than "
                                 f"max_depth = {max_depth}")
        tree = cls(nodes.values())
        if len(tree.preorder()) != len(nodes):
            raise ValueError("tree topology: some nodes are not reachable from the root")
        next_id = state.get("next_id", tree.next_id)
        if not _is_int(next_id) or next_id <= max(nodes):
            raise ValueError(f"tree topology: next_id {next_id!r} must exceed every node id")
        tree.next_id = next_id
        return tree


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def as_tree(tree) -> Tree:
    """A :class:`Tree` from a Tree, a TreeVAE (its ``.tree``) or a {node: [children]} map."""
    if isinstance(tree, Tree):
        return tree
    if isinstance(getattr(tree, "tree", None), Tree):
        return tree.tree
    if isinstance(tree, Mapping):
        kids = {int(k): [int(c) for c in v] for k, v in tree.items()}
        for c in [c for v in kids.values() for c in v]:
            kids.setdefault(c, [])
        parent = {c: p for p, cs in kids.items() for c in cs}
        roots = [n for n in kids if n not in parent]
        if len(roots) != 1:
            raise ValueError(f"a tree needs exactly one root; found {roots}")
        depth = {roots[0]: 0}
        out, stack = [], [roots[0]]
        while stack:
            n = stack.pop()
            out.append(TreeNode(n, parent.get(n), depth[n], kids[n]))
            for c in kids[n]:
                depth[c] = depth[n] + 1
                stack.append(c)
        return Tree(out)
    raise TypeError(f"expected a Tree, a TreeVAE or a children mapping, not {type(tree).__name__}")


# ----------------------------------------------------------------------------- metrics

def node_class_counts(tree, leaf_ids, y, n_classes: int | None = None
                      ) -> tuple[list[int], np.ndarray]:
    """Class counts of the samples under every node -> (node ids, counts (n_nodes, C)).

    ``leaf_ids`` (N,) holds each sample's leaf node id; rows follow ``tree.preorder()``.
    """
    t = as_tree(tree)
    leaf_ids = np.asarray(leaf_ids, dtype=np.int64)
    y = np.asarray(y, dtype=np.int64)
    if leaf_ids.shape != y.shape:
        raise ValueError(f"leaf ids {leaf_ids.shape} and labels {y.shape} differ in shape")
    order = t.preorder()
    row = {n: k for k, n in enumerate(order)}
    unknown = set(np.unique(leaf_ids).tolist()) - set(t.leaves)
    if unknown:
        raise ValueError(f"samples assigned to nodes that are not leaves: {sorted(unknown)}")
    n_classes = int(n_classes if n_classes is not None else (y.max() + 1 if y.size else 0))
    counts = np.zeros((len(order), n_classes), dtype=np.int64)
    if y.size:
        rows = np.fromiter((row[i] for i in leaf_ids.tolist()), np.int64, len(leaf_ids))
        np.add.at(counts, (rows, y), 1)
    for n in reversed(order):  # children before parents
        for c in t[n].children:
            counts[row[n]] += counts[row[c]]
    return order, counts


def _comb2(a: np.ndarray) -> np.ndarray:
    return a * (a - 1) // 2


def dendrogram_purity(tree, leaf_ids, y) -> float:
    """Dendrogram purity of the samples placed at leaves ``leaf_ids`` (see module doc).

    DP = sum_v sum_c [C(n_c(v), 2) - sum_{u in ch(v)} C(n_c(u), 2)] * n_c(v) / n(v)
         / sum_c C(N_c, 2);    NaN when no two samples share a class.
    """
    t = as_tree(tree)
    order, counts = node_class_counts(t, leaf_ids, y)
    row = {n: k for k, n in enumerate(order)}
    pairs = _comb2(counts)                                     # (V, C) same-class pairs under v
    for n in order:
        for c in t[n].children:
            pairs[row[n]] -= _comb2(counts[row[c]])            # -> pairs whose LCA is v
    size = counts.sum(axis=1, keepdims=True)                   # (V, 1)
    purity = np.divide(counts, size, out=np.zeros(counts.shape), where=size > 0)
    total = _comb2(counts[row[t.root]]).sum()
    return float((pairs * purity).sum() / total) if total > 0 else float("nan")


def leaf_purity(tree, leaf_ids, y) -> float:
    """LP = 1/N sum_leaves max_c n_c(leaf): the size-weighted majority share of the leaves."""
    t = as_tree(tree)
    order, counts = node_class_counts(t, leaf_ids, y)
    leaf_rows = [k for k, n in enumerate(order) if t[n].is_leaf]
    n = counts[leaf_rows].sum()
    return float(counts[leaf_rows].max(axis=1).sum() / n) if n else float("nan")


# ----------------------------------------------------------------------------- agglomerative baseline
# The TreeVAE paper's "VAE + Agg" (Table 1): Ward linkage on a VAE's latent means, its merge
# tree cut to the TreeVAE's number of leaves, scored by the same DP / LP / ACC / NMI.

def ward_children(z: np.ndarray) -> np.ndarray:
    """The full Ward merge tree of z (N, D), as scikit-learn's ``children_`` (N - 1, 2):
    merge i joins the two nodes in row i into node N + i (ids < N are the samples)."""
    from sklearn.cluster import AgglomerativeClustering

    agg = AgglomerativeClustering(n_clusters=1, linkage="ward", compute_full_tree=True)
    return agg.fit(np.asarray(z, np.float64)).children_.astype(np.int64)


def cut_merge_tree(children: np.ndarray, n_leaves: int | None = None
                   ) -> tuple[dict[int, list[int]], np.ndarray]:
    """The merge tree kept to its top ``n_leaves - 1`` merges (all of them when None).

    Returns ``({node: [left, right]}, leaf of each sample (N,))``: the form
    :func:`dendrogram_purity` reads. As in the TreeVAE reference's
    ``prune_dendrogram_purity_tree``, the cut keeps the last merges, which are the highest
    ones for Ward linkage (its merge heights never decrease).
    """
    children = np.asarray(children, np.int64)
    n = len(children) + 1
    k = n if n_leaves is None else int(n_leaves)
    if not 1 <= k <= n:
        raise ValueError(f"n_leaves must be between 1 and the number of samples ({n}), not {k}")
    first_kept = 2 * n - k                     # nodes with id >= this are kept merges
    parent = np.full(2 * n - 1, -1, np.int64)
    parent[children.ravel()] = np.repeat(np.arange(n, 2 * n - 1), 2)
    if k == 1:
        return {2 * n - 2: []}, np.full(n, 2 * n - 2, np.int64)
    is_leaf = np.zeros(2 * n - 1, bool)
    is_leaf[:first_kept] = parent[:first_kept] >= first_kept
    # Every sample climbs to its kept leaf; ids grow along a path, so the climb is a few
    # vectorised steps per level of the discarded part of the tree.
    leaf = np.arange(n)
    todo = ~is_leaf[leaf]
    while todo.any():
        leaf[todo] = parent[leaf[todo]]
        todo = ~is_leaf[leaf]
    tree = {int(n + i): [int(a), int(b)] for i, (a, b) in enumerate(children) if n + i >= first_kept}
    return tree, leaf


def agglomerative_scores(z: np.ndarray, y: np.ndarray, leaves: tuple[int, ...] = (10, 20),
                         children: np.ndarray | None = None, full_tree: bool = True
                         ) -> dict[int, dict[str, float]]:
    """DP, LP, ACC, NMI, ARI of Ward clustering of z cut to each number of leaves; the key
    None holds the DP of the full dendrogram (every sample its own leaf) unless
    ``full_tree`` is False."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    from .metrics import cluster_acc

    y = np.asarray(y, np.int64)
    children = ward_children(z) if children is None else children
    out: dict = {}
    for k in leaves:
        tree, leaf = cut_merge_tree(children, k)
        out[k] = {"dp": dendrogram_purity(tree, leaf, y), "lp": leaf_purity(tree, leaf, y),
                  "acc": cluster_acc(y, leaf), "nmi": float(normalized_mutual_info_score(y, leaf)),
                  "ari": float(adjusted_rand_score(y, leaf))}
    if full_tree:
        tree, leaf = cut_merge_tree(children, None)
        out[None] = {"dp": dendrogram_purity(tree, leaf, y)}
    return out


# ----------------------------------------------------------------------------- leaf counts

#: A leaf is counted as holding images when at least this share of them is placed there.
MASS_FRACTION = 0.01


def leaves_with_mass(leaf_ids, n_leaves: int | None = None,
                     fraction: float = MASS_FRACTION) -> int:
    """How many leaves hold at least ``fraction`` of the samples, each sample at its leaf
    ``leaf_ids`` (N,) (node ids or leaf indices). A grown tree can keep leaves that almost
    nothing reaches: the grown count alone overstates the clusters it shows."""
    ids = np.asarray(leaf_ids).ravel()
    if ids.size == 0:
        return 0
    _, counts = np.unique(ids, return_counts=True)
    return int((counts >= fraction * ids.size).sum())


def leaf_count_text(table: list[dict], fraction: float = MASS_FRACTION) -> str:
    """'10 leaves, 8 with at least 1% of the images' from a :func:`tree_table`."""
    sizes = [n["n_samples"] for n in table if n["is_leaf"]]
    total = sum(sizes)
    held = sum(s >= fraction * total for s in sizes) if total else 0
    return f"{len(sizes)} leaves, {held} with at least {fraction:.0%} of the images"


# ----------------------------------------------------------------------------- model views

def assign_leaves(model, x: Tensor, batch_size: int = 4096) -> np.ndarray:
    """Each sample's most probable leaf under the inference routers, as a node id -> (N,)."""
    idx = model.predict_cluster_batched(x, batch_size).numpy()
    return np.asarray(model.tree.leaves, dtype=np.int64)[idx]


def node_mask(model, x: Tensor, node_id: int, batch_size: int = 4096) -> np.ndarray:
    """Which samples' hard path (root to most probable leaf) passes through ``node_id``."""
    leaves = set(model.tree.subtree(node_id)) & set(model.tree.leaves)
    return np.isin(assign_leaves(model, x, batch_size), sorted(leaves))


def tree_table(model, x: Tensor, y=None, n_classes: int | None = None,
               batch_size: int = 4096) -> list[dict]:
    """One row per node (preorder): id, parent, children, depth, is_leaf, n_samples (hard
    routed), class_counts (of length n_classes), mean_path_prob (mean of P(node | x))."""
    t = model.tree
    leaves = assign_leaves(model, x, batch_size)
    n_classes = int(n_classes if n_classes is not None else model.config.n_classes)
    labels = np.zeros(len(leaves), np.int64) if y is None else np.asarray(
        y.cpu() if torch.is_tensor(y) else y, np.int64)
    order, counts = node_class_counts(t, leaves, labels, n_classes)
    if y is None:
        sizes, counts = counts.sum(axis=1), np.zeros_like(counts)
    else:
        sizes = counts.sum(axis=1)
    probs = model.node_probs_batched(x, batch_size).mean(dim=0)  # (V,) in model.node_order
    col = {n: k for k, n in enumerate(model.node_order)}
    return [{"id": n, "parent": t[n].parent, "children": list(t[n].children), "depth": t[n].depth,
             "is_leaf": t[n].is_leaf, "n_samples": int(sizes[k]),
             "class_counts": counts[k].tolist(), "mean_path_prob": float(probs[col[n]])}
            for k, n in enumerate(order)]


def sample_nodes(model, n_per_node: int, seed: int = 0) -> dict[int, Tensor]:
    """Generated images in [0, 1], (n, C, H, W), for every node: z is drawn from the prior
    down the path to the node, then on down the generative routers to a leaf."""
    g = torch.Generator().manual_seed(seed)
    return {n: model.generate(n_per_node, node=n, generator=g)[0].cpu()
            for n in model.tree.preorder()}


def reconstruct_leaves(model, x: Tensor) -> Tensor:
    """Every leaf's reconstruction of every sample -> (n_leaves, B, C, H, W) in [0, 1]."""
    return model.reconstruct_leaves(x)


__all__ = ["Tree", "TreeNode", "as_tree", "node_class_counts", "dendrogram_purity",
           "leaf_purity", "leaves_with_mass", "leaf_count_text", "assign_leaves", "node_mask", "tree_table", "sample_nodes",
           "reconstruct_leaves", "ward_children", "cut_merge_tree", "agglomerative_scores"]
