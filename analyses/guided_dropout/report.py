"""``report.md`` and the figures of a guided-dropout study, from its result (object or dict).

The ``## Answers`` section holds one bullet per task and primary contrast, with the verdict words
the numbers give; :mod:`analyses.guided_dropout.gallery` copies those bullets into the README.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from analyses.guided_dropout.arms import mean_rate
from landscape.util.files import write_text

__all__ = ["ANSWERS_HEADING", "arm_table", "power_line", "render_report", "write_outputs"]

ANSWERS_HEADING = "## Answers"


def _ci(c: dict[str, Any]) -> str:
    if c.get("mean") is None:
        return "n/a"
    if c.get("lo") is None:
        return f"{100 * c['mean']:.1f}"
    return f"{100 * c['mean']:.1f} [{100 * c['lo']:.1f}, {100 * c['hi']:.1f}]"


def _n_seeds(res: dict[str, Any]) -> str:
    ns = sorted({c["n"] for sizes in res["summary"].values() for cell in sizes.values() for c in cell["arms"].values()})
    return str(ns[0]) if len(ns) == 1 else f"{ns[0]}–{ns[-1]}" if ns else "0"


def arm_table(res: dict[str, Any]) -> str:
    """Markdown: test accuracy (%) per arm (rows) and size (columns), mean [95% interval]."""
    from analyses.guided_dropout.arms import ARMS

    lines = []
    for task, sizes in res["summary"].items():
        cols = sorted(sizes, key=int)
        lines += [f"**{task}** (test accuracy, %, mean [95% t-interval] over {_n_seeds(res)} seeds)", "",
                  "| arm | " + " | ".join(f"n = {s}" for s in cols) + " |", "|---" * (len(cols) + 1) + "|"]
        for a in [a for a in ARMS if any(a in sizes[s]["arms"] for s in cols)]:
            lines.append(f"| {a} | " + " | ".join(_ci(sizes[s]["arms"].get(a, {})) for s in cols) + " |")
        lines.append("")
    return "\n".join(lines)


def _p(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3g}"


def _contrast_table(res: dict[str, Any], primary: bool) -> str:
    ps = "p | Holm p" if primary else "p (raw)"
    head = f"| contrast | n | seeds | difference, pts [95% CI] | {ps} | MDE, pts | TOST p | verdict |"
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    for task, sizes in res["summary"].items():
        for size in sorted(sizes, key=int):
            for name, c in sizes[size]["paired"].items():
                if bool(c.get("primary")) != primary or c.get("mean") is None:
                    continue
                mde = "n/a" if c.get("mde") is None else f"{100 * c['mde']:.1f}"
                cells = [f"{task}: {name.replace('-', ' − ')}", size, str(c["n"]), _ci(c), _p(c.get("p_t"))]
                cells += [_p(c.get("p_holm"))] if primary else []
                word = c["decision"] if primary else f"exploratory: {c['decision']}"
                cells += [mde, _p(c.get("p_tost")), word]
                lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def power_line(res: dict[str, Any]) -> str:
    """One sentence: the run's worst primary MDE, against the target, and how the seeds were chosen."""
    pw = res.get("power") or {}
    mdes = [m for m in (pw.get("mde") or {}).values() if m is not None]
    if not mdes:
        return "Power: too few seeds for a minimum detectable effect."
    worst = max(mdes)
    target = 100 * pw["target"]
    head = (f"Power: with {pw.get('n_seeds')} seeds the largest minimum detectable effect of the primary contrasts "
            f"(80% power, α = 0.05) is {100 * worst:.1f} points")
    if pw.get("sequential"):
        return f"{head}; seeds were added to a {target:g}-point target: {pw['outcome']}."
    return f"{head} ({'within' if pw['met'] else 'above'} {target:g} points; `--full` adds seeds to that target)."


