"""Command line: ``python -m latentviz train | resume | eval | list | report | bench | maps``.

Every hyperparameter is a flag generated from the config dataclasses, so the CLI, the app
and the checks are one set of definitions; invalid values exit with the field's message.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import sys
import time
from pathlib import Path

from . import distributed
from .checkpoints import CheckpointError, list_checkpoints
from .data import DATASETS, DatasetError
from .metrics import CLASSIFIERS, METRIC_LABELS
from .models import VARIANTS, ConfigError
from .train import Progress, TrainConfig, TrainingDiverged

MODEL_FIELDS_SKIP = {"image_shape", "n_classes"}  # come from the dataset


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _add_config_flags(parser: argparse.ArgumentParser, fields, dest_prefix: str, seen: dict,
                      owner: str = ""):
    """One flag per config field. A field that several variants define with different
    meanings (``lam``) gets one flag whose help lists each meaning."""
    for f in fields:
        if f.name in MODEL_FIELDS_SKIP:
            continue
        meta = f.metadata or {}
        if f.name in seen:
            action = seen[f.name]
            if meta.get("help") and meta["help"] not in action.help:
                action.help += f"; {owner}: {meta['help']} (default {f.default!r})".replace("%", "%%")
            continue
        typ = {"int": int, "float": float, "bool": _parse_bool, "str": str}.get(
            f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "str"), str)
        help_text = meta.get("help", "")
        if meta.get("paper"):
            help_text += f" [paper: {meta['paper']}]"
        prefix = f"{owner}: " if owner else ""
        seen[f.name] = parser.add_argument(
            "--" + f.name.replace("_", "-"), dest=dest_prefix + f.name, type=typ,
            default=argparse.SUPPRESS, choices=meta.get("choices"),
            help=f"{prefix}{help_text} (default {f.default!r})".replace("%", "%%"))


def _collect(args, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in vars(args).items() if k.startswith(prefix)}


class ProgressBar:
    """A tqdm bar over the whole run on stderr (epoch and growth stage before it, the
    running loss terms after it) and, per epoch, one kept line with its train and test terms.
    Off a terminal (a log file, a pipe) only the epoch lines are written."""

    def __init__(self, stream=sys.stderr):
        self.stream, self.t0, self.bar = stream, time.perf_counter(), None
        self.tty = getattr(stream, "isatty", lambda: False)()

    def __call__(self, p: Progress):
        terms = " ".join(f"{k} {v:.3g}" for k, v in p.terms.items())
        head = f"epoch {p.epoch}/{p.epochs}" + (f" [{p.stage}]" if p.stage else "")
        if self.tty:
            if self.bar is None:
                from tqdm import tqdm

                self.bar = tqdm(total=1.0, desc=head, file=self.stream, leave=False,
                                dynamic_ncols=True, bar_format="{desc} |{bar:24}| "
                                "{percentage:3.0f}% {elapsed}<{remaining}{postfix}")
            self.bar.set_description_str(head, refresh=False)
            self.bar.set_postfix_str(terms, refresh=False)
            self.bar.n = min(max(p.fraction, 0.0), 1.0)
            self.bar.refresh()
        if p.phase == "epoch":
            test = " ".join(f"{k} {v:.3g}" for k, v in (p.test_terms or {}).items() if k != "total")
            test = f"  | test {test}" if test else ""  # not evaluated this epoch (eval_every)
            line = f"{head} {terms}  {time.perf_counter() - self.t0:.0f}s{test}"
            if self.bar is not None:
                self.bar.write(line, file=self.stream)   # above the bar, which stays last
            else:
                print(line, file=self.stream, flush=True)
            if p.fraction >= 1.0:
                self.close()

    def close(self) -> None:
        """Clear the bar from the terminal (the epoch lines stay)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def format_metrics(metrics: dict) -> str:
    rows = [(METRIC_LABELS.get(k, k), v) for k, v in metrics.items()]
    w = max((len(k) for k, _ in rows), default=10)
    return "\n".join(f"  {k:<{w}}  {v:.4f}" if isinstance(v, float) and not math.isnan(v)
                     else f"  {k:<{w}}  {v}" for k, v in rows)


