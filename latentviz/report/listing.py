"""The closing lists: the missing checkpoints (with the command that makes each) and every
checkpoint read."""
from __future__ import annotations

from .context import Context
from .markdown import _num, md_table
from .papers import MISSING, TITLES, VARIANT_TITLES


def section_missing(ctx: Context) -> str:
    from ..zoo import RECIPES

    wanted = {(r.dataset, r.variant): r for r in RECIPES}
    keys = sorted(set(ctx.missing), key=lambda k: (k[0], k[1]))
    if not keys:
        return ""
    lines = ["## Missing checkpoints", "",
             f"These rows are {MISSING} above because `{ctx.shipped.folder}` has no checkpoint for "
             "them (\"training\" where an unfinished `.partial.safetensors` is there). They fill "
             "in when the report is regenerated after they land; the command that makes each:", ""]
    for k in keys:
        r = wanted.get(k)
        state = "being trained now" if k in ctx.shipped.in_progress else "not present"
        how = f"`{r.command()}`" if r else ("TreeVAE's own recipe (see docs/TREEVAE.md)"
                                            if k[1] == "treevae" else "no recipe in latentviz.zoo")
        lines.append(f"- {TITLES.get(k[0], k[0])} {VARIANT_TITLES.get(k[1], k[1])}: {state}; {how}")
    return "\n".join(lines)


def section_checkpoints(ctx: Context) -> str:
    rows = []
    for (d, v), c in sorted(ctx.shipped.found.items()):
        made = c.meta.get("made") or {}
        rows.append([f"`{c.path.name}`", v, d, c.epochs, (c.meta.get("train_config") or {}).get("seed"),
                     made.get("device", MISSING), _num(made.get("seconds"), 0),
                     c.meta.get("weights_dtype", MISSING), f"`{made.get('command') or MISSING}`"])
    return "\n".join([
        "## Checkpoints read", "",
        f"Every checkpoint in `{ctx.shipped.folder}` at the time of the report, with how it was "
        "made (from its metadata; `seconds` is wall time, training and evaluation, on a shared "
        "machine).", "",
        md_table(["File", "Variant", "Dataset", "Epochs", "Seed", "Device", "Seconds", "Weights",
                  "Command"], rows) if rows else "None.",
    ])
