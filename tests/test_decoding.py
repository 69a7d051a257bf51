"""Window decoding rules: segment splitting, timestamp rules, options validation."""

import numpy as np
import pytest

from asr_app.decoding import DecodingOptions
from asr_app.whisper_rules import TokenFilter, compression_ratio, tokens_to_segments

TS = 50363  # <|0.00|> in tiny.en
T = lambda s: TS + round(s / 0.02)  # noqa: E731


def test_pairs_split_segments_and_closed_window_consumes_everything():
    tokens = [T(0), 11, 12, T(2.0), T(2.0), 13, T(4.5)]
    segs, seek = tokens_to_segments(tokens, TS, 10.0, 3000)
    assert [(a, b, t) for a, b, t in segs] == [(10.0, 12.0, [11, 12]), (12.0, 14.5, [13])]
    assert seek == 3000


def test_unfinished_last_segment_is_dropped_and_reread():
    tokens = [T(0), 11, T(20.0), T(20.0), 12, 13]  # cut off at the window end
    segs, seek = tokens_to_segments(tokens, TS, 0.0, 3000)
    assert [t for _, _, t in segs] == [[11]]
    assert seek == 2000  # frames: seek to 20.00 s, where the dropped segment began


def test_no_timestamp_pair_takes_the_window():
    segs, seek = tokens_to_segments([T(0), 11, 12, T(3.0)], TS, 0.0, 900)
    assert segs == [(0.0, 3.0, [11, 12])] and seek == 900
    segs, seek = tokens_to_segments([], TS, 0.0, 900)
    assert segs == [] and seek == 900


class _Special:
    eot, no_timestamps, timestamp_begin = 50256, 50362, TS


def _filter(sample_begin=1):
    return TokenFilter(_Special(), [5], [220, 50256], sample_begin, DecodingOptions())


def test_first_token_is_an_early_timestamp():
    logits = np.zeros((1, 51864), np.float32)
    out = _filter()(logits, [[50257]])
    allowed = np.flatnonzero(np.isfinite(out[0]))
    assert allowed.min() == TS and allowed.max() == TS + 50  # max_initial_timestamp 1.0 s


def test_after_a_pair_text_follows_and_timestamps_never_decrease():
    f = _filter()
    out = f(np.zeros((1, 51864), np.float32), [[50257, T(0), 100, T(1.0), T(1.0)]])
    assert np.isinf(out[0, TS:]).all() and np.isfinite(out[0, 100])
    out = f(np.zeros((1, 51864), np.float32), [[50257, T(0), 100, T(1.0), T(1.0), 101]])
    assert np.isinf(out[0, TS : T(1.0)]).all()  # no going back
    assert np.isinf(out[0, 5]) and np.isinf(out[0, 50362])  # suppressed, no <|notimestamps|>


def test_open_timestamp_is_closed_by_timestamp_or_end():
    logits = np.zeros((1, 51864), np.float32)
    out = _filter()(logits, [[50257, T(0), 100, T(1.0)]])
    assert np.isinf(out[0, :50256]).all()


def test_options_are_validated():
    with pytest.raises(ValueError, match="beam_size"):
        DecodingOptions(beam_size=0)
    with pytest.raises(ValueError, match="task"):
        DecodingOptions(task="summarize")
    with pytest.raises(ValueError, match="temperatures"):
        DecodingOptions(temperatures=())


def test_compression_ratio_flags_repetition():
    assert compression_ratio("the cat sat on the mat") < 1.5
    assert compression_ratio("thank you " * 50) > 2.4


def test_when_every_temperature_fails_the_likeliest_non_repetitive_result_wins(tiny):
    """openai-whisper keeps the last try (temperature 1.0, often a long sampled loop, which
    streaming then committed and prompted with); faster-whisper keeps the likeliest."""
    import numpy as np

    from asr_app.decoding import DecodingOptions, DecodingResult, WindowDecoder

    dec = WindowDecoder(tiny, DecodingOptions(temperatures=(0.0, 0.2, 1.0)))
    canned = {0.0: (3.1, -0.4), 0.2: (1.1, -1.4), 1.0: (5.0, -1.2)}  # (compression ratio, avg logprob)
    dec._decode_once = lambda feats, prompt, t, lang: DecodingResult([1], canned[t][1], 0.0, canned[t][0], t, "en")
    assert dec.decode(np.zeros((80, 3000), np.float32)).temperature == 0.2
    canned[0.2] = (2.9, -1.4)  # all repetitive: the likeliest of them
    assert dec.decode(np.zeros((80, 3000), np.float32)).temperature == 0.0
