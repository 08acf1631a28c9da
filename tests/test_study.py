"""Study-level models: segment pooling, study batches, training, evaluation and predict."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mura_lib.data.batches import BatchLoader, pack
from mura_lib.errors import ConfigError
from mura_lib.inference.evaluate import evaluate_checkpoint
from mura_lib.inference.predict import predict_paths
from mura_lib.models.build import build_model, build_study_model, model_from_checkpoint
from mura_lib.models.checkpoint import load_checkpoint
from mura_lib.models.study import StudyModel, segment_max, segment_softmax, segment_sum
from mura_lib.reports import model_comparison
from mura_lib.reports.error_analysis import attention_spread
from mura_lib.training.config import TrainConfig
from mura_lib.training.study_heads import (
    CONTROL,
    control_checkpoint,
    fit_study_heads,
    parse_heads,
    study_checkpoints,
    study_head_config,
    study_heads_table,
)
from mura_lib.training.train import fit

pytest_plugins = ["fixtures_training"]
pytestmark = pytest.mark.usefixtures("one_torch_thread")

HEADS = ("mean", "max", "attention")


def _studies(sizes: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(sum(sizes), 1, 32, 32, generator=gen)
    index = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    return x, index


def _model(head: str) -> StudyModel:
    torch.manual_seed(0)
    return StudyModel(build_model("small_cnn", "none"), head).eval()


def test_segment_operations_equal_a_loop_over_segments():
    gen = torch.Generator().manual_seed(1)
    values = torch.randn(9, generator=gen)
    index = torch.tensor([0, 0, 1, 2, 2, 2, 1, 3, 0])
    for s in range(4):
        mine = values[index == s]
        assert torch.isclose(segment_sum(values, index, 4)[s], mine.sum())
        assert segment_max(values, index, 4)[s] == mine.max()
        assert torch.allclose(segment_softmax(values, index, 4)[index == s], mine.softmax(0))


@pytest.mark.parametrize("head", HEADS)
def test_segment_pooling_equals_a_per_study_loop(head):
    model = _model(head)
    sizes = [1, 3, 2, 11, 1]
    x, index = _studies(sizes)
    with torch.no_grad():
        batched = model(x, index, len(sizes))
        weights = model.view_weights.clone()
        for s, lo in enumerate(np.cumsum([0, *sizes[:-1]])):
            alone = model(x[lo : lo + sizes[s]], torch.zeros(sizes[s], dtype=torch.long), 1)
            assert torch.allclose(alone[0], batched[s], atol=1e-5)
            assert torch.allclose(model.view_weights, weights[lo : lo + sizes[s]], atol=1e-5)


@pytest.mark.parametrize("head", HEADS)
def test_study_score_ignores_view_order_and_batch_neighbours(head):
    model = _model(head)
    x, index = _studies([4])
    with torch.no_grad():
        alone = model(x, index, 1)[0]
        shuffled = model(x[torch.tensor([2, 0, 3, 1])], index, 1)[0]
        others, other_index = _studies([2, 5], seed=3)
        mixed = model(
            torch.cat([others[:2], x, others[2:]]),
            torch.tensor([0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 2]),
            3,
        )[1]
    assert torch.allclose(alone, shuffled, atol=1e-5)
    assert torch.allclose(alone, mixed, atol=1e-5)


@pytest.mark.parametrize("head", HEADS)
def test_view_weights_sum_to_one_per_study(head):
    model = _model(head)
    sizes = [2, 1, 5, 3]
    x, index = _studies(sizes, seed=2)
    with torch.no_grad():
        model(x, index, len(sizes))
    sums = segment_sum(model.view_weights, index, len(sizes))
    assert torch.allclose(sums, torch.ones(len(sizes)), atol=1e-6)
    assert (model.view_weights >= 0).all()


def test_every_parameter_gets_a_gradient_under_attention():
    model = _model("attention").train()
    x, index = _studies([2, 3])
    model(x, index, 2).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def _frame(sizes: list[int]) -> pd.DataFrame:
    study_id = [f"s{i}" for i, n in enumerate(sizes) for _ in range(n)]
    return pd.DataFrame({"study_id": study_id, "label": [i % 2 for i in range(len(study_id))]})


def study_loader(images: np.ndarray, frame: pd.DataFrame, max_views: int, **kwargs) -> BatchLoader:
    return BatchLoader(images, None, max_views, groups=frame["study_id"].to_numpy(), **kwargs)


def test_study_batches_keep_studies_whole_and_never_exceed_the_cap():
    rng = np.random.default_rng(0)
    sizes = [int(v) for v in rng.integers(1, 12, 60)]
    frame = _frame(sizes)
    images = np.zeros((len(frame), 8, 8), dtype=np.uint8)
    loader = study_loader(images, frame, 16, seed=3)
    seen = []
    for batch in loader.epoch(0):
        assert len(batch.images) <= 16
        for s in range(batch.n_groups):
            rows = batch.index[batch.group_index == s].numpy()
            assert set(frame["study_id"].iloc[rows]) == {f"s{batch.groups[s]}"}
            assert len(rows) == sizes[batch.groups[s]]
        seen += list(batch.groups)
    assert sorted(seen) == list(range(60))  # every study once, one process
    again = [b.groups.tolist() for b in study_loader(images, frame, 16, seed=3).epoch(0)]
    assert again == [b.groups.tolist() for b in loader.epoch(0)]  # (seed, epoch) fixes it
    assert again != [b.groups.tolist() for b in loader.epoch(1)]


def test_study_batches_shard_studies_across_ranks_with_equal_steps():
    sizes = [1, 2, 3, 4, 5, 6, 7, 1, 1, 2, 9]
    frame = _frame(sizes)
    images = np.zeros((len(frame), 8, 8), dtype=np.uint8)
    ranks = [study_loader(images, frame, 11, seed=0, rank=r, world_size=2) for r in (0, 1)]
    batches = [list(loader.epoch(0)) for loader in ranks]
    assert len(batches[0]) == len(batches[1])
    mine = [{s for b in shard for s in b.groups} for shard in batches]
    assert not mine[0] & mine[1]
    evaluation = [
        study_loader(images, frame, 11, shuffle=False, rank=r, world_size=2) for r in (0, 1)
    ]
    covered = sorted(s for loader in evaluation for b in loader.epoch(0) for s in b.groups)
    assert covered == list(range(len(sizes)))


def test_a_study_larger_than_the_cap_is_refused_by_name():
    frame = _frame([2, 7])
    with pytest.raises(ConfigError, match=r"study_max_views=5 .*s1: 7 views.*at least 7"):
        study_loader(np.zeros((9, 8, 8), np.uint8), frame, 5)


def test_pack_is_greedy_in_order():
    assert [b.tolist() for b in pack(np.array([3, 3, 3, 1, 5]), 6)] == [[0, 1], [2, 3], [4]]
    assert [b.tolist() for b in pack(np.ones(5, dtype=int), 2)] == [[0, 1], [2, 3], [4]]


@pytest.fixture(scope="module")
def study_run(tmp_path_factory, tiny_tree, tiny_config):
    out = tmp_path_factory.mktemp("study_run") / "run"
    config = replace(tiny_config, study_head="attention", study_max_views=8)
    summary = fit(tiny_tree, out, config, progress="none")
    return out, summary, config


def test_a_study_level_run_trains_evaluates_and_predicts(tmp_path, tiny_tree, study_run):
    out, summary, _ = study_run
    ckpt = load_checkpoint(out / "best.pt")
    assert ckpt["model_args"]["study_head"] == "attention"
    assert isinstance(model_from_checkpoint(ckpt), StudyModel)
    val = pd.read_csv(out / "val_predictions.csv")
    # every view of a study carries the study's probability; the weights sum to 1 per study
    assert (val.groupby("study_id")["prob"].nunique() == 1).all()
    assert np.allclose(val.groupby("study_id")["view_weight"].sum(), 1, atol=1e-5)

    report = evaluate_checkpoint(
        out / "best.pt", tiny_tree, tmp_path / "eval", device="cpu", n_boot=20, progress="none"
    )
    assert report["study"]["overall"]["auroc"] is not None
    predictions = pd.read_csv(tmp_path / "eval" / "predictions.csv")
    assert "view_weight" in predictions
    study = predictions.groupby("study_id").first().index[0]
    rows = predictions[predictions["study_id"] == study]
    folder = tiny_tree / rows["rel_path"].iloc[0].split("/", 1)[1].rsplit("/", 1)[0]
    [result] = predict_paths(out / "best.pt", [folder], device="cpu", cam_dir=tmp_path / "cams")
    assert result["n_views"] == len(rows)
    assert np.isclose(sum(result["view_weights"]), 1, atol=1e-5)
    assert np.isclose(result["prob"], rows["prob"].iloc[0], atol=1e-4)
    assert len(list((tmp_path / "cams").glob("*_cam.png"))) == len(rows)


def test_a_study_level_run_resumes_to_the_uninterrupted_result(
    tmp_path, monkeypatch, tiny_tree, study_run
):
    import mura_lib.training.train as train_module

    out_a, summary_a, config = study_run
    real = train_module.train_one_epoch

    def interrupted(model, loader, augmenter, optimizer, epoch, **kwargs):
        if epoch == 1:
            raise KeyboardInterrupt
        return real(model, loader, augmenter, optimizer, epoch, **kwargs)

    out = tmp_path / "resumed"
    monkeypatch.setattr(train_module, "train_one_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fit(tiny_tree, out, config, progress="none")
    monkeypatch.undo()
    summary = fit(tiny_tree, out, config, resume=True, progress="none")
    assert summary["metrics"] == summary_a["metrics"]
    a = load_checkpoint(out_a / "last.pt")["model"]
    b = load_checkpoint(out / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_study_model_starts_from_an_image_level_checkpoint(trained_run):
    out, _ = trained_run
    model = build_study_model("small_cnn", str(out / "best.pt"), "attention")
    image = load_checkpoint(out / "best.pt")["model"]
    assert all(torch.equal(model.backbone.state_dict()[k], v) for k, v in image.items())


def test_a_planted_finding_on_one_view_draws_the_attention_to_that_view(
    tmp_path, tiny_config, planted_tree
):
    """Abnormal studies of 3-4 views with the finding on one view only: after a short
    training from scratch the attention head puts most of each study's weight on that view
    (the untrained head spreads it about evenly: 1/3-1/4 a view)."""
    root, planted = planted_tree
    config = replace(
        tiny_config,
        epochs=6,
        lr=3e-3,
        study_head="attention",
        study_max_views=16,
        select_metric="val_loss",
        keep_top_k=0,
        cache_dir=str(tmp_path / "cache"),
    )
    fit(root, tmp_path / "run", config, progress="none")
    evaluate_checkpoint(
        tmp_path / "run" / "best.pt",
        root,
        tmp_path / "eval",
        device="cpu",
        n_boot=10,
        progress="none",
    )
    predictions = pd.read_csv(tmp_path / "eval" / "predictions.csv")
    folder = predictions["rel_path"].str.split("/", n=1).str[1].str.rsplit("/", n=1).str[0]
    view = predictions["rel_path"].str.extract(r"image(\d+)\.png$")[0].astype(int)
    tested = [rel for rel in planted if rel.startswith("valid/")]
    assert len(tested) == 15
    for rel in tested:
        weights = predictions.loc[folder == rel, "view_weight"].to_numpy()
        on_planted = weights[(view[folder == rel] == planted[rel]).to_numpy()]
        assert weights.argmax() == planted[rel] - 1, (rel, weights)
        assert on_planted.item() > 0.8, (rel, weights)


def test_study_heads_parse_and_refuse_unknown_names():
    assert parse_heads(" mean, attention ") == ["mean", "attention"]
    assert parse_heads("") == []
    with pytest.raises(ConfigError, match="none is not a study-level head"):
        parse_heads("mean,none")
    with pytest.raises(ConfigError, match="avg"):
        parse_heads("avg")


def test_a_head_trains_the_layers_the_image_level_run_trained(tiny_config):
    scratch = study_head_config(tiny_config, Path("run/best.pt"), "max", 2, 1e-4)
    assert (scratch.trainable, scratch.weights, scratch.study_head) == ("all", "run/best.pt", "max")
    assert (scratch.epochs, scratch.lr, scratch.keep_top_k) == (2, 1e-4, 0)
    pretrained = replace(tiny_config, arch="resnet18", weights="imagenet", trainable="auto")
    assert study_head_config(pretrained, Path("b.pt"), "mean", 1, 1e-5).trainable == (
        "layer2,layer3,layer4,fc"
    )


def test_study_heads_fine_tune_from_the_image_level_checkpoint(tmp_path, tiny_tree, trained_run):
    run, _ = trained_run
    models = tmp_path / "models"
    models.mkdir()
    assert fit_study_heads(tiny_tree, models, TrainConfig(), [], epochs=1, lr=1e-4) == {}
    assert not (models / "study").exists()  # no heads: no control either
    with pytest.raises(ConfigError, match="no image-level checkpoint"):
        fit_study_heads(tiny_tree, models, TrainConfig(), ["mean"], epochs=1, lr=1e-4)
    shutil.copy(run / "best.pt", models / "best.pt")
    config = load_checkpoint(run / "best.pt")["train_args"]
    summaries = fit_study_heads(
        tiny_tree, models, TrainConfig(**config), ["mean"], epochs=1, lr=1e-4
    )
    # the equal-work control first: the image-level model fine-tuned the same way
    assert list(summaries) == [CONTROL, "mean"]
    assert all(s["epochs_run"] == 1 for s in summaries.values())
    assert study_checkpoints(models) == {"mean": models / "study" / "mean" / "best.pt"}
    control = control_checkpoint(models)
    assert control == models / "study" / "image-level" / "best.pt"
    control_args = load_checkpoint(control)
    assert control_args["model_args"].get("study_head", "none") == "none"
    assert control_args["train_args"]["weights"] == str(models / "best.pt")
    assert control_args["train_args"]["lr"] == 1e-4
    assert (
        load_checkpoint(models / "study" / "mean" / "best.pt")["model_args"]["study_head"] == "mean"
    )
    found = model_comparison.variants(models / "best.pt", None, study_checkpoints(models), control)
    assert found["study mean"] == (models / "study" / "mean" / "best.pt", "none")
    assert found[model_comparison.FINE_TUNED] == (control, "none")
    table = study_heads_table(summaries)
    assert list(table.index) == [CONTROL, "mean"]
    assert table.loc["mean", "epochs_run"] == 1
    assert {"val_loss", "val_study_kappa", "val_study_auroc", "threshold"} <= set(table.columns)


def test_attention_spread_compares_the_top_weight_with_uniform():
    predictions = pd.DataFrame(
        {
            "study_id": ["a", "b", "b", "c", "c", "d", "d", "d"],
            "view_weight": [1.0, 0.5, 0.5, 0.9, 0.1, 0.2, 0.3, 0.5],
        }
    )
    table = attention_spread(predictions)
    assert table.loc[2].tolist() == pytest.approx([2, 0.5, 0.7, 0.9])
    assert table.loc[3].tolist() == pytest.approx([1, 1 / 3, 0.5, 0.5])
    assert table.loc[1, "mean_top"] == 1.0