def _add_classifier_flags(parser) -> None:
    parser.add_argument("--classifiers", default=None, metavar="LIST",
                        help="latent classifiers for the final metrics, comma-separated, of "
                        f"{','.join(CLASSIFIERS)} (default: all; fitting them can cost more "
                        "than a short run)")
    parser.add_argument("--no-classifiers", action="store_true",
                        help="skip the latent classifiers in the final metrics")


def _classifiers(args) -> tuple[str, ...]:
    if args.no_classifiers:
        return ()
    if args.classifiers is None:
        return CLASSIFIERS
    names = tuple(n.strip() for n in args.classifiers.split(",") if n.strip())
    if any(n not in CLASSIFIERS for n in names):
        raise ConfigError("classifiers", args.classifiers,
                          "a comma-separated list of " + ", ".join(CLASSIFIERS))
    return names


def cmd_train(args) -> int:
    from .runs import RunSpec, run_training

    model_cfg = _collect(args, "m_")
    train_cfg = TrainConfig(**_collect(args, "t_"))
    spec = RunSpec(args.variant, args.dataset, model_cfg, train_cfg, args.out, args.data_dir,
                   args.n_train, args.half, args.image_size)
    classifiers = _classifiers(args)
    # Under torchrun: join the other processes; rank 0 alone prints (and writes).
    distributed.init_from_env(train_cfg.device)
    main_rank = distributed.is_main()
    if main_rank and args.variant == "treevae" and any(a == "--epochs" or a.startswith("--epochs=")
                                         for a in args.argv):
        print("note: treevae's growth schedule sets the epochs of each stage (--schedule, "
              "--epochs-initial, --epochs-subtree, --epochs-retrain, --epochs-final); "
              "--epochs is not used", file=sys.stderr)
    if main_rank:
        procs = f" ({distributed.world_size()} processes)" if distributed.world_size() > 1 else ""
        print(f"training {spec.variant} on {spec.dataset}{procs} -> {spec.out}", file=sys.stderr)
    bar = ProgressBar()
    try:
        result = run_training(spec, bar, classifiers=classifiers, argv=_argv())
    finally:
        bar.close()
    _print_result(result)
    return 0


def _print_result(result) -> None:
    if distributed.is_main():
        print(f"saved {result.path} ({result.history.epochs} epochs, {result.seconds:.1f}s)")
        print(format_metrics(result.metrics))


def cmd_resume(args) -> int:
    from .runs import resume

    bar = ProgressBar()
    try:
        result = resume(args.path, args.epochs, bar, classifiers=_classifiers(args),
                        data_dir=args.data_dir, argv=_argv(), max_leaves=args.max_leaves,
                        out=args.out)
    finally:
        bar.close()
    _print_result(result)
    return 0


def cmd_eval(args) -> int:
    from .checkpoints import load
    from .data import dataset_for
    from .metrics import evaluate_model
    from .train import pick_device

    device = pick_device(args.device)
    model, ckpt = load(args.path, device)
    data = dataset_for(ckpt.meta, args.data_dir, device=device, path=args.dataset)
    seed = ckpt.metrics_seed   # as the stored metrics were computed: eval reproduces them
    metrics = evaluate_model(model, data, classifiers=_classifiers(args), random_state=seed)
    if args.json:
        print(json.dumps({"path": str(ckpt.path), "variant": ckpt.variant,
                          "dataset": ckpt.dataset, "metrics": metrics}, indent=2))
    else:
        print(f"{ckpt.path}: {ckpt.variant} on {ckpt.dataset}, {ckpt.epochs} epochs "
              f"(seeded with the run's seed, {seed}, as its stored metrics)")
        print(format_metrics(metrics))
    return 0


