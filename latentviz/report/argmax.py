"""Section 2: the lambda-hot argmax accuracy (lambda-hot paper, sec. 5.1)."""
from __future__ import annotations

from .context import Context, _missing_cell, _ours_title, protocol_line
from .markdown import _diff, _paper, _pct, md_table
from .papers import PAPER_ARGMAX


def section_argmax(ctx: Context) -> str:
    rows = []
    for d in ("mnist", "fashion_mnist"):
        ours = ctx.metric(d, "lambda_hot", "acc_own")
        rows.append([_ours_title(ctx, d), _paper(PAPER_ARGMAX[d]),
                     _pct(ours, 2) if ours is not None else _missing_cell(ctx, d, "lambda_hot"),
                     _diff(None if ours is None else 100 * ours, PAPER_ARGMAX[d]),
                     _pct(ctx.metric(d, "lambda_hot", "acc_nn")),
                     _pct(ctx.metric(d, "lambda_hot", "kmeans_acc"))])
    ckpts = [ctx.ckpt(d, "lambda_hot") for d in ("mnist", "fashion_mnist")]
    return "\n".join([
        "## 2. Lambda-hot argmax accuracy (lambda-hot paper, sec. 5.1)", "",
        "Accuracy (%) of classifying a test image by the argmax of the first 10 dimensions of "
        "its posterior mean (no classifier is trained). Paper: lambda = 5, latent size 20.", "",
        protocol_line(ckpts), "",
        md_table(["Dataset", "argmax acc: paper", "argmax acc: ours", "ours - paper",
                  "NN on latents: ours", "k-means ACC: ours"], rows), "",
        "The last two columns are not in the paper: an MLP classifier fitted on the training "
        "latents, and unsupervised k-means (K = 10) on the test latents with Hungarian matching.",
    ])
