"""Section 7: the papers' figures redrawn from our checkpoints (t-SNE of the latents,
class-conditional samples, k-means centres, reconstructions)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .context import Context, _ours_title, _test_latents
from .draw import _class_names, _figure, _new_figure, _save, _show
from .papers import TITLES, VARIANT_TITLES


TSNE_VARIANTS = ("vae", "beta_vae", "lambda_hot", "kmeans")


def fig_tsne(ctx: Context, path: Path) -> bool:
    from ..projections import tsne

    datasets = ("mnist", "fashion_mnist")
    if not any(ctx.ckpt(d, v) for d in datasets for v in TSNE_VARIANTS):
        return False
    fig = _new_figure(16, 8.6)
    axes = fig.subplots(len(datasets), len(TSNE_VARIANTS))
    cmap = __import__("matplotlib").colormaps["tab10"]
    for i, d in enumerate(datasets):
        names = _class_names(ctx, d)
        for j, v in enumerate(TSNE_VARIANTS):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{_ours_title(ctx, d)}: {VARIANT_TITLES[v].split(' (')[0]}", fontsize=10)
            lat = _test_latents(ctx, d, v, ctx.settings.tsne_points)
            if lat is None:
                ax.text(0.5, 0.5, "no checkpoint yet", ha="center", va="center", transform=ax.transAxes)
                continue
            z, y, _ = lat
            key = ("tsne", ctx.src(d), v, len(z))
            if key not in ctx.cache:
                ctx.cache[key] = tsne(z, random_state=ctx.settings.random_state)
            xy = ctx.cache[key]
            for c in range(len(names)):
                sel = y == c
                ax.scatter(xy[sel, 0], xy[sel, 1], s=3, color=cmap(c % 10), label=names[c],
                           rasterized=True, linewidths=0)
        handles = [__import__("matplotlib").lines.Line2D([], [], marker="o", ls="", color=cmap(c % 10),
                                                          label=names[c]) for c in range(len(names))]
        axes[i, -1].legend(handles=handles, loc="center left", bbox_to_anchor=(1.01, 0.5),
                           fontsize=8, frameon=False)
    fig.suptitle(f"t-SNE of {ctx.settings.tsne_points:,} test-set latent means (openTSNE, "
                 f"perplexity 30, random_state {ctx.settings.random_state}), coloured by class")
    return _save(fig, path)


def fig_class_rows(ctx: Context, dataset: str, path: Path) -> bool:
    from ..sampling import class_rows

    models = {v: ctx.model(dataset, v) for v in ("cvae", "lambda_hot")}
    if not any(models.values()):
        return False
    names = _class_names(ctx, dataset)
    n = ctx.settings.n_samples
    fig = _new_figure(2 + 2 * 0.55 * n, 0.42 * len(names) + 0.9)
    axes = fig.subplots(1, 2)
    for ax, (v, model) in zip(axes, models.items()):
        title = {"cvae": "CVAE: decode [z, onehot(c)], z ~ N(0, I)",
                 "lambda_hot": "lambda-hot: z ~ N(lambda e_c, I)"}[v]
        if model is None:
            ax.axis("off")
            ax.set_title(f"{title}\n(no checkpoint yet)", fontsize=10)
            continue
        rows = class_rows(model, n, seed=ctx.settings.random_state)
        _show(ax, rows, title, row_labels=list(names) if ax is axes[0] else None)
    fig.suptitle(f"{_ours_title(ctx, dataset)}: {n} samples per class (rows), seed "
                 f"{ctx.settings.random_state}")
    return _save(fig, path)


def fig_kmeans_centres(ctx: Context, path: Path) -> bool:
    from ..embeddings import batched
    from ..sampling import centre_samples, model_centres

    datasets = ("fashion_mnist", "mnist")   # the paper's Figure 6: Fashion left, MNIST right
    models = {d: ctx.model(d, "kmeans") for d in datasets}
    if not any(models.values()):
        return False
    n = ctx.settings.n_samples
    fig = _new_figure(2 * (2.6 + 0.55 * n), 0.42 * 10 + 1.2)
    axes = fig.subplots(1, 2)
    for ax, d in zip(axes, datasets):
        model = models[d]
        if model is None:
            ax.axis("off")
            ax.set_title(f"{_ours_title(ctx, d)} (no checkpoint yet)", fontsize=10)
            continue
        centres = model_centres(model)
        rows = centre_samples(model, centres, n, std=1.0, seed=ctx.settings.random_state)
        labels = [f"{k}" for k in range(len(centres))]
        data = ctx.data(ctx.src(d))
        if data is not None:
            cl = batched(model.predict_cluster, data.x_test, 4096).numpy()
            y = data.y_test.numpy()
            names = data.class_names
            labels = []
            for k in range(len(centres)):
                ys = y[cl == k]
                if len(ys) == 0:
                    labels.append(f"k={k}: empty")
                    continue
                top = np.bincount(ys, minlength=len(names)).argmax()
                labels.append(f"k={k}: {names[top]} ({100 * (ys == top).mean():.0f}%, n={len(ys)})")
        _show(ax, rows, f"{_ours_title(ctx, d)}: z = c_k + eps, eps ~ N(0, I)", row_labels=labels)
    fig.suptitle("k-means prior VAE: samples around each cluster centre (rows); labels: the "
                 "cluster's majority test class, its share and size")
    return _save(fig, path)


RECON_VARIANTS = ("vae", "beta_vae", "cvae", "lambda_hot", "kmeans")


def fig_reconstructions(ctx: Context, path: Path) -> bool:
    import torch

    datasets = ("fashion_mnist", "mnist")
    if not any(ctx.ckpt(d, v) for d in datasets for v in RECON_VARIANTS):
        return False
    fig = _new_figure(14, 0.62 * (len(RECON_VARIANTS) + 1) + 0.8)
    axes = fig.subplots(1, 2)
    for ax, d in zip(axes, datasets):
        data = ctx.data(ctx.src(d))
        if data is None or not any(ctx.ckpt(d, v) for v in RECON_VARIANTS):
            ax.axis("off")
            ax.set_title(f"{_ours_title(ctx, d)} (no checkpoints yet)", fontsize=10)
            continue
        # The first test image of each class, so every class shows once.
        idx = [int((data.y_test == c).nonzero()[0]) for c in range(data.n_classes)]
        x, y = data.x_test[idx], data.y_test[idx]
        rows, labels = [x], ["original"]
        for v in RECON_VARIANTS:
            model = ctx.model(d, v)
            labels.append(VARIANT_TITLES[v].split(" (")[0])
            if model is None:
                rows.append(torch.full_like(x, 0.5))
                labels[-1] += " (missing)"
                continue
            with torch.no_grad():
                model.eval()
                rows.append(model.reconstruct(x, y if model.conditional else None).cpu())
        _show(ax, torch.stack(rows), _ours_title(ctx, d), row_labels=labels)
    fig.suptitle("Test images (top row) and their reconstructions (decoded posterior means)")
    return _save(fig, path)


def section_figures(ctx: Context) -> str:
    parts = ["## 7. Figures", ""]
    items = [("latent_tsne.png", "t-SNE of the latent means: VAE, beta-VAE, lambda-hot, k-means prior "
              "(the paper's Figures 2 and 3)", lambda p: fig_tsne(ctx, p))]
    for d in ("mnist", "fashion_mnist"):
        items.append((f"class_samples_{ctx.src(d)}.png",
                      f"{TITLES[d]}: class-conditional samples, CVAE (left) vs lambda-hot (right) "
                      f"(the paper's Figure {4 if d == 'mnist' else 5})",
                      lambda p, d=d: fig_class_rows(ctx, d, p)))
    items.append(("kmeans_centres.png", "k-means prior VAE: samples around each cluster centre, "
                  "Fashion-MNIST (left) and MNIST (right) (the paper's Figure 6)",
                  lambda p: fig_kmeans_centres(ctx, p)))
    items.append(("reconstructions.png", "Reconstructions of one test image per class, every "
                  "variant of Table 1 (the paper's Figure 7 shows the k-means VAE's)",
                  lambda p: fig_reconstructions(ctx, p)))
    seen = set()
    for name, caption, draw in items:
        if name in seen:     # quick mode: MNIST and Fashion both come from digits
            continue
        seen.add(name)
        if _figure(ctx, name, draw):
            parts += [f"**{caption}.**", "", ctx.figure_link(name, caption), ""]
        else:
            parts += [f"**{caption}**: not drawn, its checkpoints are missing.", ""]
    return "\n".join(parts)
