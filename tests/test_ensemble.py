"""Ensembles and test-time augmentation: top-k checkpoints of a run, manifests, evaluation and
prediction with several members, flip TTA."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import mura_lib.training.train as train_module
from mura_lib.cli import TTA_CHOICES, main
from mura_lib.disk import sha256_file
from mura_lib.errors import CheckpointError
from mura_lib.evaluation.metrics import binary_metrics
from mura_lib.evaluation.predictions import canonical_prob, read_predictions
from mura_lib.evaluation.report import evaluation_report
from mura_lib.evaluation.studies import study_scores
from mura_lib.evaluation.thresholds import choose_threshold
from mura_lib.inference.engine import TTA_MODES, forward
from mura_lib.inference.ensemble import load_source, read_manifest, write_manifest
from mura_lib.inference.evaluate import evaluate_checkpoint
from mura_lib.inference.members import build_ensemble
from mura_lib.inference.predict import predict_paths
from mura_lib.models.build import build_model
from mura_lib.training.train import fit

pytest_plugins = ["fixtures_training"]  # tiny_tree, tiny_config, trained_run, shared_cache_dir
pytestmark = pytest.mark.usefixtures("one_torch_thread")

N_BOOT = 30


@pytest.fixture(scope="module")
def top_k_run(tmp_path_factory, tiny_tree, tiny_config, one_torch_thread) -> tuple[Path, dict]:
    """A 3-epoch run that keeps its 2 best epochs by validation loss."""
    out = tmp_path_factory.mktemp("top_k") / "run"
    config = replace(tiny_config, keep_top_k=2, top_k_by="val_loss")
    return out, fit(tiny_tree, out, config, progress="none")


def evaluate(source, tiny_tree, out, shared_cache_dir, **kwargs) -> dict:
    return evaluate_checkpoint(
        source,
        tiny_tree,
        out,
        device="cpu",
        n_boot=N_BOOT,
        cache_dir=str(shared_cache_dir),
        progress="none",
        **kwargs,
    )


def test_top_k_keeps_the_k_lowest_validation_losses(top_k_run) -> None:
    out, summary = top_k_run
    history = summary["history"]
    expected = history.sort_values("val_loss", kind="mergesort")["epoch"].head(2).tolist()
    manifest = read_manifest(out / "ensemble.json")
    assert manifest["chosen_by"]["criterion"] == "val_loss"
    assert manifest["chosen_by"]["epochs"] == expected
    assert [m["path"] for m in manifest["members"]] == [f"top_k/epoch-{e:03d}.pt" for e in expected]
    files = sorted(p.name for p in (out / "top_k").iterdir())  # the displaced one is gone
    assert files == sorted(
        [f"epoch-{e:03d}.pt" for e in expected]
        + [f"epoch-{e:03d}.val_predictions.csv" for e in expected]
    )
    for member in manifest["members"]:
        ckpt = torch.load(out / member["path"], weights_only=True)
        assert ckpt["threshold"] is not None and ckpt["epoch"] + 1 in expected


def test_run_ensemble_threshold_is_chosen_on_the_members_mean(top_k_run, tiny_config) -> None:
    out, _ = top_k_run
    manifest = read_manifest(out / "ensemble.json")
    sidecars = [
        read_predictions(out / m["path"].replace(".pt", ".val_predictions.csv"))
        for m in manifest["members"]
    ]
    mean = np.mean([f["prob"] for f in sidecars], axis=0)
    studies = study_scores(sidecars[0].assign(prob=mean))
    choice = choose_threshold(studies["label"], studies["prob"], tiny_config.threshold_rule)
    assert manifest["threshold"] == choice.value
    assert manifest["threshold_chosen_on"]["n_studies"] == len(studies)
    assert manifest["tta"] == "none"


def test_top_k_resumed_equals_uninterrupted(
    tmp_path, monkeypatch, top_k_run, tiny_tree, tiny_config
):
    out_a, _ = top_k_run
    out = tmp_path / "resumed"
    config = replace(tiny_config, keep_top_k=2, top_k_by="val_loss")
    real = train_module.train_one_epoch

    def interrupted(model, loader, augmenter, optimizer, epoch, **kwargs):
        if epoch == 2:
            raise KeyboardInterrupt
        return real(model, loader, augmenter, optimizer, epoch, **kwargs)

    monkeypatch.setattr(train_module, "train_one_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fit(tiny_tree, out, config, progress="none")
    monkeypatch.undo()
    fit(tiny_tree, out, config, resume=True, progress="none")
    a, b = read_manifest(out_a / "ensemble.json"), read_manifest(out / "ensemble.json")
    assert b["chosen_by"] == a["chosen_by"] and b["threshold"] == a["threshold"]
    for ma, mb in zip(a["members"], b["members"], strict=True):
        wa = torch.load(out_a / ma["path"], weights_only=True)["model"]
        wb = torch.load(out / mb["path"], weights_only=True)["model"]
        assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_keep_top_k_off_writes_no_ensemble(trained_run) -> None:
    assert not (trained_run[0] / "ensemble.json").exists()
    assert not (trained_run[0] / "top_k").exists()


def test_ensemble_of_one_checkpoint_equals_the_checkpoint(
    tmp_path, trained_run, tiny_tree, shared_cache_dir
) -> None:
    best = trained_run[0] / "best.pt"
    manifest = build_ensemble([best], tmp_path / "one.json")
    assert manifest["threshold"] == torch.load(best, weights_only=True)["threshold"]
    single = evaluate(best, tiny_tree, tmp_path / "single", shared_cache_dir)
    ensemble = evaluate(tmp_path / "one.json", tiny_tree, tmp_path / "ens", shared_cache_dir)
    a = read_predictions(tmp_path / "single" / "predictions.csv")
    b = read_predictions(tmp_path / "ens" / "predictions.csv")
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert ensemble["study"] == single["study"] and ensemble["image"] == single["image"]
    assert ensemble["threshold"] == single["threshold"]


def test_ensemble_of_identical_copies_equals_the_checkpoint(
    tmp_path, trained_run, tiny_tree, shared_cache_dir
) -> None:
    best = trained_run[0] / "best.pt"
    copies = [shutil.copy(best, tmp_path / f"copy{i}.pt") for i in range(3)]
    write_manifest(
        tmp_path / "copies.json",
        copies,
        {"how": "test"},
        threshold=torch.load(best, weights_only=True)["threshold"],
        threshold_rule="max_kappa",
    )
    single = evaluate(best, tiny_tree, tmp_path / "single", shared_cache_dir)
    ensemble = evaluate(tmp_path / "copies.json", tiny_tree, tmp_path / "ens", shared_cache_dir)
    a = read_predictions(tmp_path / "single" / "predictions.csv")
    b = read_predictions(tmp_path / "ens" / "predictions.csv")
    np.testing.assert_array_equal(a["prob"], b["prob"])
    assert ensemble["study"] == single["study"]


def test_ensemble_numbers_recompute_from_the_prediction_files(
    tmp_path, top_k_run, tiny_tree, shared_cache_dir
) -> None:
    out, _ = top_k_run
    report = evaluate(out / "ensemble.json", tiny_tree, tmp_path / "ens", shared_cache_dir)
    members = pd.read_csv(tmp_path / "ens" / "member_predictions.csv")
    predictions = read_predictions(tmp_path / "ens" / "predictions.csv")
    columns = [m["column"] for m in report["members"]]
    assert len(columns) == 2
    mean = canonical_prob(members[columns].astype(np.float32).astype(np.float64).mean(axis=1))
    np.testing.assert_array_equal(mean, predictions["prob"].to_numpy())
    again = evaluation_report(
        tmp_path / "ens" / "predictions.csv", threshold=report["threshold"], n_boot=N_BOOT
    )
    assert again["study"] == report["study"]
    for summary in report["members"]:
        studies = study_scores(members.rename(columns={summary["column"]: "prob"}))
        m = binary_metrics(studies["label"], studies["prob"], summary["threshold"])
        assert (m["kappa"], m["auroc"]) == (summary["study_kappa"], summary["study_auroc"])
    assert report["model"]["kind"] == "ensemble" and report["threshold_source"] == "manifest"


def test_members_of_different_input_sizes_each_see_their_size(
    tmp_path, tiny_tree, tiny_config, trained_run, shared_cache_dir
) -> None:
    other = fit(
        tiny_tree, tmp_path / "s48", replace(tiny_config, image_size=48, epochs=1), progress="none"
    )
    best = trained_run[0] / "best.pt"
    manifest = build_ensemble([best, other["best_checkpoint"]], tmp_path / "mixed.json")
    assert manifest["threshold"] is not None  # the same split: from the members' predictions
    report = evaluate(tmp_path / "mixed.json", tiny_tree, tmp_path / "mixed", shared_cache_dir)
    members = pd.read_csv(tmp_path / "mixed" / "member_predictions.csv")
    for k, checkpoint in enumerate([best, other["best_checkpoint"]]):
        evaluate(checkpoint, tiny_tree, tmp_path / f"alone{k}", shared_cache_dir)
        alone = read_predictions(tmp_path / f"alone{k}" / "predictions.csv")["prob"]
        column = canonical_prob(members[f"prob_member_{k + 1}"])  # float32, as written
        np.testing.assert_array_equal(column, alone.to_numpy())
    assert [m["image_size"] for m in report["model"]["members"]] == [32, 48]


def test_a_changed_member_is_refused(tmp_path, trained_run) -> None:
    member = shutil.copy(trained_run[0] / "best.pt", tmp_path / "member.pt")
    build_ensemble([member], tmp_path / "m.json")
    with open(member, "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(CheckpointError, match=r"member member.pt has changed since the manifest"):
        load_source(tmp_path / "m.json")


def test_a_missing_member_is_refused(tmp_path, trained_run, capsys) -> None:
    member = shutil.copy(trained_run[0] / "best.pt", tmp_path / "member.pt")
    build_ensemble([member], tmp_path / "m.json")
    Path(member).unlink()
    study = tmp_path / "x.png"
    assert main(["predict", "--checkpoint", str(tmp_path / "m.json"), str(study)]) == 2
    err = capsys.readouterr().err
    assert "member member.pt is missing" in err and err.count("\n") == 1


def test_a_manifest_records_hashes_and_relative_paths(tmp_path, trained_run) -> None:
    best = trained_run[0] / "best.pt"
    manifest = build_ensemble([best], tmp_path / "sub" / "m.json")
    entry = manifest["members"][0]
    assert entry["sha256"] == sha256_file(best)
    assert (tmp_path / "sub" / entry["path"]).resolve() == best.resolve()
    assert manifest["combine"] == "mean of member probabilities"


def image_probs(model: torch.nn.Module, x: torch.Tensor, tta: str) -> torch.Tensor:
    """Each image's probability: every image a group of its own."""
    return forward(model, x, torch.arange(len(x)), len(x), tta=tta)[0]


