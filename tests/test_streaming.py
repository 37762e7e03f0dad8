"""Memory-mapped rows streamed in chunks: the same rows, in the same order, as in memory."""

import numpy as np
import pytest
import torch
from conftest import SMALL_MMOE
from hypothesis import given, settings
from hypothesis import strategies as st

from mssbench.api import build_model
from mssbench.runners.streaming import ChunkStream, chunk_batches
from mssbench.runners.trainer import batch_indices, fit
from mssbench.spec import Split
from mssbench.testing.synthetic import make_dataset


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 50), min_size=0, max_size=30),
    chunk=st.integers(1, 120),
)
def test_chunks_keep_every_batch_whole_and_in_order(sizes, chunk):
    batches = [torch.arange(n) for n in sizes]
    groups = chunk_batches(batches, chunk)
    assert [b for g in groups for b in g] == batches  # same objects, same order
    for g in groups:
        rows = sum(len(b) for b in g)
        assert rows <= chunk or len(g) == 1  # only a lone batch may exceed the chunk


def memory_mapped_split(tmp_path, split: Split) -> Split:
    """``split`` saved as .npy files and opened memory-mapped, as the twin's cache is."""
    tensors = []
    for name in ("categorical", "numeric", "scenario", "labels"):
        path = tmp_path / f"{name}.npy"
        np.save(path, getattr(split, name).numpy())
        tensors.append(torch.from_numpy(np.load(path, mmap_mode="c")))
    return Split(*tensors)


@settings(max_examples=15, deadline=None)
@given(
    n=st.integers(2, 400),
    batch_size=st.integers(2, 64),
    capacity=st.integers(64, 300),
    seed=st.integers(0, 10),
)
def test_streamed_batches_are_the_in_memory_batches(
    tmp_path_factory, n, batch_size, capacity, seed
):
    data = make_dataset(n_train=n, n_valid=4, n_test=4, seed=seed)
    mapped = memory_mapped_split(tmp_path_factory.mktemp("mm"), data.train)
    batches = batch_indices(n, batch_size, torch.Generator().manual_seed(seed), block_rows=16)
    stream = ChunkStream(mapped, torch.device("cpu"), capacity)
    seen = []
    for local in stream.epoch(batches):
        for rows in local:
            seen.append(stream.current.batch(rows))
    assert len(seen) == len(batches)
    for got, idx in zip(seen, batches):
        for a, b in zip(got, data.train.batch(idx)):
            assert torch.equal(a, b)


def test_streamed_graph_training_equals_eager_training_on_memory_mapped_rows(registry, tmp_path):
    """fit with step_mode graph streams block-shuffled chunks and trains bit-identically."""
    data = make_dataset(n_train=900, n_valid=100, n_test=20)
    mapped = memory_mapped_split(tmp_path, data.train)
    states = []
    for mode in ("eager", "graph"):
        torch.manual_seed(0)
        model = build_model(registry, "mmoe", data.schema, dict(SMALL_MMOE))
        result = fit(
            model,
            data.schema,
            mapped,
            data.valid,
            model_name="mmoe",
            device=torch.device("cpu"),
            seed=3,
            epochs=2,
            batch_size=64,
            eval_batch_size=256,
            lr=1e-3,
            weight_decay=0.0,
            patience=5,
            progress=False,
            log=lambda line: None,
            block_rows=50,
            step_mode=mode,
            stream_chunk_rows=200,
        )
        states.append((model.state_dict(), [h["train_loss"] for h in result.state.history]))
    assert states[0][1] == states[1][1]
    for key, value in states[0][0].items():
        assert torch.equal(value, states[1][0][key]), key


def test_a_batch_larger_than_the_buffer_is_refused():
    data = make_dataset(n_train=100, n_valid=4, n_test=4)
    stream = ChunkStream(data.train, torch.device("cpu"), 10)
    with pytest.raises(ValueError, match="larger than the stream buffer"):
        list(stream.epoch([torch.arange(20)]))
