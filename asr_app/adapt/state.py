"""Resume state of an adaptation run folder: finished stages and their results in
state.json (written atomically), and tensors (statistics, optimizer state) as safetensors."""

from __future__ import annotations

import json
from pathlib import Path

from asr_app.adapt.options import AdaptError, AdaptOptions

# options whose default differs from the behaviour before they existed
BEFORE_OPTION = {
    "finetune_lora": "encoder",
    "layerwise_loss": "nmse",
    "layerwise_padding_weight": 1.0,
    "layerwise_attention_kl": 0.0,
    "sensitivity": "noise",
}
# the evaluation set and time budget may change between resumes; training options may not
LOOSE_OPTIONS = (
    "general_set",
    "general_limit",
    "speaker_set",
    "speaker_filter",
    "time_budget_min",
    "threads",
    "control",
    "device",
    "checkpoint_every",
)
# stage names of run folders written before the pipeline had methods
RENAMED_STAGES = {"factor": "adaptwin.factor"}


class RunState:
    """state.json of a run folder: {"options": AdaptOptions.to_flat(), "stages": {name: result}}.

    Raises:
        AdaptError: the folder holds a run with other training options.
    """

    def __init__(self, folder: Path, options: AdaptOptions):
        from asr_app.outputs import atomic_write_text

        self.folder, self._write = folder, atomic_write_text
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "state.json"
        new = options.to_flat()
        self.data = json.loads(path.read_text()) if path.is_file() else {"options": new, "stages": {}}
        for old_name, name in RENAMED_STAGES.items():
            if old_name in self.data["stages"] and name not in self.data["stages"]:
                self.data["stages"][name] = self.data["stages"].pop(old_name)
        # an option added after this run started: the run used what the code did before it
        defaults = AdaptOptions(methods=tuple(type(m)() for m in options.methods)).to_flat()
        old = {**defaults, **BEFORE_OPTION, **self.data["options"]}
        differ = sorted(k for k in set(old) | set(new) if k not in LOOSE_OPTIONS and old.get(k) != new.get(k))
        if differ:
            what = ", ".join(f"{k} {old.get(k)!r} there, {new.get(k)!r} now" for k in differ[:4])
            raise AdaptError(
                f"{folder} holds a run with other options ({what}; a folder made before an option existed "
                "ran what the code did then); move it aside or delete it to start over"
            )
        self.data["options"] = new

    def done(self, stage: str) -> dict | None:
        """The result of a finished stage, or None."""
        return self.data["stages"].get(stage)

    def finish(self, stage: str, result: dict) -> None:
        """Record `stage` as finished with `result` (saved at once)."""
        self.data["stages"][stage] = result
        self.save()

    def save(self) -> None:
        self._write(self.folder / "state.json", json.dumps(self.data, indent=2))


def save_tensors(tensors: dict, path: Path, metadata: dict[str, str] | None = None) -> None:
    """Write tensors as safetensors atomically (temporary file, then rename)."""
    from safetensors.torch import save_file

    tmp = path.with_suffix(".tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    tmp.replace(path)


def save_model_state(model, path: Path) -> None:
    """Write a model's weights as safetensors atomically."""
    from safetensors.torch import save_model

    tmp = path.with_suffix(".tmp")
    save_model(model, str(tmp))
    tmp.replace(path)


def optimizer_to_tensors(state: dict) -> tuple[dict, dict]:
    """AdamW state_dict -> (tensors for safetensors, JSON-able rest)."""
    import torch

    tensors, meta = {}, {"param_groups": state["param_groups"], "keys": {}}
    for idx, entry in state["state"].items():
        meta["keys"][str(idx)] = list(entry)
        for name, value in entry.items():
            tensors[f"{idx}.{name}"] = value if torch.is_tensor(value) else torch.tensor(value)
    return tensors, meta


def optimizer_from_tensors(tensors: dict, meta: dict) -> dict:
    """The inverse of `optimizer_to_tensors`: an AdamW state_dict."""
    state = {int(idx): {name: tensors[f"{idx}.{name}"] for name in names} for idx, names in meta["keys"].items()}
    return {"state": state, "param_groups": meta["param_groups"]}
