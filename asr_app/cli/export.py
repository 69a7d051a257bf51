"""`asr-app export`: the model (or a profile's adapted model) as ONNX graphs for onnxruntime."""

from __future__ import annotations

import json

from asr_app.cli.common import FirstUseProgress, add_command, add_model_args

EXAMPLES = """examples:
  asr-app export                                      # tiny.en, int8, into the model cache
  asr-app export --model base --quantize none --out base-onnx
  asr-app export --profile alice"""


def add_parser(sub) -> None:
    """Add the `export` subcommand to the subparsers `sub`."""
    p = add_command(sub, "export", "write the model (or a profile's adapted model) as ONNX for onnxruntime", EXAMPLES)
    add_model_args(p, "export this profile's adapted model", run_options=False)
    p.add_argument(
        "--out", default=None, help="folder to write (default: inside an adapted model's folder, else the model cache)"
    )
    p.set_defaults(func=run)


def run(args) -> int:
    """`asr-app export`: the model (or the profile's adapted one) as ONNX graphs."""
    from asr_app.models import onnx_model_dir

    folder = onnx_model_dir(
        args.model, args.quantize, out=args.out, overwrite=True, on_progress=FirstUseProgress(args.model)
    )
    cfg = json.loads((folder / "config.json").read_text())
    sizes = {f.name: f.stat().st_size for f in folder.iterdir() if f.suffix == ".onnx"}
    print(f"exported {cfg['name']} ({cfg['quantize']}) to {folder}")
    for name, size in sorted(sizes.items()):
        print(f"  {name:<14} {size / 1e6:8.1f} MB")
    print(f"run it with: asr-app transcribe --model {folder} FILES")
    return 0
