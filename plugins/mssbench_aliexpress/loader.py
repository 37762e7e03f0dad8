"""Loading the prepared AliExpress cache for training, resident or memory-mapped.

The cache (written by :func:`mssbench_aliexpress.ingest.prepare`) holds, per split, the
countries one after another in canonical order. Loading a set of countries therefore takes one
contiguous row range per split whenever the selected countries are adjacent among the prepared
ones (one country, the 4-country set NL,ES,FR,US, all five). The rare other selections (NL,FR
with ES prepared) are written once to ``subsets/<NL+FR>/`` inside the cache when they must be
memory-mapped.

Encoding (protocol v1): the cache stores raw code + 1. The vocabulary of a field is the set of
codes seen in the train split (validation removed) of the selected countries; a code outside it
maps to 0, the out-of-vocabulary id, and the field's vocabulary size is the largest code seen in
train + 2. Ids are thus raw code + 1 whatever the selection, and the stored values are used as
they are unless a valid or test row holds an unseen code; the manifest's per-field code counts
tell which (the counts of such cells are in ``info["oov"]``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from mssbench.data import dataset_dir
from mssbench.errors import ConfigError, DataError
from mssbench.io import recover_dir
from mssbench.spec import LoadedDataset, Split
from mssbench_aliexpress import ingest
from mssbench_aliexpress.schema import (
    CATEGORICAL,
    COUNTRIES,
    check_countries,
    make_protocol,
    make_schema,
)

__all__ = ["MEMORY_MODES", "available_memory", "load", "missing_data_message"]

DATASET = "aliexpress"
MEMORY_MODES = ("auto", "resident", "mapped")
#: "auto" keeps the data resident when it needs at most this share of the available memory.
RESIDENT_SHARE = 0.5
#: Bytes per row of the resident tensors (int16 ids, float32 numerics and labels, int64 scenario).
RESIDENT_BYTES_PER_ROW = 2 * len(CATEGORICAL) + 4 * 63 + 4 * 2 + 8
_CHUNK = 1 << 18


def missing_data_message(data_dir: Path, why: str) -> str:
    """What to download and run when no prepared data is found."""
    zips = ", ".join(f"aliexpress_{cc}_datasets.zip" for cc in COUNTRIES)
    return (
        f"aliexpress: {why}. The AliExpress data must be downloaded by you (Tianchi terms, "
        f"research use; a free Tianchi login is needed): get {zips} (any subset; NL,ES,FR,US is "
        f"the set most papers report) from {ingest.TIANCHI_URL}, put them in one directory DIR "
        "(as downloaded, extracted, or as the processed AliExpress_{CC}/train.csv and test.csv) "
        f"and run: mssbench data prepare aliexpress --source DIR"
        + ("" if _is_default(data_dir) else f" --dest {data_dir}")
        + ". To try the pipeline now, use the synthetic twin: "
        "mssbench run --model mmoe --dataset aliexpress-synth"
    )


def _is_default(data_dir: Path) -> bool:
    return Path(data_dir).expanduser().resolve() == dataset_dir(DATASET).expanduser().resolve()


def available_memory() -> int:
    """Bytes this process can still use: MemAvailable, capped by a cgroup limit if any."""
    avail = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
    except OSError:
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
            avail = 8 << 30
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
        if limit != "max":
            avail = min(avail, int(limit) - used)
    except (OSError, ValueError):
        pass
    return max(int(avail), 0)


def _open_cache(data_dir: Path) -> dict[str, Any]:
    # A prepare killed in the middle of replacing the cache left the previous one aside.
    recover_dir(data_dir)
    manifest = ingest.read_manifest(data_dir)
    if manifest is None:
        partial = list(data_dir.parent.glob(f".{data_dir.name}.partial-*"))
        why = (
            f"no prepared data in {data_dir}"
            if not partial
            else f"no complete prepared data in {data_dir} (an unfinished prepare left "
            f"{partial[0].name}; it is removed by the next prepare)"
        )
        raise DataError(missing_data_message(data_dir, why))
    if manifest.get("cache_version") != ingest.CACHE_VERSION:
        raise DataError(
            f"aliexpress: the cache in {data_dir} has format v{manifest.get('cache_version')}, "
            f"this mssbench reads v{ingest.CACHE_VERSION}: run mssbench data prepare aliexpress "
            "--source DIR again"
        )
    for arrays in manifest["arrays"].values():
        for facts in arrays.values():
            path = data_dir / facts["file"]
            size = path.stat().st_size if path.is_file() else -1
            if size != facts["bytes"]:
                raise DataError(
                    f"aliexpress: {path} is missing or damaged ({size:,} bytes, the manifest "
                    f"says {facts['bytes']:,}); run mssbench data prepare aliexpress again"
                )
    return manifest


def _arrays(root: Path, manifest: Mapping[str, Any], split: str) -> dict[str, np.ndarray]:
    """The split's arrays, memory-mapped copy-on-write (writable views, the file never changes)."""
    return {
        name: np.load(root / facts["file"], mmap_mode="c")
        for name, facts in manifest["arrays"][split].items()
    }


