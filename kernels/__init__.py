"""Kernels of the project's own ops: each op beside its plain PyTorch reference.

Imports torch, triton (inside each op's triton.py only) and onnx; never the app.
"""
