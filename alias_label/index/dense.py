"""FAISS indexes over unit vectors, each with a JSON sidecar that describes it.

Vectors are unit-normalised, so the inner product an ``IndexFlatIP`` ranks by is the cosine
similarity; exact flat search is the reference every other index is judged by. Readers check the
sidecar (data fingerprint, model, row count) and fail with the command that rebuilds the
artifact, rather than silently answering from a stale or damaged index.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from alias_label.errors import UserError
from alias_label.io import atomic_path, read_json, write_json

log = logging.getLogger(__name__)


def sidecar_path(artifact: Path) -> Path:
    return Path(f"{artifact}.json")


INDEX_TYPES = ("flat", "hnsw", "ivf", "ivfpq")


QUANTIZATIONS = ("none", "int8", "int4", "binary")


# FAISS's own BLAS threshold: below it a search runs per-query code, where a second OpenMP thread
# only contends for the cores with torch's threads, still spinning after the encode (docs/speed.md).
FEW_QUERIES = 20


# From this many rows a plain flat index answers a few queries through its int8 prefilter
# (Int8Prefilter): below it the float32 rows still sit in this CPU's caches and a scan is as fast.
PREFILTER_MIN_ROWS = 20_000


@contextlib.contextmanager
def faiss_threads(count: int):
    """FAISS's OpenMP thread count set for a block, then restored."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(count)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def add_index_args(parser) -> None:
    """The index flags of every script that writes FAISS indexes."""
    group = parser.add_argument_group("index")
    group.add_argument("--index", default="flat", choices=INDEX_TYPES,
                       help="flat: exact; hnsw, ivf: approximate, for millions of rows; ivfpq: approximate and "
                            "compressed (default: flat)")
    group.add_argument("--quantize", default="none", choices=QUANTIZATIONS,
                       help="store flat/hnsw/ivf vectors as int8 (1/4 of the memory), int4 (1/8) or sign bits (1/32) "
                            "(default: none)")
    group.add_argument("--rescore", type=int, default=None,
                       help="rerank R x k compressed candidates by exact cosine from float32 vectors kept on disk "
                            "(default: 4 for compressed indexes, else 0)")
    group.add_argument("--label-keys", default="transliterated", choices=["transliterated", "label"],
                       help="transliterated: index each non-Latin label under its text and its transliteration "
                            "(unidecode), found by the closer one; label: its text only (default: transliterated)")
    group.add_argument("--index-param", action="append", default=[], metavar="KEY=VALUE",
                       help="override a scaled parameter: nlist, nprobe, hnsw_m, ef_construction, ef_search, pq_m; "
                            "repeatable")


def spec_from_args(args, n: int, d: int) -> IndexSpec:
    overrides = {}
    for item in args.index_param:
        key, sep, value = item.partition("=")
        if not sep or not value.strip().isdigit():
            raise UserError(f"--index-param {item!r}: expected KEY=INTEGER, e.g. nprobe=32")
        overrides[key.strip()] = int(value)
    return IndexSpec.scaled(n, d, args.index, args.quantize, args.rescore, **overrides)


