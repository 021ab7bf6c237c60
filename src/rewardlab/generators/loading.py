"""Load diffusers pipelines from a local ``save_pretrained`` folder or a hub id, with an
error that says how to get the weights when they are missing or the machine is offline."""

from __future__ import annotations

import os
from pathlib import Path

from ..utils import local_files_only


class WeightsNotFound(FileNotFoundError):
    pass


def load_pipeline(cls_name: str, source, **kwargs):
    import diffusers

    cls = getattr(diffusers, cls_name)
    local, offline = Path(source).exists(), os.environ.get("HF_HUB_OFFLINE") == "1"
    try:
        return cls.from_pretrained(str(source), local_files_only=local_files_only(source), **kwargs)
    except (OSError, ValueError) as e:
        hint = ("it is a local folder but not a complete save_pretrained() pipeline"
                if local else f"download it first: `hf download {source} --local-dir DIR` "
                f"and pass DIR" + (" (HF_HUB_OFFLINE=1 is set)" if offline else ""))
        raise WeightsNotFound(f"cannot load {cls_name} from {source!s}: {hint}. ({e.__class__.__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''})") from None
