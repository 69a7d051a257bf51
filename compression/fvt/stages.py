"""FVT's adaptation stages: `transfer` (train the speaker's tokenizer, initialise the new
embedding, resize and re-tie, move the configs' token ids) and `recover` (train the tied
embedding on the speaker's windows, everything else frozen). The decoder LoRA that follows
is the pipeline's shared fine-tuning stage.
"""

from __future__ import annotations

import copy
import json
import random
import time
from collections import Counter
from pathlib import Path

from asr_app.compression.fvt.options import FvtOptions

TOKENIZER_FILE = "fvt.tokenizer.json"  # in the run folder: the resumed run's tokenizer


def corpus_counts(ctx, opts: FvtOptions) -> tuple[Counter, dict]:
    """Pre-token counts of the tokenizer's corpus and the occurrences from each source.

    Sources: general English (wordfreq) and numbers in digits (`number_counts`, both only
    with `opts.general_words`), the speaker's training transcripts, the enrollment prompts,
    the teacher's transcripts of `--unlabeled` audio and `opts.domain_text` files (these
    four weighted by `opts.domain_weight`). Reads `ctx.transcripts`, `ctx.prompt_texts` and
    `ctx.unlabeled_texts` (absent: none).

    Raises:
        ValueError: a domain text file that cannot be read.
    """
    from asr_app.compression.fvt.tokenizer import general_english_counts, number_counts, text_counts

    counts: Counter = Counter()
    sizes = {}
    general = general_english_counts(opts.general_words) if opts.general_words else Counter()
    counts.update(general)
    sizes["general"] = sum(general.values())
    if opts.general_words:
        numbers = number_counts()
        counts.update(numbers)
        sizes["numbers"] = sum(numbers.values())
    domain_files = []
    for path in opts.domain_text:
        try:
            domain_files.append(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"--domain-text {path}: cannot read it as UTF-8 text ({e})") from None
    for name, texts in (
        ("transcripts", list(ctx.transcripts)),
        ("prompts", list(ctx.prompt_texts)),
        ("unlabeled", list(getattr(ctx, "unlabeled_texts", ()))),
        ("domain_text", domain_files),
    ):
        c = text_counts(texts, opts.domain_weight)
        counts.update(c)
        sizes[name] = sum(c.values())
    return counts, sizes


def build_vocabulary(old_tokenizer, first_special_id: int, model, counts: Counter, opts: FvtOptions, seed: int = 0):
    """The new tokenizer and the transferred embedding of `model`'s vocabulary.

    Args:
        old_tokenizer: the base model's transformers `WhisperTokenizer`.
        first_special_id: its <|endoftext|> id.
        model: the model whose (tied) embedding is transferred.
        counts: the tokenizer corpus (`corpus_counts`).
    Returns:
        (new tokenizer, plan fields: {"embedding", "config", "transfer", "id_map", "text_tokens"}).
    """
    from tokenizers import decoders

    from asr_app.compression.fvt.apply import remapped_config, suppressed_tokens
    from asr_app.compression.fvt.tokenizer import (
        bpe_parts,
        build_whisper_tokenizer,
        subset_bpe,
        train_bpe,
        whisper_tokenizer_json,
    )
    from asr_app.compression.fvt.transfer import transfer_embeddings
    from asr_app.compression.surgery import decoder_of

    old_json = json.loads(old_tokenizer.backend_tokenizer.to_str())
    if opts.init == "subset":
        text_tok = subset_bpe(old_json, first_special_id, counts, opts.vocab_size)
    else:
        text_tok = train_bpe(counts, opts.vocab_size)
    text_json = json.loads(text_tok.to_str())
    new_json, id_map = whisper_tokenizer_json(old_json, first_special_id, text_json)
    new_vocab = new_json["model"]["vocab"]
    new_tokens = sorted(new_vocab, key=new_vocab.__getitem__)
    old_vocab, _ = bpe_parts(old_json)
    old_text = {t: i for t, i in old_vocab.items() if i < first_special_id}
    old_bpe = old_tokenizer.backend_tokenizer.model
    embedding, stats = transfer_embeddings(
        decoder_of(model).embed_tokens.weight,
        old_text,
        lambda token: [t.id for t in old_bpe.tokenize(token)],
        new_tokens,
        sorted(id_map),
        opts.init,
        seed,
    )
    byte_level = decoders.ByteLevel()
    old_by_id = {i: t for t, i in old_text.items()}

    def decode(token: str) -> str:
        return byte_level.decode([token])

    suppress = suppressed_tokens(
        list(model.generation_config.suppress_tokens or []), old_by_id.get, new_tokens, decode, id_map
    )
    begin = []
    for i in model.generation_config.begin_suppress_tokens or []:
        new = id_map.get(i, new_vocab.get(old_by_id.get(i, ""), None))
        if new is not None:
            begin.append(new)
    config = remapped_config(model, id_map, suppress, begin)
    tokenizer = build_whisper_tokenizer(old_tokenizer, new_json)
    return tokenizer, {
        "embedding": embedding,
        "config": config,
        "transfer": stats.to_dict(),
        "id_map": id_map,
        "text_tokens": len(new_tokens),
    }