def test_flip_tta_of_a_symmetric_input_equals_no_tta() -> None:
    torch.manual_seed(0)
    model = build_model("small_cnn").eval()
    x = torch.randn(3, 1, 32, 32)
    x = (x + x.flip(-1)) / 2  # left-right symmetric
    with torch.inference_mode():
        plain = image_probs(model, x, tta="none")
        flipped = image_probs(model, x, tta="flip")
    assert torch.equal(plain, flipped)


def test_flip_tta_averages_the_mirror_image() -> None:
    torch.manual_seed(0)
    model = build_model("small_cnn").eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.inference_mode():
        expected = (torch.sigmoid(model(x)[:, 0]) + torch.sigmoid(model(x.flip(-1))[:, 0])) / 2
        assert torch.allclose(image_probs(model, x, tta="flip"), expected, atol=1e-7)


def test_evaluate_with_tta_chooses_its_threshold_on_validation(
    tmp_path, trained_run, tiny_tree, shared_cache_dir
) -> None:
    report = evaluate(
        trained_run[0] / "best.pt", tiny_tree, tmp_path / "tta", shared_cache_dir, tta="flip"
    )
    assert report["tta"] == "flip"
    assert report["threshold_source"] == "chosen at evaluation on validation studies"
    assert report["threshold_chosen_on"]["tta"] == "flip"
    assert json.loads((tmp_path / "tta" / "metrics.json").read_text())["tta"] == "flip"