def _ranges(manifest: Mapping[str, Any], countries: Sequence[str], split: str) -> list[range]:
    return [
        range(c["offset"], c["offset"] + c["rows"])
        for c in (manifest["countries"][cc][split] for cc in countries)
    ]


def _contiguous(manifest: Mapping[str, Any], countries: Sequence[str]) -> bool:
    prepared = [c for c in COUNTRIES if c in manifest["countries"]]
    idx = [prepared.index(c) for c in countries]
    return idx == list(range(idx[0], idx[0] + len(idx)))


def _subset_cache(data_dir: Path, manifest: Mapping[str, Any], countries: Sequence[str]) -> Path:
    """A cache holding only ``countries`` (written once, next to the arrays it copies)."""
    name = "+".join(countries)
    root = data_dir / "subsets" / name
    sub = ingest.read_manifest(root)
    if sub is not None and sub.get("parent_created") == manifest["created"]:
        return root
    out = None
    try:
        out = ingest._Output(root)
        for cc in countries:
            ingest._copy_country(data_dir, manifest, cc, out)
        sub = {
            **{k: v for k, v in manifest.items() if k not in ("countries", "arrays")},
            "countries": {cc: out.countries[cc] for cc in countries},
            "arrays": out.close(),
            "parent_created": manifest["created"],
        }
        out.commit(sub)
    except OSError as exc:
        if out is not None:
            out.abort()
        raise DataError(
            f"aliexpress: cannot write the memory-mapped subset {root} ({exc.strerror or exc}); "
            "select adjacent countries (e.g. NL,ES,FR,US) or use memory=resident"
        ) from None
    return root


def _lookup(vocab: Mapping[str, Sequence[int]]) -> np.ndarray:
    """``[F, MAX_CODE + 2]`` int16: stored value (code + 1) -> id (code + 1, or 0 if unseen)."""
    lut = np.zeros((len(CATEGORICAL), ingest.MAX_CODE + 2), np.int16)
    for f, name in enumerate(CATEGORICAL):
        codes = np.asarray(vocab[name], np.int64)
        lut[f, codes + 1] = codes + 1
    return lut


def _remap(cat: np.ndarray, lut: np.ndarray) -> None:
    for f in range(cat.shape[1]):
        cat[:, f] = lut[f][cat[:, f]]


def _resident_split(
    root: Path, manifest: Mapping[str, Any], countries: Sequence[str], split: str,
    lut: np.ndarray | None,
) -> Split:  # fmt: skip
    arrays = _arrays(root, manifest, split)
    ranges = _ranges(manifest, countries, split)
    n = sum(len(r) for r in ranges)
    cat = np.empty((n, len(CATEGORICAL)), np.int16)
    num = np.empty((n, arrays["numeric"].shape[1]), np.float32)
    lab = np.empty((n, 2), np.float32)
    scen = np.empty(n, np.int64)
    pages = np.empty(n, np.int64) if "search_id" in arrays else None
    at = 0
    for s, r in enumerate(ranges):
        scen[at : at + len(r)] = s
        if pages is not None:
            pages[at : at + len(r)] = arrays["search_id"][r.start : r.stop]
        for lo in range(r.start, r.stop, _CHUNK):
            hi = min(r.stop, lo + _CHUNK)
            k = slice(at + lo - r.start, at + hi - r.start)
            cat[k] = arrays["categorical"][lo:hi]
            num[k] = arrays["numeric"][lo:hi]
            lab[k] = arrays["labels"][lo:hi]
            if lut is not None:
                _remap(cat[k], lut)
        at += len(r)
    return Split(
        torch.from_numpy(cat),
        torch.from_numpy(num),
        torch.from_numpy(scen),
        torch.from_numpy(lab),
        groups=None if pages is None else torch.from_numpy(pages),
    )


def _mapped_split(
    root: Path, manifest: Mapping[str, Any], countries: Sequence[str], split: str,
    lut: np.ndarray | None,
) -> Split:  # fmt: skip
    arrays = _arrays(root, manifest, split)
    ranges = _ranges(manifest, countries, split)
    lo, hi = ranges[0].start, ranges[-1].stop
    cat = arrays["categorical"][lo:hi]
    if lut is not None:  # unseen codes in this split: the (small) id block is remapped in memory
        cat = np.array(cat)
        for start in range(0, len(cat), _CHUNK):
            _remap(cat[start : start + _CHUNK], lut)
    scen = np.concatenate([np.full(len(r), s, np.int8) for s, r in enumerate(ranges)])
    return Split(
        torch.from_numpy(cat),
        torch.from_numpy(arrays["numeric"][lo:hi]),
        torch.from_numpy(scen),
        torch.from_numpy(arrays["labels"][lo:hi]),
        groups=torch.from_numpy(arrays["search_id"][lo:hi]) if "search_id" in arrays else None,
    )


