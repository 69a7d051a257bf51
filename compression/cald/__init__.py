"""CALD: Whisper's encoder self-attention converted to a linear-time, streamable mixer.

`mixer` holds the math (softmax over a chunk and a left window, linear attention beyond,
as one formula over a whole window and as a step with a carried state), `feature_map` the
feature maps of the linear part, `layer` the `HybridSelfAttention` module. Derivation,
sources and what is ours: README.md beside this file.
"""
