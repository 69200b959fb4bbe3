"""TreeVAE: Tree Variational Autoencoders (Manduchi, Vandenhirtz, Ryser, Vogt, NeurIPS 2023,
arXiv 2306.08984), for grey-level images.

A binary tree of 8-d latents; a sample goes down the tree by soft decisions and is decoded
by the decoder of the leaf it reaches. Per image, the negative ELBO (sec. 2.4), minimised::

    L(x) = sum_l P(l|x) BCE(x, dec_l(z_l))                               recon
         + alpha * [ KL(q(z_0|x) || N(0, I))
                   + sum_{i != 0} P(i|x) KL(q(z_i|z_pa(i), x) || p(z_i|z_pa(i))) ]  kl_nodes
         + alpha * sum_{i split} P(i|x) KL(Ber(r_q,i(d)) || Ber(r_p,i(z_i)))         kl_decisions

with P(i|x) the product of the inference routers' probabilities on the root-to-i path and
alpha the KL-annealing weight. The pieces:

- generative model (sec. 2.2): z_0 ~ N(0, I); z_i ~ p(z_i|z_pa) = N(mu_p(z_pa), sigma2_p(z_pa))
  through a per-node "transformation"; at a split the generative router r_p(z_i) is the
  probability of going left; leaf l decodes x ~ Bernoulli(sigmoid(dec_l(z_l))).
- inference (sec. 2.3, LadderVAE-style, Sonderby et al. 2016): a deterministic bottom-up
  pass d_H = enc(x), d_h = MLP_h(d_{h+1}) for h = H-1..0 (H = max_depth; a node at depth h
  reads d_h, so the root reads the most abstract feature); each node's bottom-up estimate
  N(mu_hat(d_h), sigma2_hat(d_h)) is combined with its prior by precision weighting; the
  inference router r_q(d_h) gives the decision probabilities P.
- growth (sec. 2.5): root + 2 leaves; then repeatedly split the leaf with most samples,
  train the new subtree alone on its samples, retrain all every few splits; prune leaves
  under 1% of the samples; fine-tune all. See :func:`tree_growth.fit_schedule`.

This module holds the model; ``tree_vae_config`` the schedules and the config,
``tree_vae_nets`` the networks, the per-node math and their stacked evaluation,
``tree_growth`` the growth schedule (all re-exported here where the rest of latentviz
imports them).

What the app sees (choices of this implementation, not of the paper):

- ``encode(x)``/``embed(x)``: the posterior means of the nodes on the hard path (root to
  the most probable leaf), node at depth h in slot h, concatenated and zero padded to
  (max_depth + 1) * node_latent_dim = ``config.latent_dim`` (48 by default). Computed along
  the mean path (each child's posterior conditioned on its parent's mean), so it is
  deterministic. Padding slots have mu = 0, logvar = 0.
- ``decode(z)``: descend from slot 0 down the generative routers (greedy, r_p >= 1/2 goes
  left) reading slot h at depth h, and decode with the leaf reached; ``decode(z, y)``
  decodes with leaf index y instead. ``reconstruct(x)`` uses the inference path.
- images that are not 28x28 (digits, 8x8) use an MLP bottom-up encoder and MLP leaf
  decoders (``backbone = "auto"``); 28x28 images use the reference's small CNNs.

Deviations from the reference code, and the measured MNIST results: docs/TREEVAE.md.
"""
from __future__ import annotations

import contextlib
import logging

import torch
from torch import Tensor, nn

from ..tree import Tree
from . import tree_growth
from .base import LatentModel, LossOutput, Posterior, Variant, recon_nll
from .tree_vae_config import REFERENCE_TRAIN, SCHEDULES, TreeVAEConfig  # noqa: F401
from .tree_vae_nets import (KL_MAX, LEAK, NEGLIGIBLE_P, VAR_EPS, ConvDecoder,  # noqa: F401
                            ConvEncoder, GaussianHead, MLPDecoder, MLPEncoder, NodeOut, Router,
                            Transformation, _dense_block, kl_bernoulli, kl_gauss,
                            precision_weighted, stacked_gaussian, stacked_router,
                            stacked_transform)

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- the model

