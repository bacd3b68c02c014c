"""The second stage: a LightGBM LambdaRank reranker over the union of the first stage's candidates.

For each alias the first stage proposes the union of the dense index's, TF-IDF's (with the
labels' transliterated keys, and again with the alias transliterated) and the acronym channel's
top ``k`` labels; the reranker scores each (alias, candidate) pair from the features in
``alias_label.search.features`` and ranks them. Where the model folder has a cross-encoder
(``alias_label.search.cross``), its scores of each alias's first candidates are two more features.

The splits stay honest. The model was trained on the train aliases, so its scores on them are
overconfident: the reranker is fitted on the validation aliases only, in folds grouped by
entity, several times over with different seeds. Each fold's model scores the aliases it did not
see; those out-of-fold scores, averaged over the cuts, alone fit how a query's scores become
shares (a softmax at the temperature under which share and margin would keep the most validation
aliases) and the classifier that says how likely the top answer is right
(``alias_label.search.confidence``), whose own out-of-fold probabilities fit the abstain
threshold. At lookup time the fold models of every cut rank together, by their mean score, so the
scores the classifier reads are of the models it was fitted on. Test aliases touch nothing.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alias_label.data.split import Split
from alias_label.data.text import transliterate
from alias_label.errors import UserError
from alias_label.index.dense import KeyedIndex, search_alone
from alias_label.index.tables import Candidates
from alias_label.io import atomic_path, read_json, write_json
from alias_label.metrics import classes_of
from alias_label.models.encode import encode_alone
from alias_label.models.load import model_fingerprint
from alias_label.search.abstain import TARGET_MISSED, abstain_quality, fit_abstain
from alias_label.search.acronym import AcronymIndex
from alias_label.search.candidates import union
from alias_label.search.confidence import (
    CLASSIFIER_PARAMS,
    CLASSIFIER_REPEATS,
    abstain_scores,
    boosters_from_text,
    boosters_text,
    fit_confidence,
    probabilities,
    top_answer_features,
)
from alias_label.search.cross import CROSS_FEATURES, CrossScorer
from alias_label.search.features import FEATURES, GROUPS, LabelTable, pair_features
from alias_label.search.folds import check_folds, entity_folds, shares
from alias_label.search.searchers import lexical_searcher

log = logging.getLogger(__name__)

RERANKER_FILE = "reranker.json"  # the sidecar: features, fingerprints, calibration; checked on load
BOOSTERS_FILE = "reranker_boosters.json"  # the fold models that rank, as a list of LightGBM model strings
CONFIDENCE_FILE = "reranker_confidence.json"  # the fold classifiers of "the top answer is right", likewise
CANDIDATES_PER_CHANNEL = 50
FOLDS = 5
# Validation is cut into folds this many times, each cut with its own seed: one cut's out-of-fold
# scores, and so the abstain setting fitted on them, swing with the seed; their mean over three
# cuts keeps more validation aliases, and steadily (docs/rerank.md).
REPEATS = 3
BOOSTER_PARAMS = {"objective": "lambdarank", "n_estimators": 100, "learning_rate": 0.15, "num_leaves": 15,
                  "min_child_samples": 10, "subsample": 0.8, "subsample_freq": 1, "colsample_bytree": 0.8,
                  "lambdarank_truncation_level": 20, "verbose": -1, "n_jobs": 1}
# A lookup scores the candidates with every booster of every cut; the student's lookups are the fast
# CPU path, so its boosters have half the trees, which keep as much top-1 and more of its abstain
# setting's coverage (docs/rerank.md).
TREES_BY_ROLE = {"student": {"n_estimators": 50}}


def booster_params(role: str) -> dict:
    """LightGBM's parameters for the reranker of a model of this role."""
    return {**BOOSTER_PARAMS, **TREES_BY_ROLE.get(role, {})}


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
    keys: np.ndarray  # label row -> its rows in ``vectors`` and in the TF-IDF index, -1 padded
    fusion: dict  # the hybrid's fitted weight and exponent
    k: int = CANDIDATES_PER_CHANNEL

    @classmethod
    def build(cls, dense, candidates: Candidates, fusion: dict, k: int = CANDIDATES_PER_CHANNEL,
              lexical=None) -> FirstStage:
        """From a dense Searcher, the candidate tables its indexes hold and the hybrid's fitted fusion;
        ``lexical`` reuses a TF-IDF searcher over the same label keys."""
        labels = candidates.labels
        vectors, keys = label_vectors(dense.label_index)
        table = LabelTable.build(labels["label"], labels["websites"])
        acronyms = AcronymIndex(labels["label"], list(zip(table.initialisms, table.prefix_initialisms, strict=True)),
                                table.readings)
        return cls(dense.model, dense.label_index, lexical or lexical_searcher(candidates), acronyms, table, vectors,
                   keys, {"weight": fusion["weight"], "exponent": fusion["exponent"]}, k)

    @property
    def tfidf(self):
        """The TF-IDF index over the label keys (inside their KeyedIndex, when there is one)."""
        index = self.lexical.label_index
        return getattr(index, "index", index)

    def cosines(self, query: np.ndarray, tfidf_vector, translit_vector, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Exact dense and TF-IDF cosines of one alias to each candidate label, at the label's closer key,
        and the hybrid's fused score of the two. ``tfidf_vector``: the alias's TF-IDF vector;
        ``translit_vector``: its transliteration's, or None when transliterating changes nothing."""
        keys = self.keys[rows]
        safe = np.maximum(keys, 0).ravel()
        dense = np.einsum("ckd,d->ck", self.vectors[np.maximum(keys, 0)], query)
        out = {"cosine": np.where(keys >= 0, dense, -np.inf).max(axis=1)}
        for name, vector in (("tfidf_cosine", tfidf_vector), ("tfidf_cosine_translit", translit_vector)):
            if vector is None:
                out[name] = out["tfidf_cosine"]
                continue
            lexical = self.tfidf.cosines(vector, safe).reshape(keys.shape)
            out[name] = np.where(keys >= 0, lexical, 0.0).max(axis=1)
        w, p = self.fusion["weight"], self.fusion["exponent"]
        out["fused"] = w * out["cosine"] + (1 - w) * np.maximum(out["tfidf_cosine"], 0.0) ** p
        return {name: values.astype(np.float32) for name, values in out.items()}

    def candidates(self, aliases: list[str]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Per alias, its candidate label rows and their feature matrix."""
        # Each alias encoded and searched as it would be alone: its features, and so its answer and
        # confidence, are the same in any batch (``encode_alone``, ``search_alone``).
        embeddings = encode_alone(self.model, aliases, kind="query")
        # The aliases and their transliterations are vectorised in one call and searched in one, for the
        # channels and the features; an alias that transliterates to itself (plain ASCII) reuses its own.
        translits = [transliterate(alias) for alias in aliases]
        changed = [i for i, (alias, translit) in enumerate(zip(aliases, translits, strict=True))
                   if translit not in (None, alias)]
        vectors = self.tfidf.vectors(aliases + [translits[i] for i in changed])
        plain = vectors[:len(aliases)]
        translit_row = dict(zip(changed, range(len(aliases), len(aliases) + len(changed)), strict=True))
        found = self.lexical.label_index.search(vectors, self.k)
        tfidf = tuple(a[:len(aliases)] for a in found)
        tfidf_translit = tuple(a[:len(aliases)].copy() for a in found)
        if changed:
            tfidf_translit[0][changed], tfidf_translit[1][changed] = found[0][len(aliases):], found[1][len(aliases):]
        results = {"dense": search_alone(self.label_index, embeddings, self.k), "tfidf": tfidf,
                   "tfidf_query_translit": tfidf_translit, "acronym": self.acronym.search(aliases, self.k)}
        merged = union(results)
        rows, features = [], []
        for i, alias in enumerate(aliases):
            width = int((merged.rows[i] >= 0).sum())
            candidate_rows = merged.rows[i, :width]
            rows.append(candidate_rows)
            translit = vectors[translit_row[i]] if i in translit_row else None
            cosines = self.cosines(embeddings[i], plain[i], translit, candidate_rows)
            features.append(pair_features(alias, candidate_rows, cosines,
                                          {c: merged.scores[c][i, :width] for c in results},
                                          {c: merged.ranks[c][i, :width] for c in results}, self.table))
        return rows, features


TEMPERATURES = (0.25, 0.5, 1.0, 2.0)


@dataclass
class RerankSearcher:
    """Labels ranked by the reranker over the first stage's candidates, each scored by its share,
    and each alias's probability that its top answer is right.

    label -> alias search is not reranked: it is the hybrid's.
    """

    name: str
    first_stage: FirstStage
    boosters: list
    temperature: float
    features: list[str]
    reverse: object  # the hybrid searcher, for aliases_for
    confidence: list  # the fold classifiers of "the top answer is right"
    cross: CrossScorer | None = None  # for a reranker fitted with the cross-encoder's features

    def __post_init__(self):
        self.columns = [columns_of(self.cross).index(name) for name in self.features]

    def labels_with_confidence(self, aliases, k: int = 10):
        """(scores, label rows, abstain scores): the abstain setting reads each alias's probability
        that its top answer is right (``confidence.abstain_scores``)."""
        aliases = list(aliases)
        rows, matrices = self.candidate_features(aliases)
        raw = mean_raw(self.boosters, matrices, list(range(len(self.columns))))
        scores = np.zeros((len(aliases), k), dtype=np.float32)
        ids = np.full((len(aliases), k), -1, dtype=np.int64)
        for i, (candidate_rows, candidate_raw) in enumerate(zip(rows, raw, strict=True)):
            order = np.argsort(-candidate_raw, kind="stable")[:k]
            ids[i, :len(order)] = candidate_rows[order]
            if len(order):
                scores[i, :len(order)] = shares(candidate_raw, self.temperature)[order]
        probability = probabilities(self.confidence, top_answer_features(raw, matrices, self.temperature))
        return scores, ids, abstain_scores(probability)

    def candidate_features(self, aliases: list[str]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Per alias, its candidate label rows and their features in the columns the ranking models read."""
        rows, features = self.first_stage.candidates(aliases)
        if self.cross is not None:
            features = self.cross.extend(aliases, rows, features)
        return rows, [matrix[:, self.columns] for matrix in features]

    def labels_for(self, aliases, k: int = 10):
        return self.labels_with_confidence(aliases, k)[:2]

    def aliases_for(self, labels, k: int = 10):
        return self.reverse.aliases_for(labels, k)


def columns_of(cross: CrossScorer | None) -> list[str]:
    """The feature columns of the tables a reranker reads: the first stage's, and the cross-encoder's when it scores."""
    return FEATURES + CROSS_FEATURES if cross is not None else FEATURES


def training_table(first_stage: FirstStage, split: Split, part: str = "val", cross: CrossScorer | None = None):
    """Features, relevance (1 for the gold label, up to case and accents) and groups of one split's aliases."""
    return pairs_table(first_stage, split, split.pairs(part), cross)


def pairs_table(first_stage: FirstStage, split: Split, pairs, cross: CrossScorer | None = None):
    """``training_table`` for any (alias, label, qid) rows of the split, such as a sample of one part."""
    aliases = pairs["alias"].tolist()
    rows, features = first_stage.candidates(aliases)
    if cross is not None:
        features = cross.extend(aliases, rows, features)
    gold = split.label_classes[split.label_rows(pairs["label"])]
    relevance = [(classes_of(candidate_rows, split.label_classes) == g).astype(int)
                 for candidate_rows, g in zip(rows, gold, strict=True)]
    return rows, features, relevance, pairs["qid"].to_numpy()


def fit_boosters(features: list[np.ndarray], relevance: list[np.ndarray], columns: list[int], seed: int,
                 params: dict | None = None):
    """One LambdaRank model on the aliases whose gold label is among their candidates
    (``params``: LightGBM's, default ``BOOSTER_PARAMS``)."""
    import lightgbm

    useful = [i for i, rel in enumerate(relevance) if rel.any()]
    if not useful:
        raise UserError(f"none of the {len(relevance)} validation aliases a reranker fold learns from has its gold "
                        "label among its candidates, so it has nothing to learn; give validation more aliases "
                        "(--val-frac, e.g. 0.3, on prepare_data.py and train_alias_label.py alike) or each "
                        "channel more candidates (--rerank-candidates)")
    ranker = lightgbm.LGBMRanker(**(params or BOOSTER_PARAMS), random_state=seed)
    ranker.fit(np.vstack([features[i][:, columns] for i in useful]), np.concatenate([relevance[i] for i in useful]),
               group=[len(relevance[i]) for i in useful])
    return ranker.booster_


def out_of_fold(features, relevance, entities, columns: list[int], folds: int, seed: int,
                params: dict | None = None, repeats: int = 1) -> tuple[list, list]:
    """One booster per entity fold, fitted on the other folds, and each alias's candidate scores from
    the boosters that did not see it: ``repeats`` cuts into folds, each with its own seed, and an
    alias's score is the mean of its ``repeats`` out-of-fold boosters' scores."""
    raw, boosters = [np.zeros(len(m)) for m in features], []
    for repeat in range(repeats):
        cut_seed = seed + repeat * folds  # the boosters' seeds (cut_seed + fold) stay distinct across cuts
        fold = entity_folds(entities, folds, cut_seed)
        for f in range(folds):
            inside, held_out = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
            boosters.append(fit_boosters([features[i] for i in inside], [relevance[i] for i in inside], columns,
                                         cut_seed + f, params))
            for i, scores in zip(held_out, predict_each(boosters[-1], [features[i][:, columns] for i in held_out]),
                                 strict=True):
                raw[i] += scores / repeats
    return raw, boosters


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


def outcome_metrics(rows: list[np.ndarray], right: np.ndarray, gold_rank: np.ndarray) -> dict:
    found = gold_rank > 0
    return {"top1": float(right.mean()), "top10": float(np.mean(found & (gold_rank <= 10))),
            "mrr": float(np.mean(np.where(found, 1.0 / np.maximum(gold_rank, 1), 0.0))),
            "candidate_recall": float(found.mean()), "mean_candidates": float(np.mean([len(r) for r in rows])),
            "n": len(rows)}


def top_shares(raw: list[np.ndarray], temperature: float) -> np.ndarray:
    """Each query's two highest shares, 0 where it has no such candidate, in float32 as a lookup
    returns them: an abstain setting fitted on float64 shares would not hold at lookup, where every
    share within float32's rounding of 1 is 1."""
    top = np.zeros((len(raw), 2), dtype=np.float32)
    for i, scores in enumerate(raw):
        if len(scores):
            best = np.sort(shares(scores, temperature))[::-1][:2]
            top[i, :len(best)] = best
    return top


def fit_abstain_shares(raw: list[np.ndarray], right: np.ndarray, target_precision: float,
                       confidence: float) -> tuple[float, dict]:
    """The temperature, and its abstain setting, under which the setting keeps the most aliases.

    Of temperatures whose settings keep as many, the highest: at a low one the top shares crowd
    against 1, and a threshold there (0.9999) tells a user less than the same choice made where the
    shares are spread out.
    """
    fits = {t: fit_abstain(top_shares(raw, t), right, target_precision, confidence=confidence) for t in TEMPERATURES}
    temperature = max(fits, key=lambda t: (fits[t]["met_target"], fits[t]["val"]["coverage"] if fits[t]["met_target"]
                                           else fits[t]["val"]["precision"] or 0.0, t))
    return temperature, fits[temperature]


def fit_out_of_fold(table, features: list[str], target_precision: float, confidence: float, folds: int = FOLDS,
                    seed: int = 13, params: dict | None = None, columns_of: list[str] = FEATURES,
                    repeats: int = REPEATS, classifier_repeats: int = CLASSIFIER_REPEATS) -> dict:
    """The ranking model for one feature set: the mean of its fold boosters, with the temperature and
    the confidence classifiers fitted on their out-of-fold scores, and the abstain threshold on the
    classifiers' out-of-fold probabilities (``share_abstain``: the setting of share and margin, for
    comparison). ``columns_of`` names the table's feature columns, for a table that carries more
    than ``FEATURES``; ``repeats``: how many times validation is cut into folds (``out_of_fold``),
    ``classifier_repeats``: the same for the confidence classifiers.

    The fold boosters themselves rank at lookup time, not one model refitted on every alias: a
    refitted model's scores are spread differently from the out-of-fold ones, so an abstain setting
    fitted on the latter would not carry over to it.
    """
    rows, matrices, relevance, entities = table
    check_folds(entities)
    distinct = len(set(entities))
    columns = [columns_of.index(name) for name in features]
    raw, boosters = out_of_fold(matrices, relevance, entities, columns, min(folds, distinct), seed, params,
                                 repeats)
    _, right, gold_rank = ranked_outcome(raw, relevance)
    temperature, share_abstain = fit_abstain_shares(raw, right, target_precision, confidence)
    sure = fit_confidence(raw, [m[:, columns] for m in matrices], right, entities, temperature, target_precision,
                          confidence, min(folds, distinct), seed, classifier_repeats)
    return {"boosters": boosters, "temperature": temperature, "confidence": sure["boosters"],
            "abstain": sure["abstain"], "share_abstain": share_abstain, "probability": sure["probability"],
            "val": outcome_metrics(rows, right, gold_rank), "out_of_fold_raw": raw, "right": right}


def predict_each(booster, matrices: list[np.ndarray]) -> list[np.ndarray]:
    """The booster's score of every row of each matrix, from one call over all of them: each call
    costs LightGBM a fixed setup, most of the time one alias's few dozen candidates take. A row's
    score does not depend on the rows beside it."""
    sizes = [len(matrix) for matrix in matrices]
    if not sum(sizes):
        return [np.empty(0) for _ in matrices]
    return np.split(booster.predict(np.vstack(matrices)), np.cumsum(sizes)[:-1])


def mean_raw(boosters: list, matrices: list[np.ndarray], columns: list[int]) -> list[np.ndarray]:
    """Each alias's candidate scores from the mean of the boosters, as a lookup ranks them."""
    selected = [m[:, columns] for m in matrices]
    scores = [predict_each(booster, selected) for booster in boosters]
    return [np.mean([each[i] for each in scores], axis=0) if len(m) else np.empty(0)
            for i, m in enumerate(selected)]


def table_probabilities(fitted: dict, matrices: list[np.ndarray], columns: list[int],
                        raw: list[np.ndarray]) -> np.ndarray:
    """The fitted confidence classifiers' probability that each alias's top answer is right."""
    return probabilities(fitted["confidence"], top_answer_features(raw, [m[:, columns] for m in matrices],
                                                                    fitted["temperature"]))


def score_table(fitted: dict, table, features: list[str], columns_of: list[str] = FEATURES) -> dict:
    """The fitted model's ranking of a table's aliases: metrics and the abstain setting's quality
    (``share_abstain``: that of share and margin)."""
    rows, matrices, relevance, _ = table
    columns = [columns_of.index(name) for name in features]
    raw = mean_raw(fitted["boosters"], matrices, columns)
    _, right, gold_rank = ranked_outcome(raw, relevance)
    probability = table_probabilities(fitted, matrices, columns, raw)
    return {**outcome_metrics(rows, right, gold_rank),
            "abstain": abstain_quality(abstain_scores(probability), right, fitted["abstain"]),
            "share_abstain": abstain_quality(top_shares(raw, fitted["temperature"]), right, fitted["share_abstain"])}


def fit_reranker(first_stage: FirstStage, split: Split, model_dir: Path, role: str, target_precision: float,
                 confidence: float, features: list[str] | None = None, folds: int = FOLDS, seed: int = 13,
                 cross: CrossScorer | None = None, repeats: int = REPEATS) -> dict:
    """Fit the reranker's fold models on validation, its temperature and abstain out of fold; save it.

    With ``cross``, the cross-encoder's features join the first stage's (by default all of them).
    Returns the sidecar: out-of-fold validation figures, the abstain setting, and what was checked.
    """
    import lightgbm

    columns = columns_of(cross)
    features = list(features or columns)
    params = booster_params(role)
    fitted = fit_out_of_fold(training_table(first_stage, split, "val", cross), features, target_precision,
                             confidence, folds, seed, params, columns, repeats)
    abstain, val = fitted["abstain"], fitted["val"]
    texts = {BOOSTERS_FILE: boosters_text(fitted["boosters"]), CONFIDENCE_FILE: boosters_text(fitted["confidence"])}
    for name, text in texts.items():
        with atomic_path(Path(model_dir) / name) as tmp:
            tmp.write_text(text, encoding="utf-8")
    sidecar = {"role": role, "features": features, "feature_groups": {g: [f for f in names if f in features]
                                                                      for g, names in GROUPS.items()},
               "fitted_on": "val", "folds": folds, "repeats": repeats, "candidates_per_channel": first_stage.k,
               "data_fingerprint": split.fingerprint, "model_fingerprint": model_fingerprint(model_dir),
               "boosters_sha256": sha256(texts[BOOSTERS_FILE]), "confidence_sha256": sha256(texts[CONFIDENCE_FILE]),
               "lightgbm": lightgbm.__version__, "booster_params": params, "confidence_params": CLASSIFIER_PARAMS,
               "confidence_repeats": CLASSIFIER_REPEATS,
               "cross_encoder": cross.fingerprint if cross is not None else None,
               "temperature": fitted["temperature"],
               "abstain": abstain, "val_out_of_fold": val}
    write_json(Path(model_dir) / RERANKER_FILE, sidecar)
    log.info("%s reranker%s: val top1 %.4f out of fold (candidates hold the gold label for %.4f); abstain below "
             "a probability of %.3f that the top answer is right -> val precision %.3f, coverage %.3f%s", role,
             "" if cross is None else " with the cross-encoder", val["top1"], val["candidate_recall"],
             abstain["threshold"], abstain["val"]["precision"] or 0.0, abstain["val"]["coverage"],
             "" if abstain["met_target"] else TARGET_MISSED)
    return sidecar


def refit_changes(sidecar: dict, role: str, cross_fingerprint: str | None, candidates_per_channel: int,
                  target_precision: float, confidence: float) -> list[str]:
    """What a refit with these settings, this cross-encoder (or none) and this code would change in a
    fitted reranker's sidecar: empty when it would fit the same."""
    expected = {"features": FEATURES + CROSS_FEATURES if cross_fingerprint else FEATURES,
                "cross_encoder": cross_fingerprint, "candidates_per_channel": candidates_per_channel,
                "folds": FOLDS, "repeats": REPEATS, "booster_params": booster_params(role),
                "confidence_params": CLASSIFIER_PARAMS, "confidence_repeats": CLASSIFIER_REPEATS}
    found = [key for key, value in expected.items() if sidecar.get(key) != value]
    abstain = sidecar.get("abstain", {})
    return found + [f"abstain {key}" for key, value in {"target_precision": target_precision,
                                                        "confidence": confidence}.items() if abstain.get(key) != value]


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def load_reranker(model_dir: Path, data_fingerprint: str, fix: str) -> tuple[dict, list, list]:
    """The sidecar, ranking models and confidence classifiers of a model's reranker, checked against
    the model, the data and the code."""
    import lightgbm

    model_dir = Path(model_dir)
    files = [model_dir / name for name in (RERANKER_FILE, BOOSTERS_FILE, CONFIDENCE_FILE)]
    if not all(path.exists() for path in files):
        raise UserError(f"{model_dir} has no reranker, or only part of one ({', '.join(p.name for p in files)}). "
                        f"Fit it with: {fix}")
    sidecar_file = files[0]
    sidecar = read_json(sidecar_file)
    text, confidence_text = (path.read_text(encoding="utf-8") for path in files[1:])
    checks = {"model_fingerprint": model_fingerprint(model_dir), "data_fingerprint": data_fingerprint,
              "boosters_sha256": sha256(text), "confidence_sha256": sha256(confidence_text)}
    for key, expected in checks.items():
        if sidecar.get(key) != expected:
            raise UserError(f"{sidecar_file} does not match its {key.split('_')[0]} (stale or damaged). "
                            f"Refit it with: {fix}")
    unknown = set(sidecar["features"]) - set(FEATURES + CROSS_FEATURES)
    if unknown:
        raise UserError(f"{sidecar_file} uses features this version does not compute ({sorted(unknown)}). "
                        f"Refit it with: {fix}")
    if sidecar["lightgbm"] != lightgbm.__version__:
        log.warning("%s was fitted with lightgbm %s, this is %s", sidecar_file, sidecar["lightgbm"],
                    lightgbm.__version__)
    return sidecar, boosters_from_text(text), boosters_from_text(confidence_text)
