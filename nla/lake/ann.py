"""The ANN index over the activations' vectors (faiss): built once, extended by segments, searched with a rerank.

An index is a trained, empty faiss index (IVF-PQ over unit vectors, inner product = cosine; below `flat_below` rows
an exact flat index, since IVF needs data to train) plus segments. Each segment encodes the rows of some of the
table's data files and keeps those rows' stored vectors byte for byte (.vec, random access), so the index proposes
`rerank` candidates from compressed codes and the answer ranks them by their exact cosine: the similarities it
returns are the exact ones. Delta data files never change, so "which files a segment holds" says exactly which rows
it knows: `update_index` encodes only the files the table gained, and a search masks rows whose files are not in the
snapshot it reads (time travel, replaced shards). Publishing is index_files.py's job; combining the index with an
exact scan of unindexed files is search.py's. This module never writes Delta tables.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from nla.errors import NLALakeError
from nla.lake.index_files import IndexFiles, Manifest, Segment
from nla.lake.schema import vectors_from_arrow
from nla.schemas import ACTIVATIONS

A = ACTIVATIONS.col


@dataclass(frozen=True)
class IndexParams:
    flat_below: int = 20_000  # fewer rows than this at the first build: an exact flat index (no training)
    pca_dims: int = 256  # project unit vectors onto their top principal components first (0 or >= d: no PCA)
    nlist: int = 0  # IVF lists; 0 = sqrt(rows) rounded to a power of two (16..4096)
    pq_dsub: int = 4  # dimensions per PQ sub-quantizer: m = dims / pq_dsub bytes of code a vector (64 after PCA256)
    train_rows: int = 40_000  # rows sampled across the whole table to train PCA, the coarse quantizer and PQ
    train_iters: int = 10  # k-means iterations for the coarse quantizer
    nprobe: int = 0  # IVF lists visited per search; 0 = nlist / 8 (at least 32)
    rerank: int = 200  # candidates the codes propose; the exact cosine of their stored vectors ranks them
    batch_rows: int = 16_384  # rows encoded per step while building (bounded memory)


@dataclass
class IndexReport:
    table_version: int
    kind: str
    rows_added: int
    rows_indexed: int
    segments: int
    seconds: float
    note: str  # what happened, in words ("added 2 shards", "already covers version 7", ...)


def update_index(lake: Any, *, params: IndexParams | None = None, rebuild: bool = False,
                 progress: bool = False) -> IndexReport:
    """Bring the activations index up to the table's latest version: encode the data files it lacks as one new
    segment and publish. The first build (or `rebuild`, or a flat index whose table has outgrown it) trains anew."""
    from nla.lake.search import table_dataset

    t0 = time.perf_counter()
    files = IndexFiles(lake, ACTIVATIONS.name)
    dataset, version = table_dataset(lake, ACTIVATIONS.name)
    d = dataset.schema.field(A.vector).type.list_size
    dtype = lake.layout(ACTIVATIONS.name).get("vector_dtype", "float32")
    frags = {f.path: f for f in dataset.get_fragments()}
    old = None if rebuild else files.manifest()
    total = sum(f.count_rows() for f in frags.values())
    if old is not None and (old.d != d or old.vector_dtype != dtype or
                            (old.kind == "flat" and total >= old.params["flat_below"])):
        old = None  # another width or dtype (a recreated table), or a flat index outgrown: train anew
    if old is None:
        params = params or IndexParams()
        old = _train(files, dataset, list(frags.values()), total, d=d, dtype=dtype, params=params, version=version,
                     progress=progress)
    params = IndexParams(**old.params)
    new = [p for p in sorted(frags) if p not in old.files()]
    if not new and old.table_version == version and old.seq:
        return IndexReport(version, old.kind, 0, old.rows, len(old.segments), time.perf_counter() - t0,
                           f"already covers activations version {version}")
    segment = _encode(files, old, [frags[p] for p in new], dataset.schema, params, progress=progress) if new else None
    manifest = Manifest(**{**asdict(old), "table_version": version,
                           "segments": old.segments + ([segment] if segment else [])})
    manifest.segments = [s if isinstance(s, Segment) else Segment(**s) for s in manifest.segments]
    files.publish(manifest)
    added = segment.rows if segment else 0
    return IndexReport(version, manifest.kind, added, manifest.rows, len(manifest.segments),
                       time.perf_counter() - t0, f"added {len(new)} data files ({added:,} rows)")


def update_index_if_present(lake: Any) -> IndexReport | None:
    """After a job commits shards: extend the index if the lake has one (a first build is `nla index`'s call)."""
    if IndexFiles(lake, ACTIVATIONS.name).manifest() is None:
        return None
    return update_index(lake)


def _train(files: IndexFiles, dataset: Any, frags: list[Any], total: int, *, d: int, dtype: str,
           params: IndexParams, version: int, progress: bool) -> Manifest:
    import faiss

    if total < params.flat_below:
        kind, index = "flat", faiss.IndexFlatIP(d)
    else:
        kind = "ivfpq"
        nlist = params.nlist or int(min(4096, max(16, 2 ** round(math.log2(math.sqrt(total))))))
        nlist = min(nlist, max(1, params.train_rows // 39))
        dims = params.pca_dims if 0 < params.pca_dims < d else d
        m = max(x for x in range(1, dims + 1) if dims % x == 0 and dims // x >= min(params.pq_dsub, dims))
        params = IndexParams(**{**asdict(params), "nlist": nlist, "nprobe": params.nprobe or max(32, nlist // 8)})
        factory = (f"PCA{dims}," if dims < d else "") + f"IVF{nlist},PQ{m}"
        # L2 between unit vectors ranks as cosine does (|x - q|^2 = 2 - 2 cos), and PCA keeps L2 meaningful
        index = faiss.index_factory(d, factory, faiss.METRIC_L2)
        ivf = faiss.downcast_index(faiss.extract_index_ivf(index))  # IndexIVFPQ
        ivf.cp.niter = params.train_iters
        ivf.do_polysemous_training = False  # the factory's default: slow, and only serves Hamming filtering
        sample = _sample(frags, dataset.schema, total, params, progress=progress)  # (train_rows, d) unit vectors
        _say(progress, f"training {factory} on {len(sample):,} rows")
        index.train(sample)
        del sample
    trained = files.new_name("trained") + ".faiss"
    files.write_bytes(trained, faiss.serialize_index(index).tobytes())
    return Manifest(table=ACTIVATIONS.name, table_version=version, d=d, vector_dtype=dtype, kind=kind,
                    params=asdict(params), trained=trained)


def _sample(frags: list[Any], schema: pa.Schema, total: int, params: IndexParams, *, progress: bool) -> np.ndarray:
    """About train_rows unit vectors drawn uniformly from every data file (one streaming pass)."""
    rng = np.random.default_rng(0)
    p = min(1.0, params.train_rows / max(total, 1))
    out = []
    for batch in _batches(frags, schema, [A.vector], params.batch_rows, progress=progress, what="sampling"):
        keep = np.flatnonzero(rng.random(batch.num_rows) < p)
        if len(keep):
            out.append(_unit(vectors_from_arrow(batch.column(0).take(pa.array(keep)))))
    return np.concatenate(out)[: params.train_rows]


def _encode(files: IndexFiles, manifest: Manifest, frags: list[Any], schema: pa.Schema, params: IndexParams, *,
            progress: bool) -> Segment:
    """One segment holding every row of `frags`: codes, stored vectors (streamed to .vec) and act_ids."""
    import faiss
    import pyarrow.parquet as pq

    index = faiss.deserialize_index(np.frombuffer(files.read_bytes(manifest.trained), np.uint8))
    name = files.new_name("seg")
    ids, file_of_row, rows = [], [], 0
    with files.output(f"{name}.vec") as vec:
        for i, frag in enumerate(frags):
            for batch in _batches([frag], schema, [A.act_id, A.vector], params.batch_rows, progress=progress,
                                  what=f"indexing file {i + 1}/{len(frags)}"):
                values = batch.column(1).flatten()  # (n * d,) stored numbers: float32 or bfloat16 bits
                vec.write(values.to_numpy(zero_copy_only=False).tobytes())
                index.add(_unit(vectors_from_arrow(batch.column(1))))
                ids.append(batch.column(0))
                file_of_row.append(np.full(batch.num_rows, i, np.int32))
                rows += batch.num_rows
    files.write_bytes(f"{name}.faiss", faiss.serialize_index(index).tobytes())
    table = pa.table({A.act_id: pa.concat_arrays(ids) if ids else pa.array([], pa.string()),
                      "file": np.concatenate(file_of_row) if file_of_row else np.zeros(0, np.int32)})
    with files.output(f"{name}.ids.parquet") as f:
        pq.write_table(table, f)
    return Segment(name=name, rows=rows, files=[f.path for f in frags])


def _batches(frags: list[Any], schema: pa.Schema, columns: list[str], batch_rows: int, *, progress: bool,
             what: str) -> Any:
    """Batches of `columns` read with the table's declared schema (vectors as fixed-size lists)."""
    import pyarrow.dataset as pds

    scan = pds.ParquetFragmentScanOptions(pre_buffer=False)
    for frag in frags:
        for batch in frag.to_batches(schema=schema, columns=columns, batch_size=batch_rows,
                                     fragment_scan_options=scan):
            if batch.num_rows:
                yield batch
        _say(progress, what)


def _unit(v: np.ndarray) -> np.ndarray:
    """(n, d) -> unit rows, float32 (inner product of unit vectors = cosine)."""
    return np.ascontiguousarray(v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12), np.float32)


def _say(progress: bool, text: str) -> None:
    if progress:
        print(f"  {text}", flush=True)


class LoadedIndex:
    """A published index opened for searching: all segments merged into one faiss index in memory (codes only; the
    stored vectors stay in the .vec files and are read per candidate)."""

    def __init__(self, files: IndexFiles, manifest: Manifest) -> None:
        import faiss
        import pyarrow.parquet as pq

        self.files, self.manifest = files, manifest
        self.params = IndexParams(**manifest.params)
        self.itemsize = 2 if manifest.vector_dtype == "bfloat16" else 4
        index, ids, file_of_row, self.offsets, self.paths = None, [], [], [0], []
        for s in manifest.segments:
            seg = faiss.deserialize_index(np.frombuffer(files.read_bytes(f"{s.name}.faiss"), np.uint8))
            if seg.ntotal != s.rows:
                raise NLALakeError(f"index segment {s.name} of {files.where} holds {seg.ntotal} rows, its manifest "
                                   f"says {s.rows}. Fix: `nla index --rebuild`.")
            if index is None:
                index = seg
            elif manifest.kind == "ivfpq":  # IVF lists carry each segment's own 0..n-1 ids: shift them
                faiss.extract_index_ivf(index).merge_from(faiss.extract_index_ivf(seg), index.ntotal)
                index.ntotal = faiss.extract_index_ivf(index).ntotal  # a PCA wrapper counts its inner index's rows
            else:  # a flat index numbers rows in order
                index.merge_from(seg, 0)
            t = pq.read_table(pa.BufferReader(files.read_bytes(f"{s.name}.ids.parquet")))
            ids.append(t.column(A.act_id).combine_chunks())
            file_of_row.append(t.column("file").to_numpy() + len(self.paths))
            self.paths += s.files
            self.offsets.append(self.offsets[-1] + s.rows)
        self.index = index
        self.act_ids = pa.concat_arrays(ids) if ids else pa.array([], pa.string())
        self.file_of_row = np.concatenate(file_of_row) if file_of_row else np.zeros(0, np.int32)
        self.vec = [files.open(f"{s.name}.vec") for s in manifest.segments]

    @classmethod
    def open(cls, lake: Any) -> LoadedIndex | None:
        files = IndexFiles(lake, ACTIVATIONS.name)
        manifest = files.manifest()
        return cls(files, manifest) if manifest is not None and manifest.rows else None

    def live_mask(self, snapshot_files: set[str]) -> np.ndarray:
        """(rows,) bool: rows whose data file belongs to the snapshot being searched."""
        return np.array([p in snapshot_files for p in self.paths], bool)[self.file_of_row]

    def search(self, q: np.ndarray, k: int, *, live: np.ndarray | None = None) -> list[tuple[str, float]]:
        """[(act_id, exact cosine)] of the best k rows among `live` ones (all when None); q: (d,) unit vector."""
        import faiss

        if live is not None and live.all():
            live = None
        kw: dict[str, Any] = {}
        bitmap = None
        if live is not None:
            bitmap = np.packbits(live, bitorder="little")  # faiss reads bit (i & 7) of byte i >> 3
            kw["sel"] = faiss.IDSelectorBitmap(len(live), faiss.swig_ptr(bitmap))
        params = faiss.SearchParameters(**kw) if kw else None
        if self.manifest.kind == "ivfpq":
            params = faiss.SearchParametersIVF(nprobe=self.params.nprobe, **kw)
            if isinstance(self.index, faiss.IndexPreTransform):
                params = faiss.SearchParametersPreTransform(index_params=params)
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)  # one query: threads only add barrier waits (costly on a busy machine)
        try:
            _, found = self.index.search(q[None, :].astype(np.float32), max(self.params.rerank, k), params=params)
        finally:
            faiss.omp_set_num_threads(threads)
        del bitmap  # the selector read it until here
        cand = np.sort(found[0][found[0] >= 0])
        if not len(cand):
            return []
        from nla.lake.search import cosines

        sims = cosines(self._vectors(cand), q)
        best = np.argsort(-sims, kind="stable")[:k]
        return list(zip(self.act_ids.take(pa.array(cand[best])).to_pylist(), sims[best].tolist()))

    def _vectors(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows), d) float32: the stored vectors of global rows (sorted), read at their offsets."""
        from nla.lake.schema import from_bfloat16_bits

        d, size = self.manifest.d, self.manifest.d * self.itemsize
        seg = np.searchsorted(self.offsets, rows, side="right") - 1
        raw = b"".join(self.vec[s].read_at(size, (r - self.offsets[s]) * size) for s, r in zip(seg, rows))
        flat = np.frombuffer(raw, np.int16 if self.itemsize == 2 else np.float32)
        return (from_bfloat16_bits(flat) if self.itemsize == 2 else flat).reshape(-1, d)

    def close(self) -> None:
        for f in self.vec:
            f.close()
