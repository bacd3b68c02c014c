"""Do the defaults hold on names of another kind than institutions?

Builds an alias table of place, language, currency and script names from the ISO standards that
pycountry ships (3166-1 countries, 3166-2 subdivisions, 639-3 languages, 4217 currencies, 15924
scripts): each entity's English name is its label, and its aliases are its codes ("DE", "DEU",
"EUR", "Latn"), its official and common names, and its names in 20 languages, many of them in
another script ("Германия", "ドイツ", "ألمانيا"). A seeded sample of entities gets up to two aliases
each, so that training has a few thousand pairs, as on the default data; every other entity
stays a candidate without aliases. Then every step of ``make pipeline`` runs on that table with
the default flags, in its own artifact root, and the evaluator scores every system on test and on
validation.

Reads   pycountry's bundled ISO lists and translations
Writes  <home>/data/raw/iso_names.csv (the table), <home>/ (every step's artifacts),
        benchmarks/results/other_kind.json (top-1, top-10, MRR, by alias kind, and abstain
        precision and coverage of each system, on test and validation; the rerankers' out-of-fold
        validation figures, as they were fitted on validation)

Example:
    python benchmarks/other_kind.py --home /tmp/other_kind
"""

from __future__ import annotations

import argparse
import gettext
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from harness import save_results

from alias_label.errors import UserError, run_main
from alias_label.io import atomic_path, read_json
from alias_label.paths import REPO_ROOT

LANGUAGES = ["de", "fr", "es", "it", "pt", "pl", "tr", "vi", "ru", "uk", "bg", "el", "ar", "fa", "he", "hi",
             "zh_CN", "ja", "ko", "th"]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, default=REPO_ROOT / "logs" / "other_kind",
                        help="artifact root of the run (ALIAS_LABEL_HOME), apart from the default data's "
                             "(default: logs/other_kind/)")
    parser.add_argument("--languages", nargs="+", default=LANGUAGES,
                        help="pycountry locales whose names become aliases (default: 20, in 10 scripts)")
    parser.add_argument("--aliased-entities", type=int, default=5000,
                        help="entities sampled to keep aliases; the others are candidates only (default: 5000)")
    parser.add_argument("--aliases-per-entity", type=int, default=2,
                        help="aliases kept of each sampled entity, a seeded sample (default: 2)")
    parser.add_argument("--bare-entities", type=int, default=None,
                        help="keep only N of the entities without aliases, for a short run (default: all)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the samples (default: 7)")
    parser.add_argument("--teacher-args", default="", help="extra flags of train_alias_label.py, as one string")
    parser.add_argument("--cross-args", default="", help="extra flags of the teacher's train_cross_encoder.py")
    parser.add_argument("--student-cross-args", default="", help="extra flags of the student's train_cross_encoder.py")
    parser.add_argument("--student-args", default="--epochs 1",
                        help="flags of distill_model.py (default: '--epochs 1', as make pipeline)")
    parser.add_argument("--eval-args", default="", help="extra flags of evaluate_student.py")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted run: the teacher and the student go on from their last "
                             "checkpoints (a step finished with the same flags is reused either way)")
    parser.add_argument("--results-dir", type=Path, default=None, help="default: benchmarks/results/")
    return parser.parse_args(argv)


def check_languages(languages: list[str]) -> None:
    """Refuse a locale pycountry has no translations for, naming those it has."""
    import pycountry

    known = sorted(os.listdir(pycountry.LOCALES_DIR))
    unknown = [language for language in languages if language not in known]
    if unknown:
        raise UserError(f"pycountry has no translations for --languages {' '.join(unknown)}; it has: {' '.join(known)}")


def translations(domain: str, languages: list[str]) -> list:
    """The gettext catalogues of one ISO list in those of ``languages`` pycountry has."""
    import pycountry

    found = []
    for language in languages:
        try:
            found.append(gettext.translation(domain, pycountry.LOCALES_DIR, languages=[language]))
        except OSError:
            continue
    return found


def entity_rows(qid: str, label: str, names, catalogues, description: str) -> list[tuple]:
    """(qid, label, alias, description) rows: each distinct name other than the label, then each
    translation of the label; one row with no alias when there is none."""
    aliases = dict.fromkeys(name for name in [*names, *(c.gettext(label) for c in catalogues)]
                            if name and name != label)
    return [(qid, label, alias, description) for alias in aliases] or [(qid, label, "", description)]


def iso_entities(languages: list[str]) -> pd.DataFrame:
    """Every ISO entity with all its aliases; languages only where some catalogue translates them."""
    import pycountry

    rows = []
    catalogues = translations("iso3166-1", languages)
    for country in pycountry.countries:
        names = [country.alpha_2, country.alpha_3, getattr(country, "official_name", ""),
                 getattr(country, "common_name", "")]
        rows += entity_rows(f"country:{country.alpha_3}", country.name, names, catalogues, "country")
    catalogues = translations("iso3166-2", languages)
    for region in pycountry.subdivisions:
        code = region.code.split("-", 1)[1]
        rows += entity_rows(f"subdivision:{region.code}", region.name, [code] if code.isalpha() else [],
                            catalogues, f"{region.type} of {region.country_code}")
    catalogues = translations("iso4217", languages)
    for currency in pycountry.currencies:
        rows += entity_rows(f"currency:{currency.alpha_3}", currency.name, [currency.alpha_3], catalogues, "currency")
    catalogues = translations("iso15924", languages)
    for script in pycountry.scripts:
        rows += entity_rows(f"script:{script.alpha_4}", script.name, [script.alpha_4], catalogues, "script")
    catalogues = translations("iso639-3", languages)
    for language in pycountry.languages:
        if any(c.gettext(language.name) != language.name for c in catalogues):
            names = [getattr(language, "alpha_2", ""), language.alpha_3]
            rows += entity_rows(f"language:{language.alpha_3}", language.name, names, catalogues, "language")
    return pd.DataFrame(rows, columns=["qid", "label", "alias", "description"])


