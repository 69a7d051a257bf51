"""Import existing recordings with transcripts into a profile, checked like live takes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from asr_app.audio import load_audio
from asr_app.datasets import Utterance
from asr_app.enroll.profile import Profile
from asr_app.enroll.quality import QualityOptions, check_take
from asr_app.errors import AudioError


@dataclass
class ImportResult:
    """Counts of an import. rejected maps utterance id -> reasons (bad audio or failed checks)."""

    kept: int = 0
    kept_s: float = 0.0
    already: int = 0
    rejected: dict[str, str] = field(default_factory=dict)


def import_utterances(
    profile: Profile,
    utterances: list[Utterance],
    transcribe: Callable[[np.ndarray], str] | None,
    quality: QualityOptions = QualityOptions(),
    on_progress: Callable[[Utterance, str | None], None] | None = None,
) -> ImportResult:
    """Resample, check and save each utterance as a take (prompt id `import:<id>`).

    Utterances already imported (same id) are passed over, so an interrupted import resumes.
    Takes are written crash-safely in the given order; every tenth take is held out.
    """
    result = ImportResult()
    done = profile.done_prompt_ids()
    session = None  # counted at the first take kept, so an import that keeps nothing writes nothing
    try:
        for utt in utterances:
            pid = f"import:{utt.id}"
            if pid in done:
                result.already += 1
                if on_progress:
                    on_progress(utt, None)
                continue
            try:
                audio = load_audio(utt.audio)
            except AudioError as e:
                result.rejected[utt.id] = str(e)
                if on_progress:
                    on_progress(utt, str(e))
                continue
            report = check_take(audio, utt.text, quality, transcribe)
            if not report.accepted:
                result.rejected[utt.id] = "; ".join(report.reasons)
                if on_progress:
                    on_progress(utt, result.rejected[utt.id])
                continue
            session = session or profile.begin_session()
            take = profile.add_take(audio, utt.text, pid, session, source=f"import:{utt.audio}")
            result.kept += 1
            result.kept_s += take.duration_s
            if on_progress:
                on_progress(utt, None)
    finally:
        if profile.exists():
            profile.update_meta()
    return result