def _fisher_lines(f: dict[str, Any]) -> list[str]:
    h = f.get("split_half") or {}
    share = h.get("noise_share")
    noise = "n/a" if share is None else f"{100 * share:.0f}%"
    rho = "n/a" if h.get("spearman") is None else f"{h['spearman']:.3f}"
    return [
        f"Empirical Fisher of the pretraining loss ({_objective(f['objective'])}) on {f['n_examples']} held-out "
        f"sequences ({f.get('n_examples_empty')} without a masked token), {f.get('seconds') or 0:.1f} s. Per-tensor "
        f"ranking reaches Spearman ≥ 0.95 with the final one from n = {f.get('examples_to_rho_0.95')}.", "",
        f"**How much of the rates' order is noise.** Two disjoint halves of the held-out batches "
        f"({h.get('n_examples')} sequences, no sequence in both) give site-score Spearman ρ = {rho}; "
        f"{h.get('flipped_pairs')} of {h.get('pairs')} site pairs ({noise}) swap order between the halves, and "
        f"{h.get('rates_changed')} of {h.get('n_sites')} sites' rank-linear rates change (by up to "
        f"{h.get('max_rate_change', 0):.4f}). That share of the order is Fisher-sample noise, not information.",
    ]


def _objective(desc: Any) -> str:
    if isinstance(desc, dict):
        return ", ".join(f"{k} {v}" for k, v in desc.items() if k in ("name", "mask_prob", "seed", "weighting"))
    return str(desc)


def _rates_lines(rates: dict[str, Any]) -> list[str]:
    rows = ["| site | role | score | guided | reversed | uniform | pretrain |", "|---|---|---|---|---|---|---|"]
    for s, p in rates["guided"].items():
        rows.append(f"| {s} | {rates['sites'][s]['role']} | {rates['scores'][s]:.3e} | {p:.4f} | "
                    f"{rates['reversed'][s]:.4f} | {rates['uniform'][s]:.4f} | {rates['pretrain'][s]:.4f} |")
    own = sorted(set(rates["checkpoint_rates"].values()))
    return [f"Scores: `{rates['score_method']}` of the MLM Fisher; map `{rates['mapping']}`, p from {rates['p_max']} "
            f"(lowest score) to {rates['p_min']} (highest). Mean rate over sites: guided "
            f"{mean_rate(rates['guided']):.4f} "
            f"(= reversed = permuted = uniform), pretrain {mean_rate(rates['pretrain']):.4f} (from the "
            f"{rates['pretrain_source']}; the checkpoint's own rates: {own}). Head dropouts left at their default: "
            f"{rates['head_dropouts'] or 'none'}.", "", *rows, "", "![rates per site](figures/site_rates.png)"]


def _recipe(cfg: dict[str, Any], recipe: dict[str, Any]) -> str:
    per = "; ".join(f"{k}: lr {v['lr']:.3g}, batch {v['batch_size']}, {v['epochs']} epochs" for k, v in recipe.items()
                    if v.get("lr") is not None)
    common = (f"AdamW (weight decay {cfg['weight_decay']}), linear warmup over {cfg['warmup']:.0%} of the steps then "
              f"linear decay, {cfg['epochs']} epochs or at least {cfg['min_steps']} steps ({per}), sequences cut to "
              f"{cfg['max_length']} tokens")
    if cfg.get("recipe") == "select":
        few = " (fewer than 64: too few to choose an epoch reliably)" if cfg["val_size"] < 64 else ""
        return (f"Recipe `select`: {common}; the epoch with the best accuracy on {cfg['val_size']} validation "
                f"examples{few} (drawn besides the training size) is kept, and the test set is evaluated once, for it.")
    return (f"Recipe `paper`: {common}; fixed epochs, the final model kept (no epoch selection, so no validation set: "
            "every example trains), batch 32; lr 1e-3, BERT-base's 2e-5 scaled to this model (the width rule's 1.2e-4 "
            "left the default model where it started).")


def _model_line(f: dict[str, Any]) -> list[str]:
    if f.get("heldout_loss") is None:
        return []
    gap = (f["heldout_unigram_xent"] - f["heldout_loss"]) if f.get("heldout_unigram_xent") is not None else None
    below = f" ({gap:.2f} nats below the unigram baseline)" if gap is not None else ""
    return [f"Pretrained model: held-out MLM loss {f['heldout_loss']:.3f} nats{below}, pretrained with dropout "
            f"{f.get('dropout')}, built in {f.get('build_seconds') or 0:.0f} s (`{f.get('cache_key')}`).", ""]