def test_predict_refuses_a_tta_its_threshold_was_not_chosen_with(
    tmp_path, trained_run, tiny_tree, capsys
) -> None:
    study = next((tiny_tree / "valid").glob("*/*/*"))
    argv = ["predict", "--checkpoint", str(trained_run[0] / "best.pt"), str(study)]
    assert main([*argv, "--tta", "flip"]) == 2
    assert "was chosen with TTA 'none', not 'flip'" in capsys.readouterr().err


def test_mura_ensemble_with_tta_calibrates_and_predict_uses_it(
    tmp_path, top_k_run, tiny_tree, shared_cache_dir, capsys
) -> None:
    out, _ = top_k_run
    manifest = tmp_path / "flip.json"
    argv = ["ensemble", str(out / "ensemble.json"), "--out", str(manifest), "--tta", "flip"]
    argv += ["--data", str(tiny_tree), "--device", "cpu", "--cache-dir", str(shared_cache_dir)]
    assert main(argv) == 0
    assert "2 members" in capsys.readouterr().out
    written = read_manifest(manifest)
    assert written["tta"] == "flip" and written["threshold_chosen_on"]["tta"] == "flip"
    study = next((tiny_tree / "valid").glob("*/*/*"))
    [result] = predict_paths(manifest, [study], device="cpu")
    assert result["tta"] == "flip" and result["n_members"] == 2
    assert result["threshold"] == written["threshold"]


def test_cli_tta_choices_are_the_engines() -> None:
    assert TTA_CHOICES == TTA_MODES
