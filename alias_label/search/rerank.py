"""The second stage: a LightGBM LambdaRank reranker over the union of the first stage's candidates.

For each alias the first stage proposes the union of the dense index's, TF-IDF's (with the
labels' transliterated keys, and again with the alias transliterated) and the acronym channel's
top ``k`` labels; the reranker scores each (alias, candidate) pair from the features in
``alias_label.search.features`` and ranks them.

The splits stay honest. The model was trained on the train aliases, so its scores on them are
overconfident: the reranker is fitted on the validation aliases only, in folds grouped by
entity. Each fold's model scores the aliases it did not see, and those out-of-fold scores alone
fit the probability that a top answer is right (a logistic fit on the top score) and the abstain
setting. At lookup time the fold models' scores are averaged. Test aliases touch nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alias_label.data.split import Split
from alias_label.errors import UserError
from alias_label.index.dense import KeyedIndex
from alias_label.index.tables import Candidates
from alias_label.io import atomic_path, read_json, write_json
from alias_label.metrics import classes_of
from alias_label.models.encode import encode
from alias_label.models.load import model_fingerprint
from alias_label.search.abstain import abstain_quality, fit_abstain
from alias_label.search.acronym import AcronymIndex
from alias_label.search.candidates import union
from alias_label.search.features import FEATURES, GROUPS, LabelTable, pair_features
from alias_label.search.searchers import TransliteratedQueries, lexical_searcher

log = logging.getLogger(__name__)

RERANKER_FILE = "reranker.json"  # the sidecar: features, fingerprints, calibration; checked on load
BOOSTERS_FILE = "reranker_boosters.json"  # the fold models, as LightGBM model strings
CANDIDATES_PER_CHANNEL = 50
FOLDS = 5
BOOSTER_PARAMS = {"objective": "lambdarank", "n_estimators": 300, "learning_rate": 0.05, "num_leaves": 15,
                  "min_child_samples": 10, "subsample": 0.8, "subsample_freq": 1, "colsample_bytree": 0.8,
                  "lambdarank_truncation_level": 20, "verbose": -1, "n_jobs": 1}


def label_vectors(label_index) -> tuple[np.ndarray, np.ndarray]:
    """The index's row vectors, and for each label the rows of its keys (-1 padded): what the exact
    cosine feature reads."""
    keyed = isinstance(label_index, KeyedIndex)
    dense = label_index.index if keyed else label_index
    faiss_index = dense.index
    if hasattr(faiss_index, "make_direct_map"):
        faiss_index.make_direct_map()
    try:
        vectors = faiss_index.reconstruct_n(0, faiss_index.ntotal)
    except RuntimeError:
        raise UserError("the reranker reads the label vectors back from the index, which this index type cannot "
                        "give; rebuild it as flat, hnsw or ivf with: python scripts/build_index.py") from None
    label_of_row = label_index.entry_of_key if keyed else np.arange(len(vectors))
    keys = np.full((int(label_of_row.max()) + 1, int(np.bincount(label_of_row).max())), -1, dtype=np.int64)
    filled = np.zeros(len(keys), dtype=np.int64)
    for row, label in enumerate(label_of_row):
        keys[label, filled[label]] = row
        filled[label] += 1
    return np.ascontiguousarray(vectors, dtype=np.float32), keys


@dataclass
class FirstStage:
    """The channels and label table a reranker scores candidates from, for one trained model."""

    model: object
    label_index: object
    lexical: object
    acronym: AcronymIndex
    table: LabelTable
    vectors: np.ndarray
    keys: np.ndarray  # label row -> its rows in ``vectors``, -1 padded
    k: int = CANDIDATES_PER_CHANNEL

    @classmethod
    def build(cls, dense, candidates: Candidates, k: int = CANDIDATES_PER_CHANNEL, lexical=None) -> FirstStage:
        """From a dense Searcher and the candidate tables its indexes hold; ``lexical`` reuses a TF-IDF searcher."""
        labels = candidates.labels
        vectors, keys = label_vectors(dense.label_index)
        return cls(dense.model, dense.label_index, lexical or lexical_searcher(candidates),
                   AcronymIndex(labels["label"]), LabelTable.build(labels["label"], labels["websites"]), vectors,
                   keys, k)

    def cosines(self, query: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Exact cosine of one query to each candidate label, at the label's closer key."""
        keys = self.keys[rows]
        scores = np.einsum("ckd,d->ck", self.vectors[np.maximum(keys, 0)], query)
        return np.where(keys >= 0, scores, -np.inf).max(axis=1).astype(np.float32)

    def candidates(self, aliases: list[str]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Per alias, its candidate label rows and their feature matrix."""
        embeddings = encode(self.model, aliases, kind="query")
        results = {"dense": self.label_index.search(embeddings, self.k),
                   "tfidf": self.lexical.labels_for(aliases, self.k),
                   "tfidf_query_translit": TransliteratedQueries(self.lexical).labels_for(aliases, self.k),
                   "acronym": self.acronym.search(aliases, self.k)}
        merged = union(results)
        rows, features = [], []
        for i, alias in enumerate(aliases):
            width = int((merged.rows[i] >= 0).sum())
            candidate_rows = merged.rows[i, :width]
            rows.append(candidate_rows)
            features.append(pair_features(alias, candidate_rows, self.cosines(embeddings[i], candidate_rows),
                                          {c: merged.scores[c][i, :width] for c in results},
                                          {c: merged.ranks[c][i, :width] for c in results}, self.table))
        return rows, features


def probability(raw: np.ndarray, platt: dict) -> np.ndarray:
    """The fitted probability that an answer with this reranker score is right."""
    return 1.0 / (1.0 + np.exp(-(platt["slope"] * raw + platt["intercept"])))


@dataclass
class RerankSearcher:
    """Labels ranked by the reranker over the first stage's candidates, scored by the fitted probability.

    label -> alias search is not reranked: it is the hybrid's.
    """

    name: str
    first_stage: FirstStage
    boosters: list
    platt: dict
    features: list[str]
    reverse: object  # the hybrid searcher, for aliases_for

    def raw_scores(self, features: np.ndarray) -> np.ndarray:
        columns = [FEATURES.index(name) for name in self.features]
        return np.mean([booster.predict(features[:, columns]) for booster in self.boosters], axis=0)

    def labels_for(self, aliases, k: int = 10):
        aliases = list(aliases)
        rows, features = self.first_stage.candidates(aliases)
        scores = np.zeros((len(aliases), k), dtype=np.float32)
        ids = np.full((len(aliases), k), -1, dtype=np.int64)
        for i, (candidate_rows, matrix) in enumerate(zip(rows, features, strict=True)):
            if not len(candidate_rows):
                continue
            raw = self.raw_scores(matrix)
            order = np.argsort(-raw, kind="stable")[:k]
            ids[i, :len(order)] = candidate_rows[order]
            scores[i, :len(order)] = probability(raw[order], self.platt)
        return scores, ids

    def aliases_for(self, labels, k: int = 10):
        return self.reverse.aliases_for(labels, k)


def training_table(first_stage: FirstStage, split: Split, part: str = "val"):
    """Features, relevance (1 for the gold label, up to case and accents) and groups of one split's aliases."""
    pairs = split.pairs(part)
    rows, features = first_stage.candidates(pairs["alias"].tolist())
    gold = split.label_classes[split.label_rows(pairs["label"])]
    relevance = [(classes_of(candidate_rows, split.label_classes) == g).astype(int)
                 for candidate_rows, g in zip(rows, gold, strict=True)]
    return rows, features, relevance, pairs["qid"].to_numpy()


def entity_folds(entities: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """A fold number for each alias, whole entities to one fold, so no fold sees another's entity."""
    distinct = np.random.default_rng(seed).permutation(np.unique(entities))
    fold_of = {entity: i % folds for i, entity in enumerate(distinct)}
    return np.array([fold_of[entity] for entity in entities])


def fit_boosters(features: list[np.ndarray], relevance: list[np.ndarray], columns: list[int], seed: int):
    """One LambdaRank model on the aliases whose gold label is among their candidates."""
    import lightgbm

    useful = [i for i, rel in enumerate(relevance) if rel.any()]
    ranker = lightgbm.LGBMRanker(**BOOSTER_PARAMS, random_state=seed)
    ranker.fit(np.vstack([features[i][:, columns] for i in useful]), np.concatenate([relevance[i] for i in useful]),
               group=[len(relevance[i]) for i in useful])
    return ranker.booster_


def out_of_fold(features, relevance, entities, columns: list[int], folds: int, seed: int):
    """(fold boosters, each alias's candidate scores from the booster that did not see it)."""
    fold = entity_folds(entities, folds, seed)
    boosters, raw = [], [None] * len(features)
    for f in range(folds):
        inside = np.flatnonzero(fold != f)
        booster = fit_boosters([features[i] for i in inside], [relevance[i] for i in inside], columns, seed + f)
        boosters.append(booster)
        for i in np.flatnonzero(fold == f):
            raw[i] = booster.predict(features[i][:, columns]) if len(features[i]) else np.empty(0)
    return boosters, raw


def ranked_outcome(raw: list[np.ndarray], relevance: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per alias: its top two scores (-inf where missing), whether the top answer is right, and the
    rank of the gold label (0: not among the candidates)."""
    top = np.full((len(raw), 2), -np.inf)
    right = np.zeros(len(raw), dtype=bool)
    gold_rank = np.zeros(len(raw), dtype=int)
    for i, (scores, rel) in enumerate(zip(raw, relevance, strict=True)):
        if not len(scores):
            continue
        order = np.argsort(-scores, kind="stable")
        top[i, :min(2, len(order))] = scores[order[:2]]
        right[i] = bool(rel[order[0]])
        hits = np.flatnonzero(rel[order])
        gold_rank[i] = hits[0] + 1 if len(hits) else 0
    return top, right, gold_rank


def fit_platt(top: np.ndarray, right: np.ndarray) -> dict:
    """Logistic fit of P(top answer right) on the top score.

    One wrong answer below the lowest score and one right answer above the highest are added, as
    a prior: the fit exists even when every validation answer is right (or wrong), and extreme
    scores do not get a probability of exactly 0 or 1 from a few aliases.
    """
    from sklearn.linear_model import LogisticRegression

    usable = np.isfinite(top[:, 0])
    scores = top[usable, 0]
    low, high = (scores.min(), scores.max()) if len(scores) else (0.0, 1.0)
    x = np.concatenate([scores, [low - 1.0, high + 1.0]])[:, None]
    fitted = LogisticRegression().fit(x, np.concatenate([right[usable], [False, True]]))
    return {"slope": float(fitted.coef_[0, 0]), "intercept": float(fitted.intercept_[0])}


def outcome_metrics(rows: list[np.ndarray], right: np.ndarray, gold_rank: np.ndarray) -> dict:
    found = gold_rank > 0
    return {"top1": float(right.mean()), "top10": float(np.mean(found & (gold_rank <= 10))),
            "mrr": float(np.mean(np.where(found, 1.0 / np.maximum(gold_rank, 1), 0.0))),
            "candidate_recall": float(found.mean()), "mean_candidates": float(np.mean([len(r) for r in rows])),
            "n": len(rows)}


def top_probabilities(top: np.ndarray, platt: dict) -> np.ndarray:
    """The top two answers' fitted probabilities, 0 where an alias has no such answer."""
    return np.where(np.isfinite(top), probability(np.nan_to_num(top, neginf=-50.0), platt), 0.0)


def fit_out_of_fold(table, features: list[str], target_precision: float, confidence: float, folds: int = FOLDS,
                    seed: int = 13) -> dict:
    """Fold models, probability and abstain for one feature set, all from out-of-fold validation scores."""
    rows, matrices, relevance, entities = table
    columns = [FEATURES.index(name) for name in features]
    boosters, raw = out_of_fold(matrices, relevance, entities, columns, min(folds, len(set(entities))), seed)
    top, right, gold_rank = ranked_outcome(raw, relevance)
    platt = fit_platt(top, right)
    abstain = fit_abstain(top_probabilities(top, platt), right, target_precision, confidence=confidence)
    return {"boosters": boosters, "platt": platt, "abstain": abstain, "val": outcome_metrics(rows, right, gold_rank)}


def score_table(fitted: dict, table, features: list[str]) -> dict:
    """The fold models' averaged ranking of a table's aliases: metrics and the abstain setting's quality."""
    rows, matrices, relevance, _ = table
    columns = [FEATURES.index(name) for name in features]
    raw = [np.mean([b.predict(m[:, columns]) for b in fitted["boosters"]], axis=0) if len(m) else np.empty(0)
           for m in matrices]
    top, right, gold_rank = ranked_outcome(raw, relevance)
    return {**outcome_metrics(rows, right, gold_rank),
            "abstain": abstain_quality(top_probabilities(top, fitted["platt"]), right, fitted["abstain"])}


def fit_reranker(first_stage: FirstStage, split: Split, model_dir: Path, role: str, target_precision: float,
                 confidence: float, features: list[str] | None = None, folds: int = FOLDS, seed: int = 13) -> dict:
    """Fit the reranker on validation in entity folds, its probability and abstain out of fold; save it.

    Returns the sidecar: out-of-fold validation figures, the abstain setting, and what was checked.
    """
    import lightgbm

    features = list(features or FEATURES)
    fitted = fit_out_of_fold(training_table(first_stage, split, "val"), features, target_precision, confidence,
                             folds, seed)
    boosters, platt, abstain, val = fitted["boosters"], fitted["platt"], fitted["abstain"], fitted["val"]
    boosters_text = json.dumps([booster.model_to_string() for booster in boosters])
    with atomic_path(Path(model_dir) / BOOSTERS_FILE) as tmp:
        tmp.write_text(boosters_text, encoding="utf-8")
    sidecar = {"role": role, "features": features, "feature_groups": {g: [f for f in names if f in features]
                                                                      for g, names in GROUPS.items()},
               "fitted_on": "val", "folds": len(boosters), "candidates_per_channel": first_stage.k,
               "data_fingerprint": split.fingerprint, "model_fingerprint": model_fingerprint(model_dir),
               "boosters_sha256": hashlib.sha256(boosters_text.encode()).hexdigest(),
               "lightgbm": lightgbm.__version__, "booster_params": BOOSTER_PARAMS, "platt": platt,
               "abstain": abstain, "val_out_of_fold": val}
    write_json(Path(model_dir) / RERANKER_FILE, sidecar)
    log.info("%s reranker: val top1 %.4f out of fold (candidates hold the gold label for %.4f); abstain at "
             "p >= %.3f, margin >= %.3f -> val precision %.3f, coverage %.3f%s", role, val["top1"],
             val["candidate_recall"], abstain["threshold"], abstain["margin"], abstain["val"]["precision"] or 0.0,
             abstain["val"]["coverage"], "" if abstain["met_target"] else " (target not met)")
    return sidecar


def load_reranker(model_dir: Path, data_fingerprint: str, fix: str) -> tuple[dict, list]:
    """The sidecar and fold models of a model's reranker, checked against the model, the data and the code."""
    import lightgbm

    model_dir = Path(model_dir)
    sidecar_file, boosters_file = model_dir / RERANKER_FILE, model_dir / BOOSTERS_FILE
    if not sidecar_file.exists() or not boosters_file.exists():
        raise UserError(f"{model_dir} has no reranker ({RERANKER_FILE}). Fit it with: {fix}")
    sidecar = read_json(sidecar_file)
    text = boosters_file.read_text(encoding="utf-8")
    checks = {"model_fingerprint": model_fingerprint(model_dir), "data_fingerprint": data_fingerprint,
              "boosters_sha256": hashlib.sha256(text.encode()).hexdigest()}
    for key, expected in checks.items():
        if sidecar.get(key) != expected:
            raise UserError(f"{sidecar_file} does not match its {key.split('_')[0]} (stale or damaged). "
                            f"Refit it with: {fix}")
    unknown = set(sidecar["features"]) - set(FEATURES)
    if unknown:
        raise UserError(f"{sidecar_file} uses features this version does not compute ({sorted(unknown)}). "
                        f"Refit it with: {fix}")
    if sidecar["lightgbm"] != lightgbm.__version__:
        log.warning("%s was fitted with lightgbm %s, this is %s", sidecar_file, sidecar["lightgbm"],
                    lightgbm.__version__)
    return sidecar, [lightgbm.Booster(model_str=model) for model in json.loads(text)]
