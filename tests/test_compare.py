"""Paired comparisons of two models on the same studies: DeLong's test, McNemar's test, the
paired bootstrap over patients, and `mura compare` on two evaluation folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest
from sklearn.metrics import roc_auc_score

from mura_lib.cli import main
from mura_lib.errors import MuraError
from mura_lib.evaluation.bootstrap import group_rng
from mura_lib.evaluation.compare import (
    compare_evaluations,
    compare_predictions,
    delong_test,
    mcnemar_test,
    paired_bootstrap,
)
from mura_lib.evaluation.predictions import write_predictions


def delong_by_definition(y: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """DeLong et al. (1988) as written: structural components from the pairwise kernel
    psi(X, Y) = 1, 1/2, 0 (X abnormal, Y normal), then the variance of the difference."""
    pos, neg = y == 1, y == 0

    def components(score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x, z = score[pos][:, None], score[neg][None, :]
        psi = (x > z) + 0.5 * (x == z)
        return psi.mean(axis=1), psi.mean(axis=0)  # V10 (per abnormal), V01 (per normal)

    (v10a, v01a), (v10b, v01b) = components(a), components(b)
    s10 = np.cov(np.stack([v10a, v10b]))
    s01 = np.cov(np.stack([v01a, v01b]))
    s = s10 / pos.sum() + s01 / neg.sum()
    diff = v10b.mean() - v10a.mean()
    return float(diff), float(np.sqrt(s[0, 0] + s[1, 1] - 2 * s[0, 1]))


@pytest.fixture
def scores() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    y = (rng.random(120) < 0.4).astype(int)
    a = np.clip(0.5 + 0.25 * (y - 0.5) + rng.normal(0, 0.25, 120), 0, 1)
    b = np.clip(0.5 + 0.45 * (y - 0.5) + rng.normal(0, 0.2, 120), 0, 1)
    return y, np.round(a, 2), np.round(b, 2)  # rounded: ties, which DeLong must handle


def test_delong_matches_the_definition_and_scikit_learn(scores) -> None:
    y, a, b = scores
    result = delong_test(y, a, b)
    diff, se = delong_by_definition(y, a, b)
    assert result["auroc_a"] == pytest.approx(roc_auc_score(y, a), abs=1e-12)
    assert result["auroc_b"] == pytest.approx(roc_auc_score(y, b), abs=1e-12)
    assert result["diff"] == pytest.approx(diff, abs=1e-12)
    assert result["se"] == pytest.approx(se, rel=1e-9)
    assert result["z"] == pytest.approx(diff / se, rel=1e-9)
    assert 0 <= result["p"] < 0.05  # b is built to be better


def test_delong_of_a_model_with_itself() -> None:
    y = np.array([0, 0, 1, 1, 0, 1])
    p = np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.9])
    assert delong_test(y, p, p) == {
        "auroc_a": roc_auc_score(y, p),
        "auroc_b": roc_auc_score(y, p),
        "diff": 0.0,
        "se": 0.0,
        "z": 0.0,
        "p": 1.0,
    }


def test_delong_needs_two_of_each_class() -> None:
    result = delong_test(np.array([1, 0, 0]), np.array([0.9, 0.1, 0.2]), np.array([0.5] * 3))
    assert result["p"] is None and "two abnormal and two normal" in result["undefined"]


def test_paired_interval_of_a_model_with_itself_is_zero(scores) -> None:
    y, a, _ = scores
    result = paired_bootstrap(y, a, a, 0.5, 0.5, n_boot=200, seed=1)
    for metric in ("kappa", "auroc"):
        assert result[metric]["diff"] == 0.0
        assert result[metric]["ci"] == [0.0, 0.0]  # covers 0: the same studies each time


def test_paired_interval_excludes_zero_for_a_clearly_better_model(scores) -> None:
    y, a, _ = scores
    perfect = np.where(y == 1, 0.9, 0.1)
    result = paired_bootstrap(y, a, perfect, 0.5, 0.5, n_boot=300, seed=1)
    for metric in ("kappa", "auroc"):
        lo, hi = result[metric]["ci"]
        assert 0 < lo <= result[metric]["diff"] <= hi


def test_paired_interval_is_narrower_than_the_unpaired_difference(scores) -> None:
    """The point of pairing: a correlated pair of models has a tight difference."""
    y, a, _ = scores
    rng = np.random.default_rng(0)
    close = np.clip(a + rng.normal(0, 0.02, len(a)), 0, 1)
    result = paired_bootstrap(y, a, close, 0.5, 0.5, n_boot=300, seed=2)
    lo, hi = result["auroc"]["ci"]
    assert lo <= 0 <= hi and hi - lo < 0.05


def predictions_frame(y: np.ndarray, prob: np.ndarray, parts: list[str]) -> pd.DataFrame:
    """One image per study; a patient has two consecutive studies (of two parts if several)."""
    return pd.DataFrame(
        {
            "study_id": [f"s{i:03d}" for i in range(len(y))],
            "body_part": [parts[i % len(parts)] for i in range(len(y))],
            "patient_id": [f"p{i // 2:03d}" for i in range(len(y))],
            "view": 1,
            "label": y,
            "prob": prob,
            "rel_path": [f"img{i}.png" for i in range(len(y))],
        }
    )


def test_compare_predictions_overall_and_per_part(scores) -> None:
    y, a, b = scores
    parts = ["XR_HAND", "XR_WRIST"]
    result = compare_predictions(
        predictions_frame(y, a, parts), predictions_frame(y, b, parts), 0.5, 0.4, n_boot=100
    )
    assert result["n_studies"] == len(y)
    assert set(result["study"]["by_body_part"]) == set(parts)
    overall = result["study"]["overall"]
    assert overall["auroc"]["a"] == pytest.approx(roc_auc_score(y, a))
    assert overall["auroc"]["diff"] == pytest.approx(overall["auroc"]["b"] - overall["auroc"]["a"])
    assert overall["auroc"]["delong_p"] == pytest.approx(delong_test(y, a, b)["p"])
    assert "delong_p" not in overall["kappa"]
    assert result["bootstrap"]["unit"] == "patient" and result["bootstrap"]["n_units"] == 60
    hand = y[::2], a[::2], b[::2]
    assert result["study"]["by_body_part"]["XR_HAND"]["auroc"]["delong_p"] == pytest.approx(
        delong_test(*hand)["p"]
    )


def write_evaluation(folder: Path, frame: pd.DataFrame, threshold: float) -> Path:
    write_predictions(frame, folder / "predictions.csv")
    (folder / "metrics.json").write_text(
        json.dumps({"threshold": threshold, "aggregation": "mean"})
    )
    return folder


def test_mura_compare_prints_one_json_object(tmp_path, scores, capsys) -> None:
    y, a, b = scores
    dir_a = write_evaluation(tmp_path / "a", predictions_frame(y, a, ["XR_HAND"]), 0.5)
    dir_b = write_evaluation(tmp_path / "b", predictions_frame(y, b, ["XR_HAND"]), 0.5)
    assert main(["compare", str(dir_a), str(dir_b), "--n-boot", "50"]) == 0
    result = json.loads(capsys.readouterr().out)
    for block in (result["study"]["overall"], result["study"]["by_body_part"]["XR_HAND"]):
        assert set(block) == {"kappa", "accuracy", "auroc"}
        assert {"a", "b", "diff", "ci"} <= set(block["kappa"])
        assert {"a", "b", "diff", "ci", "mcnemar_p", "n_a_only", "n_b_only"} <= set(
            block["accuracy"]
        )
        assert {"a", "b", "diff", "ci", "delong_p"} <= set(block["auroc"])
    assert result == compare_evaluations(dir_a, dir_b, n_boot=50)


def test_mura_compare_refuses_different_studies(tmp_path, scores, capsys) -> None:
    y, a, b = scores
    dir_a = write_evaluation(tmp_path / "a", predictions_frame(y, a, ["XR_HAND"]), 0.5)
    dir_b = write_evaluation(tmp_path / "b", predictions_frame(y[:-3], b[:-3], ["XR_HAND"]), 0.5)
    assert main(["compare", str(dir_a), str(dir_b)]) == 2
    err = capsys.readouterr().err
    assert "are not over the same studies (3 only in the first" in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_compare_refuses_different_labels(tmp_path, scores) -> None:
    y, a, b = scores
    dir_a = write_evaluation(tmp_path / "a", predictions_frame(y, a, ["XR_HAND"]), 0.5)
    dir_b = write_evaluation(tmp_path / "b", predictions_frame(1 - y, b, ["XR_HAND"]), 0.5)
    with pytest.raises(MuraError, match="different labels"):
        compare_evaluations(dir_a, dir_b)


def test_compare_names_a_folder_that_is_not_an_evaluation(tmp_path) -> None:
    with pytest.raises(MuraError, match=r"predictions.csv does not exist: pass folders written"):
        compare_evaluations(tmp_path, tmp_path)


def test_mcnemar_is_the_exact_binomial_test_of_the_discordant_studies(scores) -> None:
    y, a, b = scores
    parts = ["XR_HAND", "XR_WRIST"]
    result = compare_predictions(
        predictions_frame(y, a, parts), predictions_frame(y, b, parts), 0.55, 0.4, n_boot=20
    )
    hand = np.arange(len(y)) % 2 == 0
    for block, rows in [
        (result["study"]["overall"]["accuracy"], np.ones(len(y), dtype=bool)),
        (result["study"]["by_body_part"]["XR_HAND"]["accuracy"], hand),
    ]:
        right_a = (a[rows] >= 0.55).astype(int) == y[rows]
        right_b = (b[rows] >= 0.4).astype(int) == y[rows]
        a_only = sum(1 for ra, rb in zip(right_a, right_b, strict=True) if ra and not rb)
        b_only = sum(1 for ra, rb in zip(right_a, right_b, strict=True) if rb and not ra)
        assert (block["n_a_only"], block["n_b_only"]) == (a_only, b_only)
        assert a_only + b_only > 0
        assert block["mcnemar_p"] == binomtest(a_only, a_only + b_only, 0.5).pvalue
        assert block["diff"] == pytest.approx((b_only - a_only) / rows.sum())


def test_mcnemar_without_discordant_studies_is_one() -> None:
    y = np.array([0, 1, 1, 0])
    result = mcnemar_test(
        y, np.array([0.1, 0.9, 0.2, 0.3]), np.array([0.2, 0.8, 0.1, 0.4]), 0.5, 0.5
    )
    assert result == {"n_a_only": 0, "n_b_only": 0, "mcnemar_p": 1.0}


def test_paired_bootstrap_draws_patients_for_both_models(scores) -> None:
    y, a, b = scores
    patients = np.arange(len(y)) // 3
    result = paired_bootstrap(y, a, b, 0.5, 0.5, n_boot=40, seed=4, name="x", groups=patients)
    # the same draws by hand: patients in order of first appearance, all their studies
    draws = group_rng(4, "x").integers(0, 40, size=(40, 40))
    diffs = []
    for draw in draws:
        rows = np.concatenate([np.flatnonzero(patients == u) for u in draw])
        diffs.append(roc_auc_score(y[rows], b[rows]) - roc_auc_score(y[rows], a[rows]))
    np.testing.assert_allclose(result["auroc"]["ci"], np.percentile(diffs, [2.5, 97.5]))


def test_compare_without_patient_ids_resamples_studies_and_says_so(scores) -> None:
    y, a, b = scores
    frame_a = predictions_frame(y, a, ["XR_HAND"]).drop(columns="patient_id")
    frame_b = predictions_frame(y, b, ["XR_HAND"]).drop(columns="patient_id")
    result = compare_predictions(frame_a, frame_b, 0.5, 0.5, n_boot=20)
    assert result["bootstrap"]["unit"] == "study" and result["bootstrap"]["n_units"] == len(y)
    assert "no patient_id column" in result["bootstrap"]["unit_note"]


def test_mura_compare_refuses_different_patients(tmp_path, scores, capsys) -> None:
    y, a, b = scores
    other = predictions_frame(y, b, ["XR_HAND"])
    other.loc[5, "patient_id"] = "p999"
    dir_a = write_evaluation(tmp_path / "a", predictions_frame(y, a, ["XR_HAND"]), 0.5)
    dir_b = write_evaluation(tmp_path / "b", other, 0.5)
    assert main(["compare", str(dir_a), str(dir_b), "--n-boot", "10"]) == 2
    err = capsys.readouterr().err
    assert "give study s005 (and 0 more) different patients" in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_mura_compare_names_a_file_with_empty_patient_ids(tmp_path, scores, capsys) -> None:
    y, a, b = scores
    gaps = predictions_frame(y, b, ["XR_HAND"])
    gaps.loc[3, "patient_id"] = None
    dir_a = write_evaluation(tmp_path / "a", predictions_frame(y, a, ["XR_HAND"]), 0.5)
    dir_b = write_evaluation(tmp_path / "b", gaps, 0.5)
    assert main(["compare", str(dir_a), str(dir_b), "--n-boot", "10"]) == 2
    err = capsys.readouterr().err
    assert "patient_id is empty in 1 row(s) (e.g. study s003)" in err
    assert err.count("\n") == 1 and "Traceback" not in err