class TreeVAE(LatentModel):
    """TreeVAE; the tree's topology lives in ``self.tree`` and in the checkpoint's JSON."""

    Config = TreeVAEConfig

    def __init__(self, config: TreeVAEConfig):
        super().__init__(config)
        c = config
        self.z_dim = c.node_latent_dim
        if c.resolved_backbone == "conv":
            self.encoder = ConvEncoder(c.image_shape, c.conv_channels)
        else:
            self.encoder = MLPEncoder(c.image_shape, c.hidden)
        # feat[h]: width of the bottom-up feature a node at depth h reads.
        self.feat = [c.hidden] * c.max_depth + [self.encoder.out_dim]
        self.bottom_up = nn.ModuleList(  # bottom_up[h]: d_{h+1} -> d_h
            [_dense_block(self.feat[h + 1], c.hidden) for h in range(c.max_depth)])
        self.dense = nn.ModuleDict()       # every node: bottom-up estimate
        self.transform = nn.ModuleDict()   # every non-root node: p(z_i | z_pa)
        self.router_q = nn.ModuleDict()    # splits: inference router on d
        self.router_p = nn.ModuleDict()    # splits: generative router on z_i
        self.decoder = nn.ModuleDict()     # leaves
        self._focus: int | None = None     # node whose new subtree is being trained
        self._anneal: int | None = None    # None: alpha = 1 (outside the schedule)
        self._stage_epoch = 0
        self._stage_opt: torch.optim.Optimizer | None = None  # the stage's Adam
        self._exact = False                # the final fine-tune: decode every leaf
        # Where a growth schedule stands between two stages (None outside fit_schedule);
        # saved with the tree so a killed run resumes at its last finished stage.
        self.schedule_state: dict | None = None
        # Evaluate the nodes' networks together (_top_down_stacked); False: one node at a
        # time, the reference the stacked pass is tested and benchmarked against.
        self.stacked = True
        self._build(_initial_tree())

    # -- topology and modules
    def _new_node_modules(self, n: int) -> None:
        depth = self.tree[n].depth
        dev = self._dev()
        self.dense[str(n)] = GaussianHead(self.feat[depth], self.z_dim).to(dev)
        if self.tree[n].parent is not None:
            self.transform[str(n)] = Transformation(self.z_dim, self.config.hidden).to(dev)

    def _new_router(self, n: int) -> None:
        dev = self._dev()
        self.router_q[str(n)] = Router(self.feat[self.tree[n].depth], self.config.hidden).to(dev)
        self.router_p[str(n)] = Router(self.z_dim, self.config.hidden).to(dev)

    def _new_decoder(self, n: int) -> None:
        c = self.config
        dec = (ConvDecoder(c.image_shape, c.conv_channels, self.z_dim)
               if c.resolved_backbone == "conv" else MLPDecoder(c.image_shape, c.hidden, self.z_dim))
        self.decoder[str(n)] = dec.to(self._dev())

    def _dev(self) -> torch.device:
        return next(self.encoder.parameters()).device

    def _build(self, tree: Tree) -> None:
        """(Re)create every node's modules for ``tree`` (fresh weights)."""
        for md in (self.dense, self.transform, self.router_q, self.router_p, self.decoder):
            md.clear()
        self.tree = tree
        for n in tree.preorder():
            self._new_node_modules(n)
            if len(tree[n].children) == 2:
                self._new_router(n)
            elif tree[n].is_leaf:
                self._new_decoder(n)
        self._topology_changed()

    def _topology_changed(self) -> None:
        self.node_order = self.tree.preorder()
        self.leaf_order = self.tree.leaves

    def split_leaf(self, leaf: int) -> tuple[int, int]:
        """Attach two children to ``leaf`` (sec. 2.5): a new router pair at ``leaf``, new
        nodes with fresh decoders; the leaf's own decoder is discarded."""
        if self.tree[leaf].depth >= self.config.max_depth:
            raise ValueError(f"leaf {leaf} is at max_depth = {self.config.max_depth}")
        left, right = self.tree.add_children(leaf)
        old = self.decoder.pop(str(leaf))
        self._new_router(leaf)
        for c in (left, right):
            self._new_node_modules(c)
            self._new_decoder(c)
            if self.config.warm_start_decoders:
                self.decoder[str(c)].load_state_dict(old.state_dict())
        self._topology_changed()
        return left, right

    def remove_leaf(self, leaf: int) -> None:
        """Prune ``leaf``: its parent becomes a pass-through node (no routers) or, left
        with no child, goes too."""
        if len(self.tree.leaves) <= 1:
            raise ValueError("cannot remove the last leaf")
        for n in self.tree.remove_leaf(leaf):
            for md in (self.dense, self.transform, self.router_q, self.router_p, self.decoder):
                if str(n) in md:
                    del md[str(n)]
        for n in self.tree.preorder():  # a split left with one child passes through
            if len(self.tree[n].children) == 1 and str(n) in self.router_q:
                del self.router_q[str(n)], self.router_p[str(n)]
        self._topology_changed()

    def extra_state(self) -> dict:
        """The topology (JSON): rebuilds the exact tree with :meth:`load_extra_state`; in a
        growth schedule's partial checkpoint also where the schedule stands."""
        state = {"tree": self.tree.to_state()}
        if self.schedule_state is not None:
            state["schedule"] = self.schedule_state
        return state

    def load_extra_state(self, state: dict) -> None:
        """Rebuild the modules of the saved topology (weights come after, by name)."""
        if not state:
            return
        if "tree" not in state:
            raise ValueError("TreeVAE checkpoint has no 'tree' in its extra state")
        schedule = state.get("schedule")
        if schedule is not None:
            tree_growth.check_schedule_state(schedule)
        tree = Tree.from_state(state["tree"], self.config.max_depth)
        focus = ((schedule or {}).get("stage") or {}).get("focus")
        if focus is not None and (focus not in tree or len(tree[focus].children) != 2):
            raise ValueError(f"its saved growth stage trains below node {focus}, which is not "
                             "a split of its tree")
        self._build(tree)
        self.to(self._dev())
        self.schedule_state = schedule

    @property
    def n_leaves(self) -> int:
        return len(self.leaf_order)

    # -- training-state plumbing used by the schedule
    def train(self, mode: bool = True):
        """As nn.Module.train, but while a subtree trains the frozen rest stays in eval
        mode (its batch-norm statistics are not updated), as in the reference."""
        super().train(mode)
        if mode and self._focus is not None:
            keep = self._subtree_modules(self._focus)
            for m in self.children():
                if isinstance(m, nn.ModuleDict):
                    for sub in m.values():
                        if sub not in keep:
                            sub.eval()
                else:
                    m.eval()
        return self

    def _subtree_modules(self, focus: int) -> list[nn.Module]:
        mods = [self.router_q[str(focus)], self.router_p[str(focus)]]
        for n in self.tree.subtree(focus)[1:]:
            for md in (self.dense, self.transform, self.router_q, self.router_p, self.decoder):
                if str(n) in md:
                    mods.append(md[str(n)])
        return mods

    def subtree_parameters(self, focus: int) -> list[nn.Parameter]:
        """The parameters of the subtree below split ``focus`` (its routers included)."""
        return [p for m in self._subtree_modules(focus) for p in m.parameters()]

    @property
    def kl_weight(self) -> float:
        """alpha = min(1, kl_start + (epoch + 1) / anneal_epochs), epoch counted from the
        start of the stage (reference ``AnnealKLCallback``); 1 outside the schedule."""
        if not self._anneal:
            return 1.0
        return min(1.0, self.config.kl_start + (self._stage_epoch + 1) / self._anneal)

    def on_epoch_end(self, data) -> None:
        """Advance the stage's KL annealing and its StepLR (lr *= lr_decay every
        ``lr_decay_every`` epochs of a stage; the reference's StepLR(100, 0.1))."""
        self._stage_epoch += 1
        if self._stage_opt is not None and self._stage_epoch % self.config.lr_decay_every == 0:
            for g in self._stage_opt.param_groups:
                g["lr"] *= self.config.lr_decay

    # -- inference
    def _bottom_up(self, x: Tensor) -> list[Tensor]:
        """d_H = enc(x), d_h = MLP_h(d_{h+1}): the feature each depth reads -> [(B, F)]."""
        d = [None] * (self.config.max_depth + 1)
        d[-1] = self.encoder(x)
        for h in range(self.config.max_depth - 1, -1, -1):
            d[h] = self.bottom_up[h](d[h + 1])
        return d

    def _latent(self, n: int, d: list[Tensor], z_parent: Tensor | None, sample: bool
                ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """q(z_n | z_pa, x) (precision weighted; the root's is the bottom-up estimate), a
        sample (or the mean) and KL(q || p(z_n | z_pa)) -> mu, var, z, kl."""
        mu_hat, var_hat = self.dense[str(n)](d[self.tree[n].depth])  # (B, Z)
        if z_parent is None:
            mu, var = mu_hat, var_hat
            kl = kl_gauss(mu, var)                                     # vs N(0, I)
        else:
            mu_p, var_p = self.transform[str(n)](z_parent)
            mu, var = precision_weighted(mu_hat, var_hat, mu_p, var_p)
            kl = kl_gauss(mu, var, mu_p, var_p)
        z = mu + var.sqrt() * torch.randn_like(mu) if sample else mu
        return mu, var, z, kl.clamp(max=KL_MAX)

    def _decision(self, n: int, d: list[Tensor], z: Tensor) -> tuple[Tensor, Tensor]:
        """r_q(d) = P(left | x) and KL(Ber(r_q) || Ber(r_p(z_n))) -> (B,), (B,)."""
        r_q = self.router_q[str(n)](d[self.tree[n].depth])
        r_p = self.router_p[str(n)](z)
        return r_q, kl_bernoulli(r_q, r_p)

    def _top_down(self, d: list[Tensor], sample: bool, focus: int | None = None
                  ) -> tuple[dict[int, Tensor], dict[int, NodeOut]]:
        """Every node's path probability P(i|x) (B,) and NodeOut, root first.

        With ``focus``, the path root..focus runs without gradients (frozen) and only the
        subtree below focus is computed with them (subtree training, sec. 2.5).
        """
        t = self.tree
        P = {t.root: torch.ones(d[0].shape[0], device=d[0].device)}
        out: dict[int, NodeOut] = {}

        def visit(n: int, with_decision: bool = True) -> None:
            pa = t[n].parent
            if n not in out:
                mu, var, z, kl = self._latent(n, d, out[pa].z if pa is not None else None,
                                              sample)
                out[n] = NodeOut(mu, var, z, kl, None, None)
            kids = t[n].children
            if len(kids) == 2 and with_decision:
                r_q, kl_dec = self._decision(n, d, out[n].z)
                out[n] = out[n]._replace(r_q=r_q, kl_dec=kl_dec)
                P[kids[0]], P[kids[1]] = P[n] * r_q, P[n] * (1 - r_q)
            elif len(kids) == 1:
                P[kids[0]] = P[n]

        start = t.root
        if focus is not None:
            path = t.path(focus)
            with torch.no_grad():
                for k, n in enumerate(path[:-1]):
                    visit(n, with_decision=False)
                    kids = t[n].children
                    if len(kids) == 2:
                        r_q = self.router_q[str(n)](d[t[n].depth])
                        P[path[k + 1]] = P[n] * (r_q if path[k + 1] == kids[0] else 1 - r_q)
                    else:
                        P[path[k + 1]] = P[n]
                visit(focus, with_decision=False)
            start = focus
        for n in t.preorder(start):
            visit(n)
        return P, out

    def _top_down_stacked(self, d: list[Tensor], sample: bool
                          ) -> tuple[dict[int, Tensor], dict[int, NodeOut]]:
        """What :meth:`_top_down` computes for the whole tree, with the nodes' networks
        evaluated together: the bottom-up heads and transformations of each depth as one
        batched product, every split's routers as another (``tree_vae_nets.run_stacked``).
        The same function up to float rounding, and the same random numbers: the noise of
        every node is drawn at once, in preorder, as the per-node pass draws it."""
        t, order = self.tree, self.node_order
        B = d[0].shape[0]
        eps = (torch.randn(len(order), B, self.z_dim, device=d[0].device, dtype=d[0].dtype)
               if sample else None)                                   # (V, B, Z) in preorder
        row = {n: k for k, n in enumerate(order)}
        out: dict[int, NodeOut] = {}
        for h in range(t.depth + 1):
            nodes = [n for n in order if t[n].depth == h]             # (G,) at depth h
            G = len(nodes)
            mu_hat, var_hat = stacked_gaussian([self.dense[str(n)] for n in nodes],
                                               d[h].expand(G, *d[h].shape))   # (G, B, Z)
            if h == 0:
                mu, var = mu_hat, var_hat
                kl = kl_gauss(mu, var)                                # vs N(0, I)
            else:
                z_pa = torch.stack([out[t[n].parent].z for n in nodes])
                mu_p, var_p = stacked_transform([self.transform[str(n)] for n in nodes], z_pa)
                mu, var = precision_weighted(mu_hat, var_hat, mu_p, var_p)
                kl = kl_gauss(mu, var, mu_p, var_p)                   # (G, B)
            z = mu + var.sqrt() * eps[[row[n] for n in nodes]] if sample else mu
            kl = kl.clamp(max=KL_MAX)
            for k, n in enumerate(nodes):
                out[n] = NodeOut(mu[k], var[k], z[k], kl[k], None, None)
        splits = t.splits
        if splits:
            r_q = self._routers_q(d, splits)                          # (S, B)
            r_p = stacked_router([self.router_p[str(n)] for n in splits],
                                 torch.stack([out[n].z for n in splits]))
            kl_dec = kl_bernoulli(r_q, r_p)
            for k, n in enumerate(splits):
                out[n] = out[n]._replace(r_q=r_q[k], kl_dec=kl_dec[k])
        return self._path_probs({n: out[n].r_q for n in splits}, B, d[0].device), out

    def _routers_q(self, d: list[Tensor], splits: list[int]) -> Tensor:
        """r_q(d) = P(left | x) of the given splits, evaluated together -> (S, B)."""
        t = self.tree
        r_q = [None] * len(splits)
        groups: dict[int, list[int]] = {}  # by the width of the feature the router reads
        for k, n in enumerate(splits):
            groups.setdefault(self.feat[t[n].depth], []).append(k)
        for ks in groups.values():
            r = stacked_router([self.router_q[str(splits[k])] for k in ks],
                               torch.stack([d[t[splits[k]].depth] for k in ks]))
            for j, k in enumerate(ks):
                r_q[k] = r[j]
        return torch.stack(r_q)

    def _path_probs(self, r_q: dict[int, Tensor], B: int, device) -> dict[int, Tensor]:
        """P(i|x): the product of the routers' probabilities on the root-to-i path."""
        t = self.tree
        P = {t.root: torch.ones(B, device=device)}
        for n in self.node_order:
            kids = t[n].children
            if len(kids) == 2:
                P[kids[0]], P[kids[1]] = P[n] * r_q[n], P[n] * (1 - r_q[n])
            elif len(kids) == 1:
                P[kids[0]] = P[n]
        return P

    def _infer(self, x: Tensor, sample: bool, focus: int | None = None):
        if focus is not None:
            with torch.no_grad():
                d = self._bottom_up(x)
            return self._top_down(d, sample, focus)
        d = self._bottom_up(x)
        if self.stacked:
            return self._top_down_stacked(d, sample)
        return self._top_down(d, sample)

    def loss(self, x: Tensor, y: Tensor | None = None) -> LossOutput:
        """The negative ELBO of the module docstring (y is ignored: unsupervised).

        Terms are batch means: recon = sum_l P(l|x) BCE_l; kl_nodes = KL(q(z_0|x)||N(0,I))
        + sum_i P(i|x) KL_i; kl_decisions = sum_splits P(i|x) KL(Ber(r_q)||Ber(r_p)).
        total = recon + alpha * (kl_nodes + kl_decisions). While a subtree trains (sec.
        2.5) only the terms of its nodes are counted; the rest is constant.
        """
        focus = self._focus
        P, out = self._infer(x, sample=True, focus=focus)
        scope = self.tree.preorder(focus) if focus is not None else self.node_order
        zero = x.new_zeros(x.shape[0])
        recon, kl_nodes, kl_dec, mass, kept = zero, zero, zero, zero, zero
        for n in scope:
            o = out[n]
            if n != focus:
                kl_nodes = kl_nodes + P[n] * o.kl
            if o.kl_dec is not None:
                kl_dec = kl_dec + P[n] * o.kl_dec
            if self.tree[n].is_leaf:
                bce, keep = self._leaf_recon(n, o.z, x, P[n])
                recon = recon + P[n] * bce
                mass, kept = mass + P[n], kept + P[n] * keep
        if self._decode_tau() > 0:
            # Leaves left undecoded would look free (their term is 0) and draw probability
            # mass; spreading their mass over the decoded leaves keeps the routers neutral.
            recon = recon * torch.where(kept > 0, mass / kept.clamp_min(1e-12), 0.0)
        terms = {"recon": recon.mean(), "kl_nodes": kl_nodes.mean(),
                 "kl_decisions": kl_dec.mean()}
        total = terms["recon"] + self.kl_weight * (terms["kl_nodes"] + terms["kl_decisions"])
        return LossOutput(total, terms)

    def _decode_tau(self) -> float:
        """The decoding cut-off in force: ``decode_min_prob`` while growing, 0 (exact) in
        evaluation and in the final fine-tune. There a cut-off leaf could never win its
        samples back (its decoder gets no gradient, and the rescaling below leaves the
        routers indifferent to it), so the rich-get-richer pull of soft routing empties
        one leaf of a sibling pair: on MNIST (seed 42, 20k images, 10 + 5-epoch growth)
        5 of 10 leaves ended empty and leaf purity fell from 52% to 45%; exact, it rose to
        62% (docs/TREEVAE.md)."""
        return 0.0 if (self._exact or not self.training) else self.config.decode_min_prob

    def _leaf_recon(self, n: int, z: Tensor, x: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
        """-log p(x | dec_n(z)) per sample (BCE, or the squared error for likelihood
        gaussian) and which samples were decoded -> (B,), (B,).

        In training with decode_min_prob = tau > 0 the samples with P(n|x) < tau are not
        decoded at leaf n, a truncation of the sum over leaves that saves most decoder
        work once the routers are sure; :meth:`loss` then reads the recon term as
        sum_{decoded} P_l BCE_l * sum_l P_l / sum_{decoded} P_l.
        """
        dec = self.decoder[str(n)]
        tau = self._decode_tau()
        if tau <= 0:
            return self._exact_recon(dec, z, x, p), torch.ones_like(p)
        keep = p.detach() >= tau                                    # (B,)
        if int(keep.sum()) < 2:  # batch norm needs two rows: decode the two most likely
            keep[p.detach().topk(min(2, len(p))).indices] = True
        idx = keep.nonzero()[:, 0]
        bce = x.new_zeros(x.shape[0]).index_put((idx,), recon_nll(dec(z[idx]), x[idx],
                                                                       self.config.likelihood))
        return bce, keep.to(p.dtype)

    def _exact_recon(self, dec, z: Tensor, x: Tensor, p: Tensor) -> Tensor:
        """Exact decoding (every sample at every leaf), its last layer skipped on the CPU
        for the samples with P(n|x) < ``NEGLIGIBLE_P`` (1e-20), whose BCE is taken as 0.

        Their term P_n BCE_n in the loss, and every gradient through it (to the decoder,
        to z, to the routers, whose derivative of P_n is P_n times a factor at most 1), is
        below 1e-20 * BCE per sample, far under float32's resolution of the terms kept
        and, as a gradient, under Adam's epsilon (1e-8) by ten orders of magnitude. The
        layers with batch norm still see every sample, so the batch statistics, and with
        them the other samples' outputs, are exactly those of full decoding. A trained
        tree is that sure of most (sample, leaf) pairs (the reference run's 5-leaf tree:
        135-193 of 256 images per leaf under 1e-30), and the last transposed convolution
        is about half of a decoder's cost. On a GPU every leaf decodes everything: there
        the row selection's host synchronisation would cost more than it saves.
        """
        lik = self.config.likelihood
        h = dec.body(z)
        if z.device.type != "cpu":
            return recon_nll(dec.last(h), x, lik)
        rows = (p.detach() >= NEGLIGIBLE_P).nonzero()[:, 0]
        if len(rows) == len(p):
            return recon_nll(dec.last(h), x, lik)
        return x.new_zeros(x.shape[0]).index_put((rows,), recon_nll(dec.last(h[rows]), x[rows],
                                                                    lik))

    # -- routing
    @torch.no_grad()
    def node_probs(self, x: Tensor) -> Tensor:
        """P(i|x) under the inference routers for every node -> (B, V), columns in
        ``node_order`` (deterministic in eval mode: the routers read only d)."""
        t = self.tree
        d = self._bottom_up(x)
        splits = t.splits
        if not splits:
            r_q = {}
        elif self.stacked:
            r_q = dict(zip(splits, self._routers_q(d, splits)))
        else:
            r_q = {n: self.router_q[str(n)](d[t[n].depth]) for n in splits}
        P = self._path_probs(r_q, x.shape[0], x.device)
        return torch.stack([P[n] for n in self.node_order], dim=1)

    def leaf_probs(self, x: Tensor) -> Tensor:
        """P(leaf|x) -> (B, L), columns in leaf order (sums to 1 over leaves)."""
        col = {n: k for k, n in enumerate(self.node_order)}
        return self.node_probs(x)[:, [col[n] for n in self.leaf_order]]

    @torch.no_grad()
    def predict_cluster(self, x: Tensor) -> Tensor:
        """Index 0..n_leaves-1 of each sample's most probable leaf (hard path) -> (B,)."""
        with _eval(self):
            return self.leaf_probs(x).argmax(dim=1)

    def predict_cluster_batched(self, x: Tensor, batch_size: int = 4096) -> Tensor:
        with _eval(self):
            return _batched(self.predict_cluster, x, batch_size, self._dev()).long()

    def node_probs_batched(self, x: Tensor, batch_size: int = 4096) -> Tensor:
        with _eval(self):
            return _batched(self.node_probs, x, batch_size, self._dev())

    # -- the LatentModel contract
    @torch.no_grad()
    def encode(self, x: Tensor, y: Tensor | None = None) -> Posterior:
        """Posterior along the hard path, slot h = the path's node at depth h, along the
        mean path (z_pa := mu_pa); unused slots are mu = 0, logvar = 0 -> (B, D)."""
        with _eval(self):
            P, out = self._infer(x, sample=False)
            leaf = torch.stack([P[n] for n in self.leaf_order], 1).argmax(1)  # (B,)
            B, Z = x.shape[0], self.z_dim
            mu = x.new_zeros(B, self.config.max_depth + 1, Z)
            logvar = x.new_zeros(B, self.config.max_depth + 1, Z)
            for k, l in enumerate(self.leaf_order):
                m = leaf == k
                if not m.any():
                    continue
                for n in self.tree.path(l):
                    h = self.tree[n].depth
                    mu[m, h] = out[n].mu[m]
                    logvar[m, h] = out[n].var[m].log()
        return Posterior(mu.flatten(1), logvar.flatten(1))

    def embed(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """What the app projects: the hard path's posterior means (see :meth:`encode`)."""
        return self.encode(x).mu

    def _slots(self, z: Tensor) -> Tensor:
        return z.view(z.shape[0], self.config.max_depth + 1, self.z_dim)  # (B, H+1, Z)

    def _route_greedy(self, z: Tensor) -> Tensor:
        """Leaf index reached by following r_p(z slot h) >= 1/2 -> left from the root."""
        slots = self._slots(z)
        node = torch.full((z.shape[0],), self.tree.root, dtype=torch.long, device=z.device)
        for _ in range(self.tree.depth):
            for n in node.unique().tolist():
                kids = self.tree[n].children
                m = node == n
                if len(kids) == 2:
                    left = self.router_p[str(n)](slots[m, self.tree[n].depth]) >= 0.5
                    node[m] = torch.where(left, kids[0], kids[1])
                elif len(kids) == 1:
                    node[m] = kids[0]
        col = {n: k for k, n in enumerate(self.leaf_order)}
        return torch.tensor([col[n] for n in node.tolist()], device=z.device, dtype=torch.long)

    @torch.no_grad()
    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """Logits (B, C, H, W) of path latents z (B, D), decoded by leaf y (index, scalar or
        (B,)) or, without y, by the leaf the generative routers reach greedily."""
        with _eval(self):
            if y is None:
                leaf = self._route_greedy(z)
            else:
                leaf = torch.as_tensor(y, device=z.device).long().expand(z.shape[0])
            return self._decode_at(self._slots(z), leaf)

    def _decode_at(self, slots: Tensor, leaf: Tensor) -> Tensor:
        """Decode sample b with leaf ``leaf[b]`` from its slot at that leaf's depth."""
        out = slots.new_zeros(slots.shape[0], *self.config.image_shape)
        for k in leaf.unique().tolist():
            n = self.leaf_order[k]
            m = leaf == k
            out[m] = self.decoder[str(n)](slots[m, self.tree[n].depth])
        return out

    @torch.no_grad()
    def reconstruct(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Mean reconstruction in [0, 1] by each sample's most probable leaf."""
        with _eval(self):
            post = self.encode(x)
            return torch.sigmoid(self._decode_at(self._slots(post.mu), self.predict_cluster(x)))

    @torch.no_grad()
    def reconstruct_leaves(self, x: Tensor) -> Tensor:
        """Every leaf's reconstruction from its posterior mean (mean path) -> (L, B, C, H, W)."""
        with _eval(self):
            _, out = self._infer(x, sample=False)
            return torch.stack([torch.sigmoid(self.decoder[str(n)](out[n].mu))
                                for n in self.leaf_order])

    @torch.no_grad()
    def generate(self, n: int, node: int | None = None, generator: torch.Generator | None = None
                 ) -> tuple[Tensor, Tensor]:
        """Ancestral samples (sec. 2.2): z_0 ~ N(0, I), z down the path to ``node`` (root by
        default) from the transformations, then on down the generative routers (a
        Bernoulli draw at each split) to a leaf -> images in [0, 1] (n, C, H, W) and leaf
        indices (n,)."""
        with _eval(self):
            dev, t = self._dev(), self.tree
            node = t.root if node is None else int(node)

            def draw(mu: Tensor, var: Tensor) -> Tensor:
                eps = torch.randn(mu.shape, generator=generator).to(dev)
                return mu + var.sqrt() * eps

            z = torch.randn(n, self.z_dim, generator=generator).to(dev)
            for m in t.path(node)[1:]:
                z = draw(*self.transform[str(m)](z))
            at = torch.full((n,), node, dtype=torch.long, device=dev)
            while not all(t[m].is_leaf for m in at.unique().tolist()):
                for m in at.unique().tolist():
                    kids, sel = t[m].children, at == m
                    if not kids:
                        continue
                    if len(kids) == 2:
                        u = torch.rand(int(sel.sum()), generator=generator).to(dev)
                        nxt = torch.where(u < self.router_p[str(m)](z[sel]), kids[0], kids[1])
                    else:
                        nxt = torch.full((int(sel.sum()),), kids[0], device=dev)
                    znew = z[sel].clone()
                    for c in kids:
                        cm = nxt == c
                        if cm.any():
                            znew[cm] = draw(*self.transform[str(c)](znew[cm]))
                    z[sel], at[sel] = znew, nxt
            col = {m: k for k, m in enumerate(self.leaf_order)}
            leaf = torch.tensor([col[m] for m in at.tolist()], device=dev, dtype=torch.long)
            slots = z.new_zeros(n, self.config.max_depth + 1, self.z_dim)
            for k in leaf.unique().tolist():
                slots[leaf == k, t[self.leaf_order[k]].depth] = z[leaf == k]
            return torch.sigmoid(self._decode_at(slots, leaf)), leaf

    def sample(self, n: int, y: Tensor | None = None, generator=None) -> Tensor:
        """Images in [0, 1] from the generative model; with y (a leaf index), from the
        prior conditioned on the path to that leaf."""
        node = None if y is None else self.leaf_order[int(y)]
        return self.generate(n, node, generator)[0]

    def extra_metrics(self, data) -> dict[str, float]:
        """Hierarchical clustering on the test set (Table 1): dp, lp, leaf_acc (Hungarian
        on leaves), leaf_nmi; also n_leaves (grown), n_leaves_mass (holding at least 1% of
        the test images) and tree_depth."""
        from sklearn.metrics import normalized_mutual_info_score

        from ..metrics import cluster_acc
        from ..tree import assign_leaves, dendrogram_purity, leaf_purity, leaves_with_mass

        y = data.y_test.cpu().numpy()
        leaves = assign_leaves(self, data.x_test)
        return {"dp": dendrogram_purity(self.tree, leaves, y), "lp": leaf_purity(self.tree, leaves, y),
                "leaf_acc": cluster_acc(y, leaves),
                "leaf_nmi": float(normalized_mutual_info_score(y, leaves)),
                "n_leaves": float(self.n_leaves), "n_leaves_mass": float(leaves_with_mass(leaves)),
                "tree_depth": float(self.tree.depth)}

    # -- growth (sec. 2.5): latentviz/models/tree_growth.py
    def fit_schedule(self, data, config, callback=None, *, on_stage=None, history=None,
                     restore_optimizer=None, on_grown=None):
        """Grow, prune and fine-tune the tree: :func:`tree_growth.fit_schedule`."""
        return tree_growth.fit_schedule(self, data, config, callback, on_stage=on_stage,
                                        history=history, restore_optimizer=restore_optimizer,
                                        on_grown=on_grown)

    def _choose_split(self, x: Tensor, batch_size: int = 4096) -> tuple[int, Tensor] | None:
        """The leaf to split next and its training samples' mask (or None)."""
        choice = tree_growth.choose_split(self, x, batch_size)
        return None if choice is None else choice[:2]

    def prune(self, x: Tensor, batch_size: int = 4096) -> list[int]:
        """Remove the leaves under ``prune_fraction`` of x: :func:`tree_growth.prune`."""
        return tree_growth.prune(self, x, batch_size)


def _initial_tree() -> Tree:
    tree = Tree.single()
    tree.add_children(tree.root)
    return tree


@contextlib.contextmanager
def _eval(model: nn.Module):
    """Eval mode inside (batch norm on running statistics), the previous mode after."""
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


def _batched(fn, x: Tensor, batch_size: int, device) -> Tensor:
    with torch.no_grad():
        return torch.cat([fn(x[i:i + batch_size].to(device)).cpu()
                          for i in range(0, len(x), batch_size)])


TREEVAE_VARIANT = Variant(
    "treevae", TreeVAE, "TreeVAE",
    "A grown binary tree of latents; soft routing, one decoder per leaf: hierarchical clusters.",
    "Manduchi, Vandenhirtz, Ryser, Vogt: Tree Variational Autoencoders (NeurIPS 2023, "
    "arXiv 2306.08984)")
