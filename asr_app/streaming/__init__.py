"""Streaming transcription: a clock-free state machine over Whisper's 30-second decoder.

    stream = StreamingTranscriber(bundle)
    stream.insert_audio(chunk)          # any size, float32 16 kHz
    update = stream.process()           # at most one decode; None when there was nothing to do
    ... update.committed (new stable text), update.tentative (current unstable tail)
    final = stream.finish()

Policy (whisper_streaming's LocalAgreement-n, Macháček et al. 2023, plus VAD gating):
- Audio accumulates in a buffer. Every `min_chunk_s` of new speech, the buffer is decoded
  with the text committed before it as the decoder prompt. Words on which the last
  `local_agreement_n` hypotheses agree (longest common prefix, after the words already
  committed from this buffer) are committed; the rest is shown as tentative.
- silero-vad runs on every 32 ms frame as audio arrives. Silence never triggers a decode.
  Where speech is followed by `phrase_end_silence_ms` of silence a phrase ends: the buffer
  up to `phrase_end_pad_ms` after its last speech frame is finalized (decoded once more
  with temperature fallback, everything committed) and cut there. Phrase ends are found as audio arrives, so a lagging processor
  still finalizes phrase by phrase.
- A buffer that grows past `max_buffer_s` without a phrase end is finalized up to its
  quietest 32 ms frame (by the VAD) within the last `cut_search_s`, so work per update
  stays bounded and no word is cut in two where a pause exists.
- Finalizing never drops audio it has not transcribed: when Whisper closes its last
  segment well before the end of the audio and the VAD heard speech after it (Whisper
  stops early on long windows), the rest is decoded again from that timestamp, as
  offline transcription's seek does. Words committed earlier from the buffer are found in
  the final hypothesis by alignment, not by count, so a re-decode that splits or joins a
  word neither drops nor repeats the words after it.
"""

from asr_app.streaming.hypothesis import _Hypothesis, _key, _Segment, skip_committed
from asr_app.streaming.options import StreamingOptions, StreamUpdate
from asr_app.streaming.transcriber import StreamingTranscriber

__all__ = [
    "StreamingOptions",
    "StreamUpdate",
    "StreamingTranscriber",
    "_Hypothesis",
    "_Segment",
    "_key",
    "skip_committed",
]
