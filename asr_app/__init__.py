"""asr_app: on-device speech recognition with compressed, speaker-adapted Whisper."""

__version__ = "0.1.0"