def sampled_table(table: pd.DataFrame, aliased: int, per_entity: int, seed: int, bare: int | None = None
                  ) -> pd.DataFrame:
    """``aliased`` entities with up to ``per_entity`` of their aliases, and the rest (or ``bare`` of
    them) with none."""
    qids = table.loc[table["alias"] != "", "qid"].unique()
    if aliased > len(qids):
        raise UserError(f"--aliased-entities {aliased} is more than the {len(qids)} entities with aliases there are; "
                        f"pass at most {len(qids)}")
    keep = set(np.random.default_rng(seed).choice(qids, aliased, replace=False))
    shuffled = table[table["alias"] != ""].sample(frac=1, random_state=seed)
    with_aliases = shuffled[shuffled["qid"].isin(keep)].groupby("qid").head(per_entity)
    others = table[~table["qid"].isin(set(with_aliases["qid"]))].drop_duplicates("qid").assign(alias="")
    if bare is not None:
        others = others.sample(n=min(bare, len(others)), random_state=seed)
    return pd.concat([with_aliases, others]).sort_values(["qid", "alias"]).reset_index(drop=True)


def write_table(table: pd.DataFrame, target: Path) -> Path:
    with atomic_path(target) as tmp:
        table.to_csv(tmp, index=False)
    return target


def metrics_dir(home: Path, split: str) -> Path:
    """Where the evaluator's report of a split goes: its default folder for test, a subfolder for val."""
    return home / "logs" / "metrics" / ("val" if split == "val" else "")


def pipeline_steps(table: Path, args) -> list[list[str]]:
    """The steps of ``make pipeline`` on the table, and an evaluation on validation too."""
    data = ["--data", str(table)]
    resume = ["--resume"] if args.resume else []
    return [["prepare_data.py", *data],
            ["train_alias_label.py", *data, *resume, *shlex.split(args.teacher_args)],
            ["train_cross_encoder.py", *shlex.split(args.cross_args)],
            ["distill_model.py", *resume, *shlex.split(args.student_args)],
            ["train_cross_encoder.py", "--model", "student", *shlex.split(args.student_cross_args)],
            ["evaluate_student.py", *shlex.split(args.eval_args)],
            ["evaluate_student.py", "--split", "val", "--output-dir", str(metrics_dir(args.home, "val")),
             *shlex.split(args.eval_args)]]


def run_steps(steps: list[list[str]], home: Path) -> None:
    env = {**os.environ, "ALIAS_LABEL_HOME": str(home), "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
    for script, *flags in steps:
        print("$", "python", f"scripts/{script}", shlex.join(flags), flush=True)
        done = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / script), *flags], env=env)
        if done.returncode != 0:
            raise UserError(f"scripts/{script} failed (exit {done.returncode}); its log is under {home}/logs/")


def system_figures(evaluation: dict) -> dict:
    """Top-1, top-10 and MRR of each system, by alias kind, and its abstain precision and coverage."""
    figures = {}
    for name, system in evaluation["systems"].items():
        abstain = system.get("abstain") or {}
        figures[name] = {"top1": system["top1"], "top10": system["top10"], "mrr": system["mrr"],
                         "top1_by_kind": {kind: part["top1"] for kind, part in system["by_kind"].items()},
                         "abstain_precision": abstain.get("precision"), "abstain_coverage": abstain.get("coverage")}
    return figures


def evaluations(home: Path) -> dict:
    """Each split's figures from the evaluator's reports. A reranker was fitted on the validation
    aliases, so its validation figures there are in sample; the evaluator adds its out-of-fold ones
    (``val_out_of_fold``), the fair comparison."""
    reports = {split: read_json(metrics_dir(home, split) / "evaluation.json") for split in ("test", "val")}
    results = {split: {"aliases": report["n_queries"], "labels": report["n_labels"],
                       "kind_counts": report["kind_counts"], "systems": system_figures(report)}
               for split, report in reports.items()}
    return {**results, "val_out_of_fold": reports["val"]["val_out_of_fold"]}


def print_table(results: dict) -> None:
    print(f"{'system':16s} {'test top1':>10s} {'val top1':>10s} {'test cov95':>11s}")
    for name, test in results["test"]["systems"].items():
        val = results["val_out_of_fold"].get(name) or results["val"]["systems"].get(name, {})
        coverage = test["abstain_coverage"]
        print(f"{name:16s} {test['top1']:10.2%} {val.get('top1', float('nan')):10.2%} "
              f"{'' if coverage is None else f'{coverage:.2%}':>11s}")


def main(args: argparse.Namespace) -> dict:
    check_languages(args.languages)
    table = sampled_table(iso_entities(args.languages), args.aliased_entities, args.aliases_per_entity, args.seed,
                          args.bare_entities)
    path = write_table(table, args.home / "data" / "raw" / "iso_names.csv")
    entities, aliases = int(table["qid"].nunique()), int((table["alias"] != "").sum())
    print(f"wrote {path}: {entities} entities, {aliases} aliases")
    run_steps(pipeline_steps(path, args), args.home)
    results = evaluations(args.home)
    figures = {"table": {"languages": args.languages, "aliased_entities": args.aliased_entities,
                         "aliases_per_entity": args.aliases_per_entity,
                         "bare_entities": args.bare_entities, "seed": args.seed,
                         "entities": entities, "aliases": aliases},
               **results}
    print_table(results)
    save_results("other_kind", figures, args.results_dir)
    return figures


if __name__ == "__main__":
    run_main(main, parse_args())
