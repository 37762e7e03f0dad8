"""Options, the memory-mapped cache and the :class:`~mssbench.spec.LoadedDataset` of the twin.

With ``cache = ""`` the data set is generated in memory at every load. With a directory (or
``auto``: ``$MSSBENCH_DATA_DIR/aliexpress-synth``) it is generated once into
``<dir>/aliexpress-synth-<key>/`` as one ``.npy`` file per split and array plus a
``manifest.json``, and later loads memory-map those files. ``<key>`` hashes every generation
parameter (:meth:`SynthConfig.to_dict`, generator version included), so a cache made with other
parameters is never reused. The files are written into a temporary sibling directory, the
manifest last, and the directory is renamed into place only when complete: an interrupted or
failed generation leaves nothing that a later load accepts (at most a ``.aliexpress-synth-*``
temporary directory, ignored and safe to delete).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from mssbench_aliexpress.schema import COUNTRIES, check_countries, make_protocol, make_schema

from mssbench.data import dataset_dir
from mssbench.errors import ConfigError, DataError
from mssbench.io import work_dir
from mssbench.spec import LoadedDataset, Split
from mssbench_aliexpress_synth.generator import (
    ARRAYS,
    GENERATOR_VERSION,
    SPLITS,
    Generated,
    SynthConfig,
    generate,
)
from mssbench_aliexpress_synth.options import DEFAULT_OPTIONS, NAME, SHARING_DEFAULTS

__all__ = [
    "DEFAULT_OPTIONS",
    "NAME",
    "cache_dir",
    "config_from_options",
    "load",
    "load_generated",
    "to_dataset",
]

MANIFEST = "manifest.json"
CACHE_FORMAT = 1
# Above this many rows, in-memory generation reports its progress too.
_LOUD_ROWS = 2_000_000


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_countries(text: str) -> tuple[str, ...]:
    """Countries of a comma list such as ``"NL,ES,FR,US"`` in canonical order.

    Raises:
        DataError: An unknown code (named, with the valid ones) or an empty list.
    """
    parts = [p for p in str(text).split(",") if p.strip()]
    if not parts:
        raise DataError(f"{NAME}: no country given; expected some of {', '.join(COUNTRIES)}")
    try:
        return check_countries(parts)
    except ValueError as exc:
        raise DataError(f"{NAME}: {exc}") from None


def _number(name: str, value: Any) -> Any:
    """An option's value as the type of its default (``"0.5"`` from the command line: 0.5)."""
    kind = type(SHARING_DEFAULTS[name])
    try:
        number = float(value)
        if kind is int and number != int(number):
            raise ValueError
    except (TypeError, ValueError):
        raise ConfigError(
            f"{NAME}: {name} must be {'an integer' if kind is int else 'a number'}, got {value!r}"
        ) from None
    return int(number) if kind is int else number


def config_from_options(options: Mapping[str, Any]) -> SynthConfig:
    """The generation parameters of resolved dataset options.

    Raises:
        DataError: Unknown country.
        ConfigError: Another invalid value (``n_rows < 1``, negative seed, ``cvr_scale``, a
            sharing parameter), named in a one-line message.
    """
    opts = {**DEFAULT_OPTIONS, **options}
    countries = parse_countries(opts["scenarios"])
    try:
        return SynthConfig(
            n_rows=opts["n_rows"],
            seed=opts["seed"],
            countries=countries,
            cvr_scale=float(opts["cvr_scale"]),
            **{k: _number(k, opts[k]) for k in SHARING_DEFAULTS},
        )
    except ValueError as exc:
        raise ConfigError(f"{NAME}: {exc}") from None