@dataclass
class IndexSpec:
    """Which FAISS structure holds the vectors, and its parameters; recorded in every sidecar.

    flat is exact. hnsw (a graph) and ivf (k-means cells, ``nprobe`` of ``nlist`` searched) are
    approximate; ivfpq also compresses each vector to ``pq_m`` bytes. ``quantize`` stores flat,
    hnsw or ivf vectors as int8 (a quarter of float32), int4 (an eighth) or sign bits (1/32). With ``rescore`` R, a
    search takes R x k candidates from the compressed index and reranks them by exact cosine
    against the float32 vectors, which stay on disk as a memory map.
    """

    kind: str = "flat"
    quantize: str = "none"
    nlist: int = 0
    nprobe: int = 0
    hnsw_m: int = 0
    ef_construction: int = 0
    ef_search: int = 0
    pq_m: int = 0
    pq_bits: int = 0
    rescore: int = 0

    @classmethod
    def scaled(cls, n: int, d: int, kind: str = "flat", quantize: str = "none", rescore: int | None = None,
               **overrides) -> IndexSpec:
        """Parameters that grow with the number of vectors, from the benchmark in benchmarks/index_scale.py."""
        if kind not in INDEX_TYPES or quantize not in QUANTIZATIONS:
            raise UserError(f"--index {kind} / --quantize {quantize}: choose --index from {INDEX_TYPES} and "
                            f"--quantize from {QUANTIZATIONS}")
        if kind == "ivfpq" and quantize != "none":
            raise UserError("--index ivfpq already compresses each vector; leave --quantize at none")
        spec = cls(kind=kind, quantize=quantize)
        if kind in ("ivf", "ivfpq"):
            # FAISS's guidance: about 4 sqrt(n) cells, each with at least 39 training points.
            spec.nlist = int(max(1, min(2 ** round(np.log2(4 * np.sqrt(max(n, 1)))), n // 39)))
            # On the real label set, nprobe = nlist / 4 is what reaches recall@10 0.95 (benchmarks/README.md).
            spec.nprobe = int(min(spec.nlist, max(16, spec.nlist // 4)))
        if kind == "hnsw":
            # benchmarks/hnsw_ef_sweep.py: a small efSearch keeps recall@10 up to 100k rows, while 1M rows
            # need 1024 for 0.95.
            spec.hnsw_m, spec.ef_construction, spec.ef_search = 32, 80, 128 if n <= 200_000 else 1024
        if kind == "ivfpq":
            spec.pq_m = next(m for m in (d // 8, d // 4, d // 2, d) if m and d % m == 0)
            # Each 2^bits-word codebook needs a few training points per word: fewer bits for tiny tables.
            spec.pq_bits = int(min(8, max(1, np.log2(max(n, 2) / 4))))
        compressed = kind == "ivfpq" or quantize != "none"
        spec.rescore = (4 if compressed else 0) if rescore is None else rescore
        for key, value in overrides.items():
            if not hasattr(spec, key):
                raise UserError(f"unknown index parameter {key!r}; known: {sorted(asdict(spec))}")
            setattr(spec, key, int(value))
        return spec

    def factory(self) -> str:
        """The FAISS index_factory string (binary indexes use index_binary_factory)."""
        if self.quantize == "binary":
            return {"flat": "BFlat", "hnsw": f"BHNSW{self.hnsw_m}", "ivf": f"BIVF{self.nlist}"}[self.kind]
        storage = {"int8": "SQ8", "int4": "SQ4"}.get(self.quantize, "Flat")
        return {"flat": storage, "hnsw": f"HNSW{self.hnsw_m},{storage}", "ivf": f"IVF{self.nlist},{storage}",
                "ivfpq": f"IVF{self.nlist},PQ{self.pq_m}x{self.pq_bits}"}[self.kind]


class DenseIndex:
    """A FAISS index over unit vectors, searched by cosine, with optional exact rescoring."""

    def __init__(self, index, spec: IndexSpec, dim: int, vectors: np.ndarray | None = None):
        self.index, self.spec, self.d, self.vectors = index, spec, dim, vectors
        self._prefilter = None

    @classmethod
    def empty(cls, dim: int, spec: IndexSpec) -> DenseIndex:
        import faiss

        if spec.quantize == "binary":
            index = faiss.index_binary_factory(dim, spec.factory())
        else:
            index = faiss.index_factory(dim, spec.factory(), faiss.METRIC_INNER_PRODUCT)
        if spec.kind == "hnsw":
            index.hnsw.efConstruction = spec.ef_construction
        dense = cls(index, spec, dim)
        dense.set_search_parameters()
        return dense

    def set_search_parameters(self) -> None:
        if self.spec.kind == "hnsw":
            self.index.hnsw.efSearch = self.spec.ef_search
        if self.spec.kind in ("ivf", "ivfpq"):
            self.index.nprobe = self.spec.nprobe

    @property
    def ntotal(self) -> int:
        return self.index.ntotal

    @property
    def needs_training(self) -> bool:
        return not self.index.is_trained

    def _stored(self, vectors: np.ndarray) -> np.ndarray:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        return np.packbits(vectors > 0, axis=1) if self.spec.quantize == "binary" else vectors

    def train(self, sample: np.ndarray) -> None:
        self.index.train(self._stored(sample))

    def add(self, vectors: np.ndarray) -> None:
        self.index.add(self._stored(vectors))
        self._prefilter = None  # its int8 copy and its view of the rows are of the rows before

    @property
    def prefiltered(self) -> bool:
        """Whether a few queries at a time go through ``Int8Prefilter`` (exact, and faster on large tables)."""
        return self.spec.kind == "flat" and self.spec.quantize == "none" and self.ntotal >= PREFILTER_MIN_ROWS

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (cosine scores, row ids), best first; k is capped at the index size."""
        k = min(k, self.ntotal)
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if len(queries) < FEW_QUERIES and self.prefiltered:
            self._prefilter = self._prefilter or Int8Prefilter(self.index)
            with faiss_threads(1):
                return self._prefilter.search(queries, k)
        fetch = min(self.ntotal, k * self.spec.rescore) if self.spec.rescore and self.vectors is not None else k
        with faiss_threads(1) if len(queries) < FEW_QUERIES else contextlib.nullcontext():
            scores, ids = self.index.search(self._stored(queries), fetch)
        if self.spec.quantize == "binary":
            # Hamming distance between sign bits estimates the angle: cos(pi * h / d) (SimHash).
            scores = np.cos(np.pi * scores.astype(np.float32) / self.d)
        if fetch > k:
            scores, ids = self._rescore(queries, ids, k)
        return scores, ids

    def _rescore(self, queries: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        safe = np.where(ids < 0, 0, ids)
        exact = np.einsum("qd,qcd->qc", queries, np.asarray(self.vectors[safe.ravel()]).reshape(*safe.shape, -1))
        exact = np.where(ids < 0, -np.inf, exact)
        order = np.argsort(-exact, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(exact, order, axis=1).astype(np.float32), np.take_along_axis(ids, order, axis=1)


def search_alone(index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``index.search``, each query getting the scores it gets when searched alone.

    FAISS scores many queries with one matrix product and a few with per-query code, which round
    differently in the last bits, and a flat index answers a few queries through its int8
    prefilter: so queries go in runs of fewer than ``FEW_QUERIES``, the path a single query takes.
    ``index``: a DenseIndex or a KeyedIndex over one.
    """
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if len(queries) < FEW_QUERIES:
        return index.search(queries, k)
    found = [index.search(queries[start:start + FEW_QUERIES - 1], k)
             for start in range(0, len(queries), FEW_QUERIES - 1)]
    return np.vstack([scores for scores, _ in found]), np.vstack([ids for _, ids in found])


class Int8Prefilter:
    """Exact flat search for a few queries that first reads int8 copies of the rows (a quarter of the bytes).

    One query's flat search reads every float32 row, and a table larger than the CPU's caches is
    read at memory speed. Here each dimension is scaled by
    s_d to span [-1, 1] and the rows are stored in FAISS's 8-bit scalar quantiser with one range
    for all dimensions (``QT_8bit_uniform``, the fastest of its scans that keeps the query in
    float32); the query is divided by the same s_d, and the best ``fetch`` rows by that int8 score
    are rescored in float32. A row's int8 score is within ``sum_d |q_d| e_d`` of its float32 score,
    e_d being the largest rounding error in dimension d over all rows, so once the lowest int8
    score fetched, plus that bound, is below the k-th float32 score, no row left out can reach the
    top k: the answer is flat search's, with equal scores in row order (FAISS's own search leaves
    them in its heap's order, which batches keep: the evaluator's metrics are computed on
    batches). A query for which that is not proven is searched flat; ``fallbacks`` counts them.
    """

    # Both scores are float32 sums of d products; their rounding stays far below this.
    SLACK = 1e-4

    def __init__(self, flat_index):
        import faiss

        n, d = flat_index.ntotal, flat_index.d
        self.flat = flat_index
        self.vectors = faiss.rev_swig_ptr(flat_index.get_xb(), n * d).reshape(n, d)
        self.scale = 1 / np.maximum(np.abs(self.vectors).max(axis=0), np.finfo(np.float32).tiny)
        scaled = self.vectors * self.scale
        self.int8 = faiss.IndexScalarQuantizer(d, faiss.ScalarQuantizer.QT_8bit_uniform, faiss.METRIC_INNER_PRODUCT)
        self.int8.train(scaled)
        self.int8.add(scaled)
        self.error = np.abs(self.int8.sa_decode(self.int8.sa_encode(scaled)) - scaled).max(axis=0) / self.scale
        self.fallbacks = 0

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        n = self.flat.ntotal
        fetch = min(n, max(4 * k, 64))
        int8_scores, ids = self.int8.search(np.ascontiguousarray(queries / self.scale, dtype=np.float32), fetch)
        exact = np.einsum("qd,qcd->qc", queries, self.vectors[ids])
        scores, ids = _best_first(exact, ids, k)
        proven = (fetch == n) | (int8_scores[:, -1] + np.abs(queries) @ self.error + self.SLACK < scores[:, -1])
        if not proven.all():
            self.fallbacks += int((~proven).sum())
            flat_scores, flat_ids = self.flat.search(queries[~proven], k)
            scores[~proven], ids[~proven] = _best_first(flat_scores, flat_ids, k)
        return scores, ids


def _best_first(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's k best (score, id), by score and then by id, so that equal scores come in row order."""
    order = np.lexsort((ids, -scores), axis=1)[:, :k]
    return np.take_along_axis(scores, order, axis=1).astype(np.float32), np.take_along_axis(ids, order, axis=1)


class KeyedIndex:
    """An index whose rows are keys of fewer entries (a label under its own text and its
    transliteration); search returns entries, each at the score of its best key."""

    def __init__(self, index, entry_of_key: np.ndarray):
        self.index, self.entry_of_key = index, np.asarray(entry_of_key, dtype=np.int64)
        self.ntotal = int(self.entry_of_key.max()) + 1 if len(self.entry_of_key) else 0
        self.keys_per_entry = int(np.bincount(self.entry_of_key).max()) if len(self.entry_of_key) else 1

    def search(self, queries, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, entry ids), best first; asks the index for enough keys to fill k entries."""
        k = min(k, self.ntotal)
        scores, keys = self.index.search(queries, k * self.keys_per_entry)
        entries = np.where(keys < 0, -1, self.entry_of_key[np.maximum(keys, 0)])
        # Keys come best first, so a stable sort by entry puts each entry's best key first; the rest go.
        by_entry = np.argsort(entries, axis=1, kind="stable")
        sorted_entries = np.take_along_axis(entries, by_entry, axis=1)
        repeat = np.zeros_like(sorted_entries, dtype=bool)
        repeat[:, 1:] = sorted_entries[:, 1:] == sorted_entries[:, :-1]
        drop = np.empty_like(repeat)
        np.put_along_axis(drop, by_entry, repeat, axis=1)
        scores = np.where(drop | (entries < 0), -np.inf, scores)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        kept = np.take_along_axis(scores, order, axis=1)
        return kept.astype(np.float32), np.where(np.isinf(kept), -1, np.take_along_axis(entries, order, axis=1))


def build_index(embeddings: np.ndarray, spec: IndexSpec | None = None) -> DenseIndex:
    """An index over all rows at once; exact flat search unless ``spec`` says otherwise."""
    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    spec = spec or IndexSpec()
    index = DenseIndex.empty(embeddings.shape[1], spec)
    if index.needs_training:
        index.train(training_sample(embeddings, spec))
    index.add(embeddings)
    if spec.rescore:
        index.vectors = embeddings
    return index


def training_rows(n: int, spec: IndexSpec) -> int:
    """Enough rows to train the cells and codebooks (64 per cell), never all of a huge table."""
    return min(n, max(64 * max(spec.nlist, 1), 10_000), 100_000)


def training_sample(embeddings: np.ndarray, spec: IndexSpec, seed: int = 0) -> np.ndarray:
    rows = training_rows(len(embeddings), spec)
    pick = np.sort(np.random.default_rng(seed).choice(len(embeddings), rows, replace=False))
    return np.ascontiguousarray(embeddings[pick], dtype=np.float32)


def vectors_path(target: Path) -> Path:
    """Where the float32 vectors of a rescored index live, beside it."""
    return Path(f"{target}.vectors.npy")


def save_index(index: DenseIndex, target: Path, meta: dict) -> None:
    """Write the index (and its rescoring vectors), then its sidecar; the sidecar marks a complete set."""
    import faiss

    if meta.get("rows") != index.ntotal or len(meta.get("texts", [])) != index.ntotal:
        raise ValueError(f"sidecar describes {meta.get('rows')} rows, index holds {index.ntotal}")
    _drop_sidecar(target)
    binary = index.spec.quantize == "binary"
    with atomic_path(target) as tmp:
        (faiss.write_index_binary if binary else faiss.write_index)(index.index, str(tmp))
    rescored = bool(index.spec.rescore and index.vectors is not None)
    # Vectors streamed straight into their final file (scripts/build_index.py) need no copy.
    in_place = isinstance(index.vectors, np.memmap) and Path(index.vectors.filename) == vectors_path(target).resolve()
    if rescored and not in_place:
        with atomic_path(vectors_path(target)) as tmp, open(tmp, "wb") as handle:
            np.save(handle, np.asarray(index.vectors, dtype=np.float32))
    write_json(sidecar_path(target), {"index_type": index.spec.kind, "index_spec": asdict(index.spec),
                                      "factory": index.spec.factory(), "metric": "inner_product",
                                      "normalized": True, "dim": index.d,
                                      "vectors_file": vectors_path(target).name if rescored else None, **meta})
    log.info("wrote %s (%d x %d, %s)", target, index.ntotal, index.d, index.spec.factory())


def load_index(path: Path, fix_command: str, data_fingerprint: str | None = None) -> tuple[DenseIndex, dict]:
    """Load an index and its sidecar, checking they match each other and the expected split."""
    import faiss

    path = Path(path)
    meta_path = sidecar_path(path)
    if not path.exists() or not meta_path.exists():
        raise UserError(f"index not found: {path}{'' if meta_path.exists() else ' (or its sidecar)'}. "
                        f"Build it with: {fix_command}")
    try:
        meta = read_json(meta_path)
    except ValueError:
        raise UserError(f"{meta_path} is damaged (not JSON). Rebuild the index with: {fix_command}") from None
    if data_fingerprint is not None and meta.get("data_fingerprint") != data_fingerprint:
        raise UserError(f"{path} was built for data split {meta.get('data_fingerprint')}, but the current split "
                        f"is {data_fingerprint}. Rebuild it with: {fix_command}")
    spec = IndexSpec(**meta.get("index_spec", {"kind": meta.get("index_type", "flat")}))
    try:
        raw = (faiss.read_index_binary if spec.quantize == "binary" else faiss.read_index)(str(path))
    except RuntimeError:
        # faiss raises RuntimeError with its C++ assertion text for a truncated or overwritten file.
        raise UserError(f"{path} is damaged (truncated or not a FAISS index) and cannot be read. "
                        f"Rebuild it with: {fix_command}") from None
    vectors = None
    if meta.get("vectors_file"):
        vectors_file = path.parent / meta["vectors_file"]
        if not vectors_file.exists():
            raise UserError(f"{path} reranks with {vectors_file}, which is missing. Rebuild it with: {fix_command}")
        vectors = np.load(vectors_file, mmap_mode="r")
    index = DenseIndex(raw, spec, meta["dim"], vectors)
    index.set_search_parameters()
    if index.ntotal != meta["rows"] or (vectors is not None and len(vectors) != meta["rows"]):
        raise UserError(f"{path} holds {index.ntotal} rows but its sidecar says {meta['rows']}; "
                        f"the pair is inconsistent. Rebuild it with: {fix_command}")
    return index, meta


def _drop_sidecar(target: Path) -> None:
    """Remove the old sidecar first: a crash before the new one is written then reads as 'missing',
    never as an old description of new content."""
    sidecar_path(target).unlink(missing_ok=True)