def _countries_option(value: Any, manifest: Mapping[str, Any], data_dir: Path) -> tuple[str, ...]:
    prepared = tuple(c for c in COUNTRIES if c in manifest["countries"])
    text = str(value or "").strip()
    if not text:
        return prepared
    try:
        wanted = check_countries(text.replace("+", ",").split(","))
    except ValueError as exc:
        raise ConfigError(f"aliexpress: scenarios option {text!r}: {exc}") from None
    if not wanted:
        return prepared
    missing = [c for c in wanted if c not in prepared]
    if missing:
        raise DataError(
            missing_data_message(
                data_dir,
                f"{', '.join(missing)} not prepared (the cache in {data_dir} holds "
                f"{', '.join(prepared)}); prepare adds countries to the cache",
            )
        )
    return wanted


def load(options: Mapping[str, Any]) -> LoadedDataset:
    """Load the prepared AliExpress data (the registered ``load`` entry point).

    Args:
        options: ``data_dir`` (cache directory; ``""`` = ``dataset_dir("aliexpress")``),
            ``scenarios`` (``""`` = every prepared country, or e.g. ``"NL,ES,FR,US"``) and
            ``memory`` (``auto``: resident tensors when they need at most half the available
            memory, else memory-mapped; ``resident``; ``mapped``).

    Returns:
        Train, valid and test splits of the standard protocol; scenario = country.

    Raises:
        DataError: Nothing prepared (the message says what to download and run), a country not
            prepared, or a damaged cache.
        ConfigError: An unknown country code or memory mode.
    """
    memory = str(options.get("memory", "auto") or "auto").strip().lower()
    if memory not in MEMORY_MODES:
        raise ConfigError(
            f"aliexpress: memory option must be one of {', '.join(MEMORY_MODES)}, got {memory!r}"
        )
    data_dir = dataset_dir(DATASET, str(options.get("data_dir", "") or "") or None)
    manifest = _open_cache(data_dir)
    countries = _countries_option(options.get("scenarios", ""), manifest, data_dir)

    code_counts = manifest["code_counts"]
    vocab = ingest.vocabularies(code_counts, countries)
    oov = ingest.oov_counts(code_counts, countries, vocab)
    vocab_sizes = [max(vocab[name], default=-1) + 2 for name in CATEGORICAL]
    lut = _lookup(vocab)

    rows = {s: sum(manifest["countries"][c][s]["rows"] for c in countries) for s in ingest.SPLITS}
    needed = sum(rows.values()) * RESIDENT_BYTES_PER_ROW
    avail = available_memory()
    mode = memory
    if memory == "auto":
        mode = "resident" if needed <= RESIDENT_SHARE * avail else "mapped"

    root = data_dir
    if mode == "mapped" and not _contiguous(manifest, countries):
        root = _subset_cache(data_dir, manifest, countries)
        manifest = {**manifest, **json.loads((root / ingest.MANIFEST).read_text())}
    build = _resident_split if mode == "resident" else _mapped_split
    splits = {
        s: build(
            root,
            manifest,
            countries,
            s,
            lut if any(oov[c][s]["cells"] for c in countries) else None,
        )
        for s in ingest.SPLITS
    }
    schema = make_schema(countries, vocab_sizes)
    protocol = make_protocol(DATASET, countries)
    per_country = {cc: manifest["countries"][cc] for cc in countries}
    info = {
        "dataset": DATASET,
        "protocol": protocol.id,
        "cache": str(data_dir),
        "cache_version": manifest["cache_version"],
        "prepared": manifest["created"],
        "layouts": {cc: manifest["layouts"][cc] for cc in countries},
        "rows": rows,
        "positives": {
            s: {
                "ctr": sum(per_country[c][s]["clicks"] for c in countries),
                "ctcvr": sum(per_country[c][s]["purchases"] for c in countries),
            }
            for s in ingest.SPLITS
        },
        "countries": per_country,
        "vocab_sizes": dict(zip(CATEGORICAL, vocab_sizes)),
        "oov": oov,
        "inputs": {cc: manifest["inputs"][cc] for cc in countries},
        "memory": {
            "requested": memory,
            "mode": mode,
            "resident_bytes": needed,
            "available_bytes": avail,
        },
    }
    return LoadedDataset(
        schema=schema,
        protocol=protocol,
        train=splits["train"],
        valid=splits["valid"],
        test=splits["test"],
        info=info,
        memory_mapped=mode == "mapped",
    )
