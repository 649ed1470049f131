"""``report.md`` and the figures of a guided-dropout study, from its result (object or dict)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from landscape.util.files import write_text

__all__ = ["arm_table", "render_report", "write_outputs"]


def _ci(c: dict[str, Any]) -> str:
    if c.get("mean") is None:
        return "n/a"
    if c.get("lo") is None:
        return f"{100 * c['mean']:.1f}"
    return f"{100 * c['mean']:.1f} [{100 * c['lo']:.1f}, {100 * c['hi']:.1f}]"


def arm_table(res: dict[str, Any]) -> str:
    """Markdown: test accuracy (%) per arm (rows) and size (columns), mean [95% interval]."""
    from figures.dropout import ARM_LABELS

    lines = []
    for task, sizes in res["summary"].items():
        cols = sorted(sizes, key=int)
        lines += [f"**{task}** (test accuracy, %, mean [95% t-interval] over seeds)", "",
                  "| arm | " + " | ".join(f"n = {s}" for s in cols) + " |", "|---" * (len(cols) + 1) + "|"]
        arms = [a for a in ARM_LABELS if any(a in sizes[s]["arms"] for s in cols)]
        for a in arms:
            lines.append(f"| {a} | " + " | ".join(_ci(sizes[s]["arms"].get(a, {})) for s in cols) + " |")
        lines.append("")
    return "\n".join(lines)


def _paired_table(res: dict[str, Any]) -> str:
    lines = []
    for task, sizes in res["summary"].items():
        cols = sorted(sizes, key=int)
        lines += [f"**{task}**: paired differences in test accuracy (percentage points), mean [95% interval], "
                  "paired t-test p, wins/losses over seeds", "",
                  "| comparison | " + " | ".join(f"n = {s}" for s in cols) + " |", "|---" * (len(cols) + 1) + "|"]
        names = list(dict.fromkeys(k for s in cols for k in sizes[s]["paired"]))
        for name in names:
            cells = []
            for s in cols:
                p = sizes[s]["paired"].get(name)
                if p is None or p.get("mean") is None:
                    cells.append("n/a")
                    continue
                pt = "n/a" if p.get("p_t") is None else f"{p['p_t']:.3f}"
                cells.append(f"{_ci(p)}, p = {pt}, {p['wins']}/{p['losses']}")
            lines.append(f"| {name.replace('-', ' − ')} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _mean(rates: dict[str, float]) -> float:
    return sum(rates.values()) / max(1, len(rates))


def _objective(desc: Any) -> str:
    if isinstance(desc, dict):
        return ", ".join(f"{k} {v}" for k, v in desc.items() if k in ("name", "mask_prob", "seed", "weighting"))
    return str(desc)


def render_report(res: dict[str, Any]) -> str:
    """The study's report as Markdown."""
    cfg, f, rates, meta = res["config"], res["fisher"], res["rates"], res["meta"]
    verdict_lines = [f"- *{task}*: {q['sentence']}" for task, qs in res["verdicts"].items() for q in qs.values()]
    site_rows = ["| site | role | score | guided | reversed | uniform |", "|---|---|---|---|---|---|"]
    for s, p in rates["guided"].items():
        role = rates["sites"][s]["role"]
        site_rows.append(f"| {s} | {role} | {rates['scores'][s]:.3e} | {p:.4f} | {rates['reversed'][s]:.4f} | "
                         f"{rates['uniform'][s]:.4f} |")
    half = f.get("site_rank_split_half", {})
    t = meta["timings"]
    task_lines = [f"- **{n}**: {d['n_pool']} pool / {d['n_test']} test examples, {len(d['classes'])} classes "
                  f"({', '.join(d['classes'][:10])})" for n, d in res["tasks"].items()]
    return "\n".join([
        "# Guided dropout: a controlled low-data fine-tuning study", "",
        f"Checkpoint `{cfg['checkpoint']}`; sizes {cfg['sizes']}; seeds {cfg['seeds']}; arms {', '.join(cfg['arms'])}.",
        f"{meta['runs_total']} runs ({meta['runs_this_call']} computed in this call, the rest resumed); "
        f"{t['total_s']:.0f} s in all, {t['run_mean_s']:.1f} s per computed run, {meta.get('threads')} torch "
        "thread(s).", "",
        "## Verdict", "", *verdict_lines, "",
        "Decided by the paired t-test over seeds at α = 0.05, with no correction for the several comparisons; "
        "with 5 seeds only large, consistent differences can reach significance.", "",
        "## Test accuracy per arm", "", arm_table(res), "![metric vs size](figures/metric_vs_size.png)", "",
        "## Paired differences", "", _paired_table(res),
        "## Rates per site", "",
        f"Scores: `{rates['score_method']}` of the MLM Fisher; map `{rates['mapping']}`, p from {rates['p_max']} "
        f"(lowest score) to {rates['p_min']} (highest). Uniform: {rates['uniform_source']} "
        f"(the checkpoint's own rates: {sorted(set(rates['checkpoint_rates'].values()))}). Head dropouts left at their "
        f"default: {rates['head_dropouts'] or 'none'}. Permuted control: a different permutation per seed. "
        f"Mean rate over sites: guided {_mean(rates['guided']):.4f} (= reversed = permuted), uniform "
        f"{_mean(rates['uniform']):.4f}; guided therefore also drops less in total than uniform.", "",
        *site_rows, "", "![rates per site](figures/site_rates.png)", "",
        "## Fisher", "",
        f"Empirical Fisher of the pretraining loss ({_objective(f['objective'])}) on {f['n_examples']} held-out "
        "sequences "
        f"({f.get('n_examples_empty')} without a masked token), {f.get('seconds') or 0:.1f} s. Per-tensor ranking "
        "reaches "
        f"Spearman ≥ 0.95 with the final one from n = {f.get('examples_to_rho_0.95')}. Split-half check of the site "
        f"ranking: Spearman {half.get('spearman')} between {half.get('n_half')} and {f['n_examples']} examples; "
        f"same rank-linear rates: {half.get('same_rates')}.", "",
        "## Setup", "", *task_lines, "",
        f"Recipe, fixed across arms: AdamW (lr {cfg['lr']}, weight decay {cfg['weight_decay']}), linear warmup over "
        f"{cfg['warmup']:.0%} of the steps then linear decay, batch {cfg['batch_size']}, {cfg['epochs']} epochs (at "
        "least "
        f"{cfg['min_steps']} steps), sequences cut to {cfg['max_length']} tokens. Each training size n is split into "
        f"training and validation ({cfg['val_fraction']:.0%}, class-stratified); the epoch with the best validation "
        "accuracy is kept, and the test set is evaluated once, for that epoch only.",
        "Arms are paired: per seed the same examples, data order, classifier-head initialisation and dropout stream "
        f"start. Fisher-L2 adds λ/2·Σ (F_i/mean F)(θ_i − θ0_i)² with λ = {cfg['l2_strength']} to uniform dropout. "
        "Gaussian and unit-granularity noise act at the hidden-state sites; attention-probability sites, which drop "
        "inside the attention kernel, keep Bernoulli dropout at the same rate.",
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
