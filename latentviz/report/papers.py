"""The papers' numbers the tables put ours beside, and the names the report gives things."""
from __future__ import annotations


TITLES = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST", "rotated_mnist": "rotated MNIST",
          "digits": "digits (8x8)"}


VARIANT_TITLES = {"vae": "VAE", "beta_vae": "beta-VAE (beta = 5)", "cvae": "CVAE",
                  "lambda_hot": "lambda-hot (lambda = 5)", "kmeans": "k-means prior (K = 10)",
                  "branched": "branched VAE", "fixed_output": "fixed-output VAE",
                  "treevae": "TreeVAE"}


LH_PAPER = "Wang, Blair, Belkhale, *Encouraging Categorical Meaning in the Latent Space of a VAE*"


BV_PAPER = "Yevick, *Branched Variational Autoencoder Classifiers* (arXiv 2401.02526)"


TV_PAPER = "Manduchi et al., *Tree Variational Autoencoders* (NeurIPS 2023, arXiv 2306.08984)"


#: Table 1 of the lambda-hot paper: reconstruction BCE per test image.
PAPER_RECON = {
    "mnist": {"vae": 80.97, "beta_vae": 120.76, "cvae": 80.15, "lambda_hot": 79.92, "kmeans": 77.59},
    "fashion_mnist": {"vae": 228.87, "beta_vae": 250.37, "cvae": 228.14, "lambda_hot": 227.39,
                      "kmeans": 225.68},
}


#: Sec. 5.1 of the lambda-hot paper: argmax over the class dims, % of test images.
PAPER_ARGMAX = {"mnist": 91.9, "fashion_mnist": 81.27}


#: The branched-VAE paper's headline: an NN classifier on the latents, MNIST, %.
PAPER_BRANCHED_NN = {("mnist", "branched"): 98.5, ("mnist", "vae"): 97.1}


#: Table 1 of the TreeVAE paper, % (mean, std over 10 runs): DP, LP, ACC, NMI.
PAPER_TREE = {
    "mnist": {"treevae": ((87.9, 4.9), (96.0, 1.9), (90.2, 7.5), (90.0, 4.6)),
              "vae_agg": ((79.9, 2.2), (90.8, 1.4), (86.6, 4.9), (81.6, 2.0))},
    "fashion_mnist": {"treevae": ((54.4, 2.4), (71.4, 2.0), (63.6, 3.3), (64.7, 1.4)),
                      "vae_agg": ((44.3, 2.5), (65.9, 2.3), (54.9, 4.4), (56.1, 3.2))},
}


TREE_DP_LEAVES = 20   # the TreeVAE paper's DP / LP are on trees grown (or cut) to 20 leaves


AGG_LABEL = f"VAE + Agg (DP, LP: {TREE_DP_LEAVES} leaves; ACC, NMI: 10)"


MISSING = "—"