def render_report(res: dict[str, Any]) -> str:
    """The study's report as Markdown."""
    cfg, meta, t = res["config"], res["meta"], res["meta"]["timings"]
    answers = [f"- **{task}**: {q['sentence']}" for task, qs in res["verdicts"].items() for q in qs.values()]
    arm_rows = ["| arm | definition |", "|---|---|"] + [f"| {a} | {d} |" for a, d in res["arms"].items()]
    task_lines = [f"- **{n}**: {d['n_pool']} pool / {d['n_test']} test examples, {len(d['classes'])} classes "
                  f"({', '.join(d['classes'][:10])}){'; ' + d['split'] if d.get('split') else ''}"
                  for n, d in res["tasks"].items()]
    margin = cfg["equivalence_margin"]
    return "\n".join([
        "# Guided dropout: a controlled low-data fine-tuning study", "",
        f"Checkpoint `{cfg['checkpoint']}`; sizes {cfg['sizes']}; seeds {cfg['seeds_used']}; recipe {cfg['recipe']}. "
        f"{meta['runs_total']} runs ({meta['runs_this_call']} computed in this call, the rest resumed); "
        f"{t['total_s']:.0f} s in all, {t['run_mean_s']:.1f} s per computed run, {meta.get('threads')} torch "
        "thread(s).", "",
        ANSWERS_HEADING, "", *answers, "", power_line(res), "",
        "Decided before the data: two primary contrasts, guided − uniform (uniform at guided's mean rate: placement "
        "at equal amount) and guided − permuted (the Fisher order against a random order of the same rates), "
        "Holm-corrected over both at every task and size; every other contrast is exploratory (raw p). Verdict "
        "words: *detected* where the (Holm) p < 0.05; else *no effect larger than δ* where TOST with margin "
        f"δ = ±{margin:g} points gives p < 0.05; else *inconclusive at this power* (always below three seeds). "
        "MDE = (t_0.975 + t_0.80)·s_d/√n over n paired seeds (80% power, α = 0.05).", "",
        "## Arms", "", *arm_rows, "",
        "## Test accuracy per arm", "", arm_table(res), "![metric vs size](figures/metric_vs_size.png)", "",
        "## Primary contrasts", "", _contrast_table(res, primary=True), "",
        "## Exploratory contrasts", "", _contrast_table(res, primary=False), "",
        "## Rates per site", "", *_rates_lines(res["rates"]), "",
        "## Fisher", "", *_fisher_lines(res["fisher"]), "",
        "## Setup", "", *task_lines, "", *_model_line(meta.get("checkpoint_facts") or {}),
        _recipe(cfg, meta.get("recipe") or {}),
        "Arms are paired: per seed the same examples, data order, classifier-head initialisation and dropout stream "
        f"start. Fisher-L2 adds λ/2·Σ (F_i/mean F)(θ_i − θ0_i)² with λ = {cfg['l2_strength']}. Gaussian and "
        "unit-granularity noise act at the hidden-state sites; attention-probability sites, which drop inside the "
        "attention kernel, keep Bernoulli dropout at the same rate.",
        f"Leakage policy: {meta['leakage']}. Test sets are disjoint from the training pools.", "",
    ])


def write_outputs(result: Any, out: str | Path) -> None:
    """``figures/metric_vs_size.png``, ``figures/site_rates.png`` and ``report.md`` in ``out``."""
    from figures.dropout import plot_metric_vs_size, plot_site_rates
    from landscape.util.results import as_dict

    out = Path(out)
    res = as_dict(out if result is None else result)
    plot_metric_vs_size(res, save=out / "figures" / "metric_vs_size.png")
    plot_site_rates(res, save=out / "figures" / "site_rates.png")
    write_text(out / "report.md", render_report(res))
