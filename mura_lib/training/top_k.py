"""Keeping the k best checkpoints of a run, for the paper's ensemble, at no extra pass.

The MURA paper's final model is the mean of the five checkpoints with the lowest validation
loss. Each epoch is already validated, so ranking it costs nothing: an epoch that ranks among
the k best so far is saved as ``top_k/epoch-NNN.pt`` (a complete checkpoint with its own
threshold) beside its validation predictions ``top_k/epoch-NNN.val_predictions.csv``; the
epoch it displaces is deleted. ``ensemble.json`` names the current members, and its threshold
is chosen on the mean of their validation predictions by the run's threshold rule, so the
ensemble is calibrated as a single model is, again without another pass over the data.

The ranking is part of last.pt, so a resumed run keeps the same members as an uninterrupted
one. Ties keep the earlier epoch, as checkpoint selection does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mura_lib.evaluation.predictions import read_predictions
from mura_lib.evaluation.thresholds import held_out_threshold
from mura_lib.inference.ensemble import write_manifest

TOP_K_DIR = "top_k"
MANIFEST_NAME = "ensemble.json"
TOP_K_CRITERIA = ("val_loss", "select_metric")


def member_name(epoch: int) -> str:
    """The file stem of the member saved after ``epoch`` (0-based), e.g. ``epoch-007``."""
    return f"epoch-{epoch + 1:03d}"


def sidecar_name(checkpoint_name: str) -> str:
    """The validation predictions file written beside a member checkpoint."""
    return checkpoint_name.removesuffix(".pt") + ".val_predictions.csv"


@dataclass
class TopK:
    """The k best epochs so far by one score, best first."""

    k: int
    mode: str  # "min" or "max"
    members: list[dict] = field(default_factory=list)  # {"epoch", "score", "file"}

    def _better(self, a: float, b: float) -> bool:
        return a < b if self.mode == "min" else a > b

    def offer(self, epoch: int, score: float | None) -> tuple[bool, list[dict]]:
        """Rank ``epoch``; return (whether it enters, the members it displaces)."""
        if self.k < 1:
            return False, []
        if score is None or np.isnan(score):
            score = np.inf if self.mode == "min" else -np.inf
        score = float(score)
        if len(self.members) >= self.k and not self._better(score, self.members[-1]["score"]):
            return False, []
        entry = {"epoch": epoch, "score": score, "file": f"{TOP_K_DIR}/{member_name(epoch)}.pt"}
        position = next(
            (i for i, m in enumerate(self.members) if self._better(score, m["score"])),
            len(self.members),
        )
        self.members.insert(position, entry)
        evicted = self.members[self.k :]
        del self.members[self.k :]
        return True, evicted

    def members_file(self, epoch: int) -> str:
        """The file of the member of ``epoch``, relative to the run folder."""
        return next(m["file"] for m in self.members if m["epoch"] == epoch)

    def state_dict(self) -> dict:
        return {"k": self.k, "mode": self.mode, "members": [dict(m) for m in self.members]}

    def load_state_dict(self, state: dict) -> None:
        self.members = [dict(m) for m in state.get("members", [])]


def write_run_ensemble(
    out_dir: Path, top_k: TopK, criterion: str, threshold_rule: str
) -> Path | None:
    """Write ``out_dir/ensemble.json`` naming the current members, its threshold chosen on
    the mean of their validation predictions."""
    if not top_k.members:
        return None
    member_files = [out_dir / m["file"] for m in top_k.members]
    frames = [read_predictions(sidecar_name(str(f))) for f in member_files]
    choice, chosen_on = held_out_threshold(frames, threshold_rule)
    return write_manifest(
        out_dir / MANIFEST_NAME,
        member_files,
        {
            "how": f"the {top_k.k} best epochs of one training run",
            "criterion": criterion,
            "mode": top_k.mode,
            "epochs": [m["epoch"] + 1 for m in top_k.members],
            "scores": [m["score"] for m in top_k.members],
        },
        threshold=choice.value,
        threshold_rule=choice.rule,
        threshold_note=choice.note,
        threshold_chosen_on=chosen_on,
        check_members=False,  # this run wrote them just now: no need to read them all again
    )


def prune(out_dir: Path, top_k: TopK) -> None:
    """Delete member files that are no longer among the k best (after last.pt is saved)."""
    folder = out_dir / TOP_K_DIR
    if not folder.is_dir():
        return
    keep = {Path(m["file"]).name for m in top_k.members}
    keep |= {sidecar_name(name) for name in keep}
    for path in folder.iterdir():
        if path.name not in keep:
            path.unlink(missing_ok=True)
