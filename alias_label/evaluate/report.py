"""Tables and plots of an evaluation report (logs/metrics/evaluation.json), for the evaluator and notebooks."""

from __future__ import annotations

from pathlib import Path

SYSTEM_ORDER = ("rerank", "hybrid", "teacher", "student_rerank", "student_hybrid", "student", "base", "tfidf_translit",
                "tfidf")


def ordered(systems: dict) -> list[str]:
    return [name for name in SYSTEM_ORDER if name in systems] + [n for n in systems if n not in SYSTEM_ORDER]


def _fmt(value, pattern: str) -> str:
    return "–" if value is None else pattern.format(value)


def in_sample_note(report: dict) -> str:
    """On validation, what was fitted there and the rerankers' out-of-fold top-1 to compare instead."""
    if report.get("split") != "val":
        return ""
    folds = report.get("val_out_of_fold") or {}
    return (" The abstain settings and the rerankers were fitted on these aliases, so their figures here are in "
            "sample" + ("; the rerankers' top-1 out of fold (from fold models that never saw an alias's entity): "
                        + ", ".join(f"{name} {figures['top1']:.2%}" for name, figures in folds.items())
                        if folds else "") + ".")


def markdown_tables(report: dict) -> str:
    """The accuracy/speed table and the per-alias-kind table, as markdown."""
    systems = report["systems"]
    held_out = {"val": "Validation"}.get(report.get("split"), "Test")
    lines = [f"{held_out} aliases: {report['n_queries']}, candidate labels: {report['n_labels']} "
             f"(full {report['n_labels']}-way retrieval). Agreement teacher/student: "
             f"{_fmt(report['agreement'], '{:.2%}')}, retention: {_fmt(report['retention'], '{:.2%}')}."
             + (f" In int8 ({report['int8_scheme']}, {report['int8_activation_bits']}-bit activations): "
                f"{', '.join(report['int8'])}." if report.get("int8") else "")
             + " A label equal to the gold one up to case and accents counts as right ("
             + ", ".join(f"{name}: {systems[name].get('top1_folded_only', 0)}" for name in ordered(systems))
             + " top-1 answers)." + in_sample_note(report), "",
             "| system | top-1 | top-5 | top-10 | MRR | label→alias R@10 | p50 ms | p95 ms | batch q/s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name in ordered(systems):
        s = systems[name]
        lines.append(f"| {name} | {s['top1']:.2%} | {s['top5']:.2%} | {s['top10']:.2%} | {s['mrr']:.4f} | "
                     f"{_fmt(s.get('label_to_alias_recall10'), '{:.2%}')} | {_fmt(s.get('p50_ms'), '{:.1f}')} | "
                     f"{_fmt(s.get('p95_ms'), '{:.1f}')} | {_fmt(s.get('queries_per_s'), '{:.0f}')} |")
    calibrated = [name for name in ordered(systems) if systems[name].get("abstain")]
    if calibrated:
        lines += ["", "Abstain at the setting fitted on validation "
                  f"(target precision {systems[calibrated[0]]['abstain']['target_precision']:.0%}): a threshold on "
                  "the probability that the top answer is right (rerank), or on the top score with a margin to "
                  "the runner-up:", "",
                  "| system | reads | threshold | margin | val coverage | precision (95% interval) | coverage |",
                  "|---|---|---|---|---|---|---|"]
        for name in calibrated:
            a = systems[name]["abstain"]
            interval = a.get("precision_interval95")
            span = f" ({interval[0]:.1%}–{interval[1]:.1%})" if interval else ""
            # A setting whose bound missed the target on validation is the most precise one found,
            # not a 95% setting: the table says so rather than let its test precision pass for one.
            val = f"{a['val_coverage']:.2%}" + ("" if a["met_target"] else " (target not met)")
            lines.append(f"| {name} | {a.get('reads', 'score')} | {a['threshold']:.3f} | {a['margin']:.3f} | {val} | "
                         f"{_fmt(a['precision'], '{:.2%}')}{span} | {a['coverage']:.2%} |")
    if report.get("agreement_by_teacher_margin"):
        lines += ["", "Agreement teacher/student by the teacher's top-1 minus top-2 score:", "",
                  "| teacher margin | aliases | agreement |", "|---|---|---|"]
        for band in report["agreement_by_teacher_margin"]:
            upper = "" if band["margin_to"] is None else f"{band['margin_to']:.2f}"
            lines.append(f"| {band['margin_from']:.2f}–{upper} | {band['n']} | {_fmt(band['agreement'], '{:.2%}')} |")
    kinds = report["kind_counts"]
    lines += ["", "Top-1 by alias kind:", "",
              "| system | " + " | ".join(f"{kind} (n={count})" for kind, count in kinds.items()) + " |",
              "|---|" + "---|" * len(kinds)]
    for name in ordered(systems):
        by_kind = systems[name]["by_kind"]
        lines.append(f"| {name} | " + " | ".join(_fmt(by_kind.get(kind, {}).get("top1"), "{:.2%}")
                                               for kind in kinds) + " |")
    return "\n".join(lines) + "\n"


def plot_accuracy_at_k(report: dict, ax=None):
    import matplotlib.pyplot as plt

    ax = ax or plt.figure(figsize=(5, 3.5)).gca()
    for name in ordered(report["systems"]):
        s = report["systems"][name]
        ax.plot([1, 5, 10], [s["top1"], s["top5"], s["top10"]], marker="o", label=name)
    ax.set(xlabel="k", ylabel="accuracy@k", xticks=[1, 5, 10], title=f"alias → label ({report['n_labels']} labels)")
    ax.grid(alpha=0.3)
    ax.legend()
    return ax


def plot_latency_vs_top1(report: dict, ax=None):
    import matplotlib.pyplot as plt

    ax = ax or plt.figure(figsize=(5, 3.5)).gca()
    for name in ordered(report["systems"]):
        s = report["systems"][name]
        if s.get("p50_ms") is not None:
            ax.scatter(s["p50_ms"], s["top1"], s=40)
            ax.annotate(name, (s["p50_ms"], s["top1"]), textcoords="offset points", xytext=(5, 5))
    ax.set(xlabel="single-query p50 latency (ms, encode + search)", ylabel="top-1", title="speed vs accuracy")
    ax.grid(alpha=0.3)
    return ax


def save_plots(report: dict, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from alias_label.io import atomic_path

    written = []
    for name, plot in (("accuracy_at_k.png", plot_accuracy_at_k), ("latency_vs_top1.png", plot_latency_vs_top1)):
        ax = plot(report)
        ax.figure.tight_layout()
        with atomic_path(out_dir / name) as tmp:
            ax.figure.savefig(tmp, dpi=120, format="png")
        plt.close(ax.figure)
        written.append(out_dir / name)
    return written