def cache_key(config: SynthConfig) -> str:
    """16 hex digits of the SHA-256 of the parameters."""
    text = json.dumps({"format": CACHE_FORMAT, **config.to_dict()}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_dir(config: SynthConfig, root: str | os.PathLike[str]) -> Path:
    """Where the cache of ``config`` lives under ``root`` (``"auto"``: the data root)."""
    base = dataset_dir(NAME) if str(root) == "auto" else Path(root).expanduser()
    return base / f"{NAME}-{cache_key(config)}"


def _open_cache(final: Path, config: SynthConfig) -> Generated:
    """Memory-map a complete cache; :class:`DataError` if it is not one for ``config``."""
    try:
        manifest = json.loads((final / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise DataError(
            f"{NAME}: {final} is not a complete cache ({exc}); delete the directory to "
            "generate it again"
        ) from None
    if manifest.get("format") != CACHE_FORMAT or manifest.get("params") != config.to_dict():
        raise DataError(
            f"{NAME}: {final} holds a cache of other parameters "
            f"({manifest.get('params')}); delete the directory to generate it again"
        )
    arrays: dict[str, dict[str, np.ndarray]] = {}
    for split in SPLITS:
        arrays[split] = {}
        for name in ARRAYS:
            path = final / f"{split}.{name}.npy"
            want = manifest["arrays"][split][name]
            try:
                # Copy-on-write: writable in this process (torch wants that), never written back.
                a = np.load(path, mmap_mode="c")
            except (OSError, ValueError) as exc:
                raise DataError(
                    f"{NAME}: cannot read {path} ({exc}); delete {final} to generate it again"
                ) from None
            if list(a.shape) != want["shape"] or str(a.dtype) != want["dtype"]:
                raise DataError(
                    f"{NAME}: {path} has shape {list(a.shape)} {a.dtype}, the manifest says "
                    f"{want['shape']} {want['dtype']}; delete {final} to generate it again"
                )
            arrays[split][name] = a
    return Generated(config, arrays, manifest["info"])


def _write_cache(
    config: SynthConfig, final: Path, chunk_rows: int, log: Callable[[str], None]
) -> None:
    """Generate into a temporary sibling of ``final``, then rename it into place."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = work_dir(final)  # created with the user's umask, unlike mkdtemp
    try:

        def allocate(split: str, name: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
            return np.lib.format.open_memmap(
                tmp / f"{split}.{name}.npy", mode="w+", dtype=dtype, shape=shape
            )

        log(f"{NAME}: generating {config.n_rows:,} rows (all countries) into {final}")
        gen = generate(config, allocate=allocate, chunk_rows=chunk_rows, log=log)
        shapes = {}
        for split, arrays in gen.arrays.items():
            shapes[split] = {}
            for name, a in arrays.items():
                a.flush()
                shapes[split][name] = {"shape": list(a.shape), "dtype": str(a.dtype)}
        del gen.arrays
        manifest = {
            "format": CACHE_FORMAT,
            "dataset": NAME,
            "synthetic": True,
            "params": config.to_dict(),
            "arrays": shapes,
            "info": gen.info,
        }
        with open(tmp / MANIFEST, "w") as fh:
            json.dump(manifest, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / MANIFEST).is_file():  # not a concurrent writer's finished cache
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_generated(
    config: SynthConfig,
    cache: str = "",
    chunk_rows: int = 65_536,
    log: Callable[[str], None] | None = None,
) -> tuple[Generated, bool]:
    """Generate ``config`` in memory, or open (creating if needed) its cache under ``cache``.

    Returns:
        ``(generated, memory_mapped)``.
    """
    if not cache:
        loud = log or (_stderr if config.n_rows >= _LOUD_ROWS else None)
        try:
            return generate(config, chunk_rows=chunk_rows, log=loud), False
        except ValueError as exc:
            raise ConfigError(f"{NAME}: {exc}") from None
    log = log or _stderr
    final = cache_dir(config, cache)
    started = time.perf_counter()
    hit = (final / MANIFEST).is_file()
    if not hit and final.exists():
        raise DataError(
            f"{NAME}: {final} exists but is not a complete cache (no {MANIFEST}); delete it "
            "to generate the data again"
        )
    if not hit:
        try:
            _write_cache(config, final, chunk_rows, log)
        except ValueError as exc:
            raise ConfigError(f"{NAME}: {exc}") from None
        except OSError as exc:
            raise DataError(f"{NAME}: cannot write the cache under {final.parent}: {exc}") from None
    gen = _open_cache(final, config)
    gen.info["cache"] = {
        "dir": str(final),
        "hit": hit,
        "open_seconds": round(time.perf_counter() - started, 3),
    }
    return gen, True


def _split(arrays: Mapping[str, np.ndarray]) -> Split:
    return Split(
        categorical=torch.from_numpy(arrays["categorical"]),
        numeric=torch.from_numpy(arrays["numeric"]),
        scenario=torch.from_numpy(arrays["scenario"]),
        labels=torch.from_numpy(arrays["labels"]),
        oracle=torch.from_numpy(arrays["oracle"]),
        groups=torch.from_numpy(arrays["search_id"]) if "search_id" in arrays else None,
    )


def protocol_variant(config: SynthConfig) -> str:
    """The generator parameters that define the data, for the protocol id.

    Runs on data generated with different parameters must never be ranked together, so the
    generator version, the total size, the generator seed, the purchase-rate scale and the
    sharing design are part of the id. ``small_train = 1`` generates what the generator did
    before that option existed, and its id is that data's id (no ``-train`` part).
    """
    train = "" if config.small_train == 1 else f"-train{config.small_train:g}"
    return (
        f"g{GENERATOR_VERSION}-n{config.n_rows}-seed{config.seed}-cvr{config.cvr_scale:g}"
        f"-small{config.small_size:g}{train}-dev{config.country_dev:g}"
        f"-conflict{config.conflict}-task{config.task_share:g}"
    )


def to_dataset(gen: Generated, memory_mapped: bool = False) -> LoadedDataset:
    """The :class:`LoadedDataset` of generated arrays; the search ids are the splits' groups."""
    countries = gen.config.countries
    return LoadedDataset(
        schema=make_schema(countries),
        protocol=make_protocol(
            NAME, countries, synthetic=True, variant=protocol_variant(gen.config)
        ),
        train=_split(gen.arrays["train"]),
        valid=_split(gen.arrays["valid"]),
        test=_split(gen.arrays["test"]),
        info=gen.info,
        memory_mapped=memory_mapped,
    )


def load(options: Mapping[str, Any]) -> LoadedDataset:
    """Generate (or open the cache of) the synthetic twin (the registered ``load``).

    Args:
        options: ``n_rows``, ``seed``, ``scenarios``, ``cache``, ``cvr_scale`` and the
            sharing design ``small_size``, ``small_train``, ``country_dev``, ``conflict``,
            ``task_share`` (see :data:`DEFAULT_OPTIONS` and the README).

    Returns:
        Every split carries its ``oracle`` logits; ``memory_mapped`` with a cache.

    Raises:
        DataError: Unknown country, or an unreadable or foreign cache directory.
        ConfigError: An invalid option value.
    """
    config = config_from_options(options)
    gen, mapped = load_generated(config, str(options.get("cache", "") or ""))
    return to_dataset(gen, mapped)
