"""Write the stored results files `tests/test_schema.py` reads: a tiny audit of GA on the
memorised test model, with each localisation mode. They were made by the code before results
were serialised with pydantic, so the test checks that the new code reads them, writes them back
unchanged and computes the same numbers. Rerun only after a deliberate change of the maths:
`python tests/data/make_results_v2.py` (from the repository root), and say so in the commit.
"""

from __future__ import annotations

import io
import json
import shutil
import sys
import tempfile
from pathlib import Path

from rich.console import Console

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent))

from memorised import CONTROL, FORGET, RETAIN, memorised_subject  # noqa: E402

from unlearn_lens.study.audit import audit  # noqa: E402
from unlearn_lens.study.config import StudyConfig  # noqa: E402

LOCALIZATIONS = ("attribution", "exact")


def stored_config(directory: Path, localization: str) -> StudyConfig:
    """The settings of a stored run, with its data written into `directory`."""
    paths = {}
    for split, items in (("forget", FORGET), ("retain", RETAIN), ("control", CONTROL)):
        path = directory / f"{split}.jsonl"
        path.write_text("".join(json.dumps(item.to_dict()) + "\n" for item in items))
        paths[split] = str(path)
    return StudyConfig(
        model="tiny",
        methods=("ga",),
        lr=1e-2,
        steps=4,
        batch_size=4,
        relearn_steps=4,
        relearn_lr=1e-2,
        max_items=None,
        localization=localization,
        **paths,
    )


def run_stored(directory: Path, localization: str):
    """The stored run's audit, computed afresh into `directory`."""
    return audit(
        stored_config(directory, localization),
        out=directory / "run",
        subject=memorised_subject(),
        progress=False,
        console=Console(file=io.StringIO()),
    )


if __name__ == "__main__":
    for localization in LOCALIZATIONS:
        work = Path(tempfile.mkdtemp())
        run_stored(work, localization)
        shutil.copy(work / "run" / "results.json", HERE / f"results_v2_{localization}.json")
        shutil.rmtree(work)