def cmd_list(args) -> int:
    folders = args.folders or ["checkpoints", "runs"]
    found = list_checkpoints(*folders)
    if args.json:
        print(json.dumps([{"path": str(c.path), "variant": c.variant, "dataset": c.dataset,
                           "epochs": c.epochs, "metrics": c.metrics, "error": c.error}
                          for c in found], indent=2))
        return 0
    if not found:
        print(f"no checkpoints in {', '.join(folders)}")
        return 0
    print(f"{'checkpoint':<44} {'variant':<13} {'dataset':<14} {'epochs':>6} {'recon':>8} {'acc':>6}")
    for c in found:
        if c.error:
            print(f"{str(c.path):<44} unreadable: {c.error}")
            continue
        m = c.metrics
        acc = m.get("acc_own", m.get("acc_logreg", float("nan")))
        print(f"{str(c.path):<44} {c.variant:<13} {c.dataset:<14} {c.epochs:>6} "
              f"{m.get('test_recon', float('nan')):>8.2f} {acc:>6.3f}")
    return 0


def cmd_report(args) -> int:
    from .report import main as report_main
    return report_main(args)


def cmd_bench(args) -> int:
    from .bench import main as bench_main
    return bench_main(args)


def cmd_maps(args) -> int:
    from .mapcache import run
    return run(args)


def _argv() -> list[str]:
    return ["python", "-m", "latentviz", *sys.argv[1:]]


