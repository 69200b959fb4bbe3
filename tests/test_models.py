"""The contract every variant keeps, then each variant's own math."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import latentviz as lv
from latentviz.models import TERM_NAMES, VARIANTS
from latentviz.models.base import Posterior, kl_normal, recon_bce
from latentviz.models.fixed_output import class_targets
from latentviz.train import train_model

from conftest import TINY_TRAIN, tiny_model

EXPECTED_TERMS = {"vae": {"recon", "kl"}, "beta_vae": {"recon", "kl"}, "cvae": {"recon", "kl"},
                  "lambda_hot": {"recon", "kl"}, "kmeans": {"recon", "kl"},
                  "branched": {"recon", "kl", "cls"}, "fixed_output": {"recon", "kl"},
                  "treevae": {"recon", "kl_nodes", "kl_decisions"}}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_contract_loss_terms_gradients_and_a_step(name, digits):
    torch.manual_seed(0)
    model = tiny_model(name, digits)
    model.prepare(digits)
    x, y = digits.x_train[:64], digits.y_train[:64]
    out = model.loss(x, y)
    assert torch.isfinite(out.total), f"{name}: total loss {out.total}"
    assert set(out.terms) == EXPECTED_TERMS[name], f"{name}: terms {sorted(out.terms)}"
    assert set(out.terms) <= set(TERM_NAMES)
    out.total.backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    no_grad = [n for n, p in trainable if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not no_grad, f"{name}: no finite gradient reaches {no_grad[:5]}"
    before = {n: p.detach().clone() for n, p in trainable}
    torch.optim.Adam(model.parameters(), lr=1e-3).step()
    unchanged = [n for n, p in trainable if torch.equal(p, before[n])]
    assert not unchanged, f"{name}: one step left {unchanged[:5]} unchanged"


@pytest.mark.parametrize("name", list(VARIANTS))
def test_every_variant_trains_and_its_loss_falls(name, digits):
    model = tiny_model(name, digits)
    history = train_model(model, digits, TINY_TRAIN)
    first, last = history.train[0]["recon"], history.train[-1]["recon"]
    assert last < first, f"{name}: train recon went {first:.2f} -> {last:.2f}"
    assert history.test[-1]["total"] == pytest.approx(history.test[-1]["total"])  # finite


@pytest.mark.parametrize("name", list(VARIANTS))
def test_checkpoint_round_trip_gives_identical_outputs(name, tiny_checkpoints, digits):
    model, ckpt = lv.load(tiny_checkpoints[name])
    again, _ = lv.load(lv.save(tiny_checkpoints[name].with_name(f"copy-{name}.safetensors"), model,
                               dataset="digits"))
    x, y = digits.x_test[:32], digits.y_test[:32]
    cond = y if model.conditional else None
    torch.testing.assert_close(model.embed(x, cond), again.embed(x, cond), rtol=0, atol=0)
    torch.testing.assert_close(model.reconstruct(x, cond), again.reconstruct(x, cond), rtol=0, atol=0)
    assert ckpt.variant == name and ckpt.dataset == "digits" and ckpt.epochs >= 1


def test_vae_and_beta_vae_share_a_class_and_differ_by_beta():
    assert VARIANTS["vae"].cls is VARIANTS["beta_vae"].cls
    assert lv.build("vae").config.beta == 1.0
    assert lv.build("beta_vae").config.beta == 5.0  # the lambda-hot paper's baseline


def test_kl_normal_matches_torch_distributions():
    mu, logvar, m = torch.randn(5, 4), torch.randn(5, 4), torch.randn(5, 4)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(m, torch.ones_like(m))
    expected = torch.distributions.kl_divergence(q, p).sum(1)
    torch.testing.assert_close(kl_normal(Posterior(mu, logvar), m), expected)


def test_recon_bce_is_summed_per_image():
    logits = torch.zeros(2, 1, 4, 4)  # p = 0.5 everywhere: -log 0.5 per pixel
    assert recon_bce(logits, torch.rand(2, 1, 4, 4)).tolist() == pytest.approx([16 * np.log(2)] * 2)


def test_lambda_hot_prior_is_lambda_in_the_class_dimension():
    model = lv.build("lambda_hot", latent_dim=20, lam=5.0)
    m = model.prior_mean(torch.tensor([2, 7]), 2)
    assert m.shape == (2, 20)
    assert m[0, 2] == 5.0 and m[1, 7] == 5.0 and m.sum() == 10.0


def test_lambda_hot_argmax_classifies_digits(digits):
    """Floor 0.85: 10 classes (chance 0.10); a linear probe on raw digits pixels scores
    about 0.96, and the class dims must carry the label after 20 tiny epochs."""
    model = tiny_model("lambda_hot", digits)
    train_model(model, digits, TINY_TRAIN.replace(epochs=20))
    acc = (model.predict(digits.x_test) == digits.y_test).float().mean().item()
    assert acc >= 0.85, f"lambda-hot argmax accuracy on digits {acc:.3f} < 0.85"


def test_lambda_hot_needs_room_for_the_classes():
    with pytest.raises(lv.ConfigError, match="latent_dim.*n_classes"):
        lv.build("lambda_hot", latent_dim=5)


def test_kmeans_centres_start_from_the_untrained_encoder_and_move(digits):
    model = tiny_model("kmeans", digits)
    model.prepare(digits)
    c0 = model.centres.clone()
    assert c0.abs().sum() > 0, "centres fitted on the untrained encoder before epoch 1"
    seen = []
    lv.fit(model, digits, TINY_TRAIN.replace(epochs=2), prepare=False,
           callback=lambda p: seen.append(model.centres.clone()) if p.phase == "epoch" else None)
    shifts = [float((b - a).norm(dim=1).mean()) for a, b in zip([c0] + seen[:-1], seen)]
    assert all(s > 1e-4 for s in shifts), f"mean centre shift per epoch {shifts}"


def test_kmeans_prior_is_the_nearest_centre():
    model = lv.build("kmeans", latent_dim=2, n_clusters=2)
    model.centres.copy_(torch.tensor([[-3.0, 0.0], [3.0, 0.0]]))
    post = Posterior(torch.tensor([[-2.5, 1.0], [2.0, -1.0]]), torch.zeros(2, 2))
    assert model.kl_prior_mean(post, None).tolist() == [[-3.0, 0.0], [3.0, 0.0]]


def test_fixed_output_target_is_the_class_output(digits):
    model = tiny_model("fixed_output", digits, target="class_mean")
    model.prepare(digits)
    for c in (0, 3, 9):
        expected = digits.x_train[digits.y_train == c].mean(0)
        torch.testing.assert_close(model.targets[c], expected)
    # The loss reconstructs T_y, not x: with the decoder forced to output T_y exactly the
    # recon term is the entropy of T_y, whatever x is.
    x, y = digits.x_train[:8], digits.y_train[:8]
    t = class_targets("class_mean", digits.x_train, digits.y_train, 10)
    model.decode = lambda z, y_=None: torch.logit(t[y].clamp(1e-4, 1 - 1e-4))
    got = model.loss(torch.rand_like(x), y).terms["recon"]
    torch.testing.assert_close(got, recon_bce(torch.logit(t[y].clamp(1e-4, 1 - 1e-4)), t[y]).mean())


@pytest.mark.parametrize("kind", ["exemplar", "gaussian"])
def test_fixed_output_targets_are_one_image_per_class(kind, digits):
    t = class_targets(kind, digits.x_train, digits.y_train, 10)
    assert t.shape == (10, 1, 8, 8) and 0 <= t.min() and t.max() <= 1
    assert len({tuple(row.flatten().tolist()) for row in t}) == 10, "targets must differ"
    if kind == "exemplar":  # each exemplar is a real training image of its class
        for c in range(10):
            assert (digits.x_train[digits.y_train == c] == t[c]).flatten(1).all(1).any()


def test_cvae_samples_of_class_c_are_classified_as_c(digits):
    from sklearn.linear_model import LogisticRegression

    model = tiny_model("cvae", digits)
    train_model(model, digits, TINY_TRAIN.replace(epochs=30))
    ref = LogisticRegression(max_iter=2000).fit(digits.x_train.flatten(1).numpy(), digits.y_train.numpy())
    torch.manual_seed(0)
    y = torch.arange(10).repeat_interleave(30)
    with torch.no_grad():
        x = model.sample(len(y), y)
    acc = float((ref.predict(x.flatten(1).numpy()) == y.numpy()).mean())
    assert acc > 0.5, f"reference classifier agrees with the CVAE's class on {acc:.2f} (chance 0.10)"


def test_branched_branch_learns_the_labels(digits):
    model = tiny_model("branched", digits)
    train_model(model, digits, TINY_TRAIN.replace(epochs=20))
    acc = (model.predict(digits.x_test) == digits.y_test).float().mean().item()
    assert acc >= 0.85, f"BVAE branch accuracy on digits {acc:.3f}"


@pytest.mark.parametrize("field,value,match", [
    ("latent_dim", 0, "latent_dim = 0 .*>= 1"), ("hidden", -4, "hidden"),
    ("backbone", "resnet", "one of mlp, conv"), ("beta", -1.0, "beta.*>= 0"),
    ("n_clusters", 1, "n_clusters.*>= 2"), ("lam", float("nan"), "lam.*finite"),
])
def test_bad_hyperparameters_name_the_field_and_range(field, value, match):
    variant = {"n_clusters": "kmeans", "lam": "lambda_hot"}.get(field, "vae")
    with pytest.raises(lv.ConfigError, match=match):
        lv.build(variant, **{field: value})


def test_unknown_variant_and_field_are_reported():
    with pytest.raises(lv.ConfigError, match="variant.*one of"):
        lv.build("gan")
    with pytest.raises(lv.ConfigError, match="lam"):
        lv.build("vae", lam=3.0)  # a lambda-hot field on a plain VAE
