"""Adaptation data off the heap: windows spilled to a MelStore and read back, batches stacked
only when a step reads them."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from conftest import LJSPEECH, require_data


def test_mel_store_round_trips_windows_and_refuses_bad_reads(tmp_path):
    from asr_app.adapt.data import MelStore

    store = MelStore(tmp_path / "w" / "speaker-1.f32")
    rng = np.random.default_rng(0)
    mels = [rng.standard_normal((80, 3000)).astype(np.float32) for _ in range(3)]
    assert [store.add(m) for m in mels] == [0, 1, 2]
    assert (tmp_path / "w" / "speaker-1.f32").stat().st_size == 3 * 80 * 3000 * 4
    for i, m in enumerate(mels):
        got = store.read(i)
        np.testing.assert_array_equal(got, m)
        assert got.flags.writeable  # torch.from_numpy takes it without a warning
    with pytest.raises(IndexError):
        store.read(3)
    with pytest.raises(ValueError, match="shape"):
        store.add(np.zeros((128, 3000), np.float32))
    assert MelStore(tmp_path / "w" / "speaker-1.f32").count == 0  # a new store starts the file anew


def test_windows_spilled_to_disk_train_on_the_same_batches(tiny, tmp_path):
    """pack_windows with a store gives windows equal to the in-memory ones; LazyBatches stacks
    the same (mel, audio seconds) and (mel, labels) items as an eager pass in the same order."""
    require_data()
    from asr_app.adapt.data import LazyBatches, MelStore, batch_order, pack_windows
    from asr_app.datasets import load_dataset

    utts = load_dataset(LJSPEECH, "LJ001-000*", 6)
    held = pack_windows(utts, tiny, rng=random.Random(0))
    spilled = pack_windows(utts, tiny, rng=random.Random(0), store=MelStore(tmp_path / "s.f32"))
    assert len(held) == len(spilled) >= 2
    assert all(w.stored_mel is None for w in spilled)
    for a, b in zip(held, spilled):
        np.testing.assert_array_equal(a.mel, b.mel)
        assert a.labels == b.labels and a.audio_s == b.audio_s
    chunks = batch_order(len(spilled), 2, random.Random(1))
    assert sorted(i for c in chunks for i in c) == list(range(len(spilled)))
    lazy = LazyBatches(spilled, chunks, with_labels=False)
    assert len(lazy) == len(chunks)
    for chunk, (mel, audio_s) in zip(chunks, lazy):
        torch.testing.assert_close(mel, torch.from_numpy(np.stack([held[j].mel for j in chunk])))
        assert audio_s.tolist() == pytest.approx([held[j].audio_s for j in chunk], rel=1e-6)
    mel, labels = LazyBatches(spilled, chunks, with_labels=True)[0]
    first = held[chunks[0][0]]
    assert labels[0, : len(first.labels)].tolist() == first.labels
    assert (labels[0, len(first.labels) :] == -100).all()