def relabel_fn(old_tokenizer, new_tokenizer, id_map: dict[int, int], first_special_id: int):
    """labels in the original vocabulary -> the same text in the new one: each run of text
    ids decoded by the original tokenizer and encoded again by the new; special and
    timestamp ids moved through `id_map`."""

    def relabel(labels: list[int]) -> list[int]:
        out: list[int] = []
        run: list[int] = []

        def flush():
            if run:
                out.extend(new_tokenizer.encode(old_tokenizer.decode(run), add_special_tokens=False))
                run.clear()

        for t in labels:
            if t < first_special_id:
                run.append(t)
            else:
                flush()
                out.append(id_map[t])
        flush()
        return out

    return relabel


def transfer_stage(ctx, opts: FvtOptions) -> dict:
    """Build the speaker's vocabulary and move `ctx.model` (or a copy of the teacher) to it.

    Reads `ctx.teacher`, `ctx.model`, `ctx.bundle` (the base tokenizer and special tokens),
    `ctx.transcripts`, `ctx.prompt_texts`, `ctx.folder`; sets `ctx.model`, appends the
    method block, and gives the pipeline the new tokenizer and the relabelling of the
    training windows (`ctx.set_vocabulary`).
    Returns:
        {"wall_s", "vocab_size", "text_tokens", "transfer", "corpus"}.
    Raises:
        ValueError: unreadable domain text; a base model whose vocabulary is not Whisper's.
    """
    from asr_app.compression.fvt.apply import apply_vocabulary
    from asr_app.compression.fvt.config import VocabularyPlan, method_block

    t0 = time.monotonic()
    model = (ctx.model if ctx.model is not None else copy.deepcopy(ctx.teacher)).cpu()
    old_tok, eot = ctx.bundle.tokenizer, ctx.bundle.special.eot
    counts, sizes = corpus_counts(ctx, opts)
    tokenizer, built = build_vocabulary(old_tok, eot, model, counts, opts, seed=ctx.options.seed)
    apply_vocabulary(model, built["embedding"], built["config"])
    plan = VocabularyPlan(
        vocab_size=built["embedding"].shape[0],
        text_tokens=built["text_tokens"],
        init=opts.init,
        multilingual=bool(ctx.bundle.is_multilingual),
        config=built["config"],
        transfer=built["transfer"],
        corpus=sizes,
    )
    tokenizer.backend_tokenizer.save(str(ctx.folder / TOKENIZER_FILE))
    model.to(ctx.device)
    for p in model.parameters():
        p.requires_grad_(False)
    ctx.model = model
    ctx.blocks.append(method_block(plan))
    ctx.set_vocabulary(tokenizer, relabel_fn(old_tok, tokenizer, built["id_map"], eot))
    return {
        "wall_s": round(time.monotonic() - t0, 1),
        "vocab_size": plan.vocab_size,
        "text_tokens": plan.text_tokens,
        "transfer": plan.transfer,
        "corpus": sizes,
    }


def resume_transfer(ctx, result: dict) -> None:
    """On resume (model rebuilt from its saved weights): the tokenizer from the run folder
    and the windows' relabelling, as `transfer_stage` left them."""
    from asr_app.compression.fvt.tokenizer import build_whisper_tokenizer

    old_tok, eot = ctx.bundle.tokenizer, ctx.bundle.special.eot
    new_json = json.loads((ctx.folder / TOKENIZER_FILE).read_text(encoding="utf-8"))
    tokenizer = build_whisper_tokenizer(old_tok, new_json)
    # the special tokens keep their contents: their new ids are read from the new tokenizer
    id_map = {i: tokenizer.convert_tokens_to_ids(t.content) for i, t in old_tok.added_tokens_decoder.items()}
    ctx.set_vocabulary(tokenizer, relabel_fn(old_tok, tokenizer, id_map, eot))


def recover_stage(ctx, opts: FvtOptions) -> dict:
    """Train the tied embedding (input and output rows alike) with cross-entropy on the
    speaker's and replay windows in the new vocabulary; encoder and decoder layers frozen.

    Returns:
        {"wall_s", "steps", "loss_first", "loss_last"}.
    """
    import torch

    from asr_app.compression.surgery import decoder_of

    t0 = time.monotonic()
    model = ctx.model
    windows = ctx.speaker + ctx.replay
    steps = int(round(opts.recover_epochs * len(windows) / ctx.options.batch_size))
    if steps == 0 or not windows:
        return {"wall_s": 0.0, "steps": 0}
    rng = random.Random(f"{ctx.options.seed}-fvt.recover")
    batches = ctx.batches(windows + ctx.perturbed, rng, steps)  # stacked a step at a time
    weight = decoder_of(model).embed_tokens.weight
    for p in model.parameters():
        p.requires_grad_(False)
    weight.requires_grad_(True)
    optimizer = torch.optim.AdamW([weight], lr=opts.recover_lr, weight_decay=0.0)
    model.train()
    losses = []
    for step, (mel, labels) in enumerate(batches[:steps], start=1):
        loss = model(input_features=mel.to(ctx.device), labels=labels.to(ctx.device)).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        ctx.event("progress", ("fvt.recover", step, steps, losses[-1]))
    model.eval()
    weight.requires_grad_(False)
    return {
        "wall_s": round(time.monotonic() - t0, 1),
        "steps": steps,
        "loss_first": round(sum(losses[:10]) / len(losses[:10]), 4),
        "loss_last": round(sum(losses[-10:]) / len(losses[-10:]), 4),
    }
