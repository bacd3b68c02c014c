"""TF-IDF over character n-grams (scikit-learn): the string-matching baseline and the hybrid's lexical side.

Many aliases share characters with their label ("Univ. of X" / "University of X"), which is
why this baseline is strong and every embedding system is compared against it.
"""

from __future__ import annotations

import numpy as np


class TfidfIndex:
    """Cosine top-k over TF-IDF character n-gram vectors of a fixed list of texts."""

    def __init__(self, texts, ngram_range=(2, 4), chunk_rows: int = 512):
        from sklearn.feature_extraction.text import TfidfVectorizer

        # char_wb keeps n-grams inside word boundaries, so word order matters less than in plain char n-grams.
        self.vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=ngram_range, lowercase=True,
                                          sublinear_tf=True, dtype=np.float32)
        matrix = self.vectorizer.fit_transform(list(texts))
        self.ntotal = matrix.shape[0]
        # Transposed once, here: ``query @ matrix.T`` would convert the whole matrix on every call,
        # most of a one-alias search's time.
        self.term_by_text = matrix.T.tocsr()
        self.text_by_term = matrix.tocsr()
        self.chunk_rows = chunk_rows

    def vectors(self, texts):
        """The TF-IDF vectors of ``texts``, one sparse row each: what ``search`` and ``cosines`` also take."""
        from sklearn import config_context

        # A lookup vectorises one alias or two, where scikit-learn's checks of its own parameters and
        # of finite values (which text cannot fail) are a good part of the time.
        with config_context(assume_finite=True, skip_parameter_validation=True):
            return self.vectorizer.transform(list(texts))

    def cosines(self, query_vector, rows: np.ndarray) -> np.ndarray:
        """The exact TF-IDF cosine of one query (its ``vectors`` row) to each of the given rows."""
        return (self.text_by_term[rows] @ query_vector.T).toarray()[:, 0]

    def all_cosines(self, queries) -> np.ndarray:
        """Each query's (CSR rows) cosine to every text, as a dense (queries x texts) float32 array.

        A query reads only the rows of its own n-grams, each weighted by its value: the sums of a
        sparse product of the query and the whole matrix, in the same order and so to the same
        float32 values, without building that product as a sparse matrix first, which took most
        of the time.
        """
        out = np.empty((queries.shape[0], self.ntotal), dtype=np.float32)
        for i in range(queries.shape[0]):
            start, end = queries.indptr[i], queries.indptr[i + 1]
            out[i] = self.term_by_text[queries.indices[start:end]].T @ queries.data[start:end]
        return out

    def search(self, queries, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, row ids) shaped like a FAISS search, best first; rows are L2-normalised, so dot = cosine.

        ``queries`` are texts, or their ``vectors`` when the caller has them already.
        """
        from scipy.sparse import issparse

        k = min(k, self.ntotal)
        query_matrix = (queries if issparse(queries) else self.vectors(queries)).tocsr()
        all_scores, all_ids = [], []
        for start in range(0, query_matrix.shape[0], self.chunk_rows):
            block = self.all_cosines(query_matrix[start:start + self.chunk_rows])
            ids = np.argpartition(-block, k - 1, axis=1)[:, :k]
            scores = np.take_along_axis(block, ids, axis=1)
            order = np.argsort(-scores, axis=1, kind="stable")
            all_ids.append(np.take_along_axis(ids, order, axis=1))
            all_scores.append(np.take_along_axis(scores, order, axis=1))
        return np.vstack(all_scores), np.vstack(all_ids)
