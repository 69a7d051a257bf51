"""CALD's encoder on the frames heard: any length offline, chunk by chunk live, equal."""

from __future__ import annotations

import pytest
import torch

from asr_app.compression.cald.apply import convert_encoder
from asr_app.compression.cald.encoder import StreamingEncoder, encode_frames, encoded_frames, positions
from tests.compression.test_cald_train import _whisper


def test_encode_frames_is_whispers_encoder_on_its_full_window():
    model = _whisper()
    mel = torch.randn(2, model.config.num_mel_bins, 2 * model.config.max_source_positions)
    with torch.no_grad():
        want = model.model.encoder(mel).last_hidden_state
        assert torch.allclose(encode_frames(model, mel), want, atol=1e-5)
        convert_encoder(model, chunk_frames=None)  # one chunk: the same attention
        assert torch.allclose(encode_frames(model, mel), want, atol=1e-5)


def test_positions_go_on_as_sinusoids_beyond_the_table():
    model = _whisper()
    enc = model.model.encoder
    rows = enc.embed_positions.weight.shape[0]
    long = positions(enc, 0, 3 * rows)
    assert long.shape == (3 * rows, enc.embed_positions.weight.shape[1])
    assert torch.equal(long[:rows], enc.embed_positions.weight)
    # HF initialises the table with Whisper's sinusoids: the formula continues it.
    assert torch.allclose(positions(enc, rows - 5, rows + 5)[:5], enc.embed_positions.weight[-5:])
    d = long.shape[1]
    assert torch.allclose(long[:, : d // 2] ** 2 + long[:, d // 2 :] ** 2, torch.ones(3 * rows, d // 2), atol=1e-5)


@pytest.mark.parametrize("pieces", [(1, 7, 13, 2, 40, 3, 55, 30), (16,) * 9, (151,)])
def test_streaming_equals_encode_frames_at_every_update(pieces):
    model = _whisper()
    convert_encoder(model, chunk_frames=8, window_frames=4)
    total = sum(pieces)
    mel = torch.randn(model.config.num_mel_bins, total)
    stream = StreamingEncoder(model)
    fed, sizes = 0, []
    with torch.no_grad():
        for n in pieces:
            stream.feed(mel[:, fed : fed + n])
            fed += n
            want = encode_frames(model, mel[:, :fed])
            got = stream.output()
            assert got.shape == (encoded_frames(fed), model.config.d_model)
            assert torch.allclose(got, want, atol=1e-5), (fed, (got - want).abs().max())
            sizes.append(stream.state_numel())
    assert total // 2 > model.config.max_source_positions  # past the position table
    assert stream.done % 8 == 0 and stream.done >= encoded_frames(total) - 8 - 1
    if len(pieces) > 3:  # the state stops growing once the window is full
        assert len(set(sizes[-3:])) == 1


def _fed_stream(frames: int):
    """A CALD copy of the small Whisper (chunks of 8, window 4), random log-mel of `frames`
    frames and a StreamingEncoder fed with it."""
    model = _whisper()
    convert_encoder(model, chunk_frames=8, window_frames=4)
    mel = torch.randn(model.config.num_mel_bins, frames)
    stream = StreamingEncoder(model)
    stream.feed(mel)
    return model, mel, stream


def test_dropping_finished_chunks_keeps_the_rest():
    model, mel, stream = _fed_stream(90)
    full = stream.output()
    stream.drop(16)
    assert torch.allclose(stream.output(), full[16:])
    with pytest.raises(ValueError, match="whole finished chunks"):
        stream.drop(3)


def test_streaming_needs_a_chunked_cald_encoder():
    model = _whisper()
    with pytest.raises(ValueError, match="convert it first"):
        StreamingEncoder(model)
    convert_encoder(model, chunk_frames=None)
    with pytest.raises(ValueError, match="chunk_frames"):
        StreamingEncoder(model)
    with pytest.raises(ValueError, match="at least one"):
        encode_frames(model, torch.zeros(model.config.num_mel_bins, 0))


def test_a_cald_runner_encodes_the_first_chunks_of_the_padded_window_exactly():
    from types import SimpleNamespace

    from asr_app.decoding import WhisperRunner

    model = _whisper()
    window = 2 * model.config.max_source_positions  # the model's "30 s"
    mel = torch.zeros(model.config.num_mel_bins, window)
    mel[:, :37] = torch.randn(model.config.num_mel_bins, 37)  # content, then the zero padding
    plain = WhisperRunner(SimpleNamespace(model=model, device="cpu"))
    assert plain.content_pad_frames is None  # a softmax encoder always takes the whole window
    whole = plain.encode(mel.numpy(), content_frames=37)
    assert whole.shape[1] == model.config.max_source_positions
    convert_encoder(model, chunk_frames=8, window_frames=4)
    runner = WhisperRunner(SimpleNamespace(model=model, device="cpu"))
    whole = runner.encode(mel.numpy())
    for pad, frames in ((0, 24), (10, 24), (12, 32), (100, 48)):
        runner.content_pad_frames = pad
        part = runner.encode(mel.numpy(), content_frames=37)
        assert part.shape[1] == frames  # whole chunks of 8 encoder frames (16 mel frames)
        torch.testing.assert_close(part, whole[:, :frames], atol=1e-5, rtol=1e-5)


def test_streaming_output_with_padding_equals_the_padded_input():
    model, mel, stream = _fed_stream(41)
    for pad in (0, 7, 23):
        padded = torch.cat([mel, torch.zeros(mel.shape[0], pad)], dim=1)
        torch.testing.assert_close(stream.output(pad), encode_frames(model, padded), atol=1e-5, rtol=1e-5)
    stream.feed(mel[:, :5])  # the padding was not kept
    torch.testing.assert_close(
        stream.output(), encode_frames(model, torch.cat([mel, mel[:, :5]], 1)), atol=1e-5, rtol=1e-5
    )
