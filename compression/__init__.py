"""Compression methods for Whisper (AdaPTwin, CALD, FVT), one folder per method.

Imports torch, transformers and peft, and may import `asr_app.kernels`; never the app,
Textual or sounddevice (checked by the import-linter contract in pyproject.toml).
"""
