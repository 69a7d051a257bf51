"""Fast vocabulary transfer (FVT) to a speaker- and domain-specific tokenizer.

`tokenizer` trains the new byte-level BPE (or picks a subset of the original vocabulary),
`transfer` initialises its embedding from the original one, `apply` resizes and re-ties the
model and moves its token ids, `stages` are the adaptation stages, `method` the registry
entry. Derivation and what is the paper's and what is ours: README.md beside this file.
"""