class _Parser(argparse.ArgumentParser):
    """argparse, with a bad flag reported as one ``error: ...`` line (exit 2)."""

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m latentviz", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    p.add_argument("--debug", action="store_true",
                   help="print the traceback of an error (it is one line without)")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a variant and save its checkpoint",
                       description="Train a variant; every model and training field is a flag.")
    t.add_argument("--variant", required=True, choices=list(VARIANTS))
    t.add_argument("--dataset", default="digits", metavar="NAME|PATH",
                   help=f"one of {', '.join(DATASETS)}, or your own images: a folder with one "
                   "subfolder per class (optionally under train/ and test/), or an .npz file "
                   "with x, y and optionally class_names (default digits)")
    t.add_argument("--image-size", type=int, default=None, metavar="N",
                   help="your own images: resize to N x N (default: kept when both sides are "
                   "at most 64, else 64)")
    t.add_argument("--out", type=Path, default=None, help="checkpoint path (.safetensors)")
    t.add_argument("--data-dir", default=None, help="dataset root (default $LATENTVIZ_DATA "
                   "or ~/.cache/latentviz/data)")
    t.add_argument("--n-train", type=int, default=None, help="train on a random slice")
    t.add_argument("--half", action="store_true", help="store float16 weights")
    _add_classifier_flags(t)
    g = t.add_argument_group("model (fields of the variant's config)")
    seen: dict = {}
    shared = {f.name for f in dataclasses.fields(VARIANTS["vae"].cls.Config)}
    for v in VARIANTS.values():
        own = [f for f in dataclasses.fields(v.cls.Config) if f.name not in shared]
        _add_config_flags(g, [f for f in dataclasses.fields(v.cls.Config) if f.name in shared],
                          "m_", seen)
        _add_config_flags(g, own, "m_", seen, owner=v.name)
    g2 = t.add_argument_group("training")
    _add_config_flags(g2, dataclasses.fields(TrainConfig), "t_", {})
    t.set_defaults(func=cmd_train)

    r = sub.add_parser("resume", help="continue a run from its last saved epoch (TreeVAE: growth stage)")
    r.add_argument("path", type=Path)
    r.add_argument("--epochs", type=int, default=None, help="epochs to add (default: finish the run)")
    r.add_argument("--data-dir", default=None)
    r.add_argument("--max-leaves", type=int, default=None,
                   help="treevae: grow on to this many leaves (resume NAME.grown.partial."
                        "safetensors, the tree as its growth ended; needs --out)")
    r.add_argument("--out", type=Path, default=None,
                   help="where the finished checkpoint goes (default: beside the partial file)")
    _add_classifier_flags(r)
    r.set_defaults(func=cmd_resume)

    e = sub.add_parser("eval", help="print a checkpoint's metrics")
    e.add_argument("path", type=Path)
    e.add_argument("--json", action="store_true")
    e.add_argument("--data-dir", default=None)
    e.add_argument("--dataset", default=None, metavar="PATH",
                   help="where the checkpoint's own images are now, if moved (checked to be "
                   "the same images)")
    e.add_argument("--device", default="auto")
    _add_classifier_flags(e)
    e.set_defaults(func=cmd_eval)

    ls = sub.add_parser("list", help="list checkpoints with their metadata")
    ls.add_argument("folders", nargs="*")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_list)

    rp = sub.add_parser("report", help="regenerate docs/RESULTS.md from the checkpoints")
    rp.add_argument("--checkpoints", default="checkpoints")
    rp.add_argument("--out", default="docs")
    rp.add_argument("--retrain", action="store_true")
    rp.add_argument("--data-dir", default=None)
    rp.add_argument("--quick", action="store_true", help="tiny sizes (tests)")
    rp.set_defaults(func=cmd_report)

    b = sub.add_parser("bench", help="benchmarks, measured side by side; prints figures")
    b.add_argument("--quick", action="store_true", help="tiny sizes (tests)")
    b.add_argument("--data-dir", default=None)
    b.add_argument("--only", default=None, help="comma-separated: train,projections,data,app,treevae")
    b.add_argument("--out", default=None, help="write the results as JSON here")
    b.add_argument("--no-full-schedule", action="store_true",
                   help="treevae on a GPU: skip running the whole reference schedule (hours); "
                        "the step rows and the estimate from measured epochs remain")
    b.set_defaults(func=cmd_bench)

    from .mapcache import MAPS_HELP, add_arguments
    mp = sub.add_parser("maps", help="write the shipped checkpoints' default maps",
                        description=MAPS_HELP)
    add_arguments(mp)
    mp.set_defaults(func=cmd_maps)
    for command in sub.choices.values():  # --debug before or after the command
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help="print the traceback of an error")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    finished = False   # on this rank: the others wait for it when it leaves
    try:
        code = args.func(args)
        finished = True
        return code
    except (ConfigError, CheckpointError, DatasetError, TrainingDiverged) as exc:
        return _fail(args, exc, 2)  # bad input: a value, a file, a dataset, a setting
    except KeyboardInterrupt:
        if distributed.is_main():
            print("\ninterrupted; finished epochs (TreeVAE: growth stages) are in the "
                  ".partial.safetensors file (python -m latentviz resume PATH)", file=sys.stderr)
        return 130
    except (ValueError, OSError) as exc:  # a library's refusal (k-means...), a file system's
        return _fail(args, exc, 2, named=True)
    except Exception as exc:  # noqa: BLE001 - the CLI's boundary: one line, not a traceback
        return _fail(args, exc, 1, named=True)
    finally:
        distributed.leave(finished)


def _fail(args, exc: BaseException, code: int, named: bool = False) -> int:
    """One ``error: ...`` line on stderr (the traceback first under --debug)."""
    # Under torchrun every rank meets bad input (code 2) alike: rank 0 says so. Anything
    # else may be one rank's own failure, so that rank names itself.
    if distributed.is_main() or code != 2:
        if getattr(args, "debug", False):
            import traceback
            traceback.print_exception(exc, file=sys.stderr)
        text = " ".join(str(exc).split()) or type(exc).__name__
        if named:
            text = f"{type(exc).__name__}: {text}" + ("" if args.debug else " (--debug shows where)")
        rank = "" if distributed.is_main() else f"rank {distributed.rank()}: "
        print(f"{rank}error: {text}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
