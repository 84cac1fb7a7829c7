"""reinit(model, scheme, only=...): part of a model, planned as the whole model (roles, paths, keyed values)."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

import torchinit
from torchinit import InitError, reinit


class Classifier(nn.Module):
    """A body and a new head: ``head`` is the readout (a conventional output name, the last dense layer)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(32, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU())
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class TiedLM(nn.Module):
    def __init__(self, vocab: int = 50, width: int = 16) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.block = nn.Linear(width, width)
        self.lm_head = nn.Linear(width, vocab, bias=False)
        self.lm_head.weight = self.embed.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.lm_head(torch.relu(self.block(self.embed(ids))))


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], keys: object = None) -> bool:
    return all(torch.equal(a[k], b[k]) for k in (keys or a))  # type: ignore[attr-defined]


def test_a_head_gets_its_whole_model_role_path_and_keyed_values() -> None:
    torch.manual_seed(0)
    model, whole = Classifier(), Classifier()
    whole.load_state_dict(model.state_dict())
    before = _state(model)
    everything = reinit(whole, "kaiming_relu", seed=7)
    report = reinit(model, "kaiming_relu", seed=7, only="head")
    assert [e.path for e in report] == ["head.weight", "head.bias"]
    assert report["head.weight"].role == "readout" == everything["head.weight"].role
    assert report["head.weight"].std == pytest.approx(1 / math.sqrt(64))  # gain 1: the readout's rule
    assert torch.equal(model.head.weight, whole.head.weight)  # keyed by path: the whole-model values
    assert _same(before, _state(model), [k for k in before if not k.startswith("head.")])
    alone = reinit(model.head, "kaiming_relu", seed=7)  # the head on its own is just a hidden dense layer
    assert alone["weight"].role == "dense" and alone["weight"].std == pytest.approx(math.sqrt(2 / 64))


def test_only_takes_paths_of_modules_and_parameters_and_lists_of_them() -> None:
    model = Classifier()
    report = reinit(model, "kaiming_relu", only=["body.0", "head.bias"])
    assert [e.path for e in report] == ["body.0.weight", "body.0.bias", "head.bias"]
    report = reinit(model, "kaiming_relu", only=("body.3.weight",))
    assert [e.path for e in report] == ["body.3.weight"]


def test_norm_statistics_reset_only_under_only() -> None:
    model = Classifier().train()
    model(torch.randn(8, 32))
    stats = model.body[1].running_mean.clone()
    report = reinit(model, "kaiming_relu", only="head")
    assert torch.equal(model.body[1].running_mean, stats) and report.buffers == []
    report = reinit(model, "kaiming_relu", only="body.1")
    assert not model.body[1].running_mean.any() and report.buffers == [
        "body.1.running_mean", "body.1.running_var", "body.1.num_batches_tracked"
    ]  # fmt: skip


def test_a_tied_table_is_written_through_any_of_its_paths() -> None:
    torch.manual_seed(0)
    model = TiedLM()
    before = _state(model)
    report = reinit(model, "kaiming_relu", seed=1, only="lm_head")
    (entry,) = list(report)
    assert entry.path == "embed.weight" and entry.aliases == ("lm_head.weight",) and entry.role == "readout"
    assert model.lm_head.weight is model.embed.weight
    assert torch.equal(model.block.weight, before["block.weight"])


@pytest.mark.parametrize(
    "only",
    ["hed", "", 5, [], ["head", "body.9"], "body.0.weight.x", ["head", None]],
)
def test_bad_only_is_an_init_error_naming_the_nearest_path_and_changes_nothing(only: object) -> None:
    model = Classifier()
    before = _state(model)
    state = torch.get_rng_state()
    with pytest.raises(InitError, match=r"only="):
        reinit(model, "kaiming_relu", only=only)  # type: ignore[arg-type]
    assert _same(before, _state(model)) and torch.equal(state, torch.get_rng_state())
    with pytest.raises(InitError, match="nearest path: 'head'"):
        reinit(model, "kaiming_relu", only="hed")


def test_only_through_data_parallel_takes_the_state_dict_name() -> None:
    model = Classifier()
    report = reinit(nn.DataParallel(model), "kaiming_relu", only="module.head")
    assert [e.path for e in report] == ["head.weight", "head.bias"]


def test_legacy_and_lsuv_write_only_the_part_and_warn_only_about_it() -> None:
    model = TiedLM()
    before = _state(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error", torchinit.TiedTableWarning)  # the tied table is not written: no warning
        report = reinit(model, "legacy", only="block")
    assert [e.path for e in report] == ["block.weight", "block.bias"]
    assert torch.equal(model.embed.weight, before["embed.weight"])
    with pytest.warns(torchinit.TiedTableWarning):
        reinit(model, "legacy", only="embed")
    model = Classifier().eval()
    before = _state(model)
    report = reinit(model, "lsuv", data=torch.randn(64, 32), only="body.3")
    assert [layer.path for layer in report.lsuv] == ["body.3"]
    assert _same(before, _state(model), [k for k in before if not k.startswith("body.3.")])
    assert not torch.equal(model.body[3].weight, before["body.3.weight"])


def test_a_glob_in_only_is_refused_with_the_way_to_select_by_pattern() -> None:
    # "body.*" was refused naming 'body.3' as the nearest path, as if it were a typo of one
    model = Classifier()
    with pytest.raises(InitError, match=r"only='body\.\*' is a pattern; only= takes paths.*fnmatch"):
        reinit(model, "kaiming_relu", only="body.*")


def test_a_path_that_begins_a_parameter_s_name_names_that_parameter() -> None:
    # under torch's older spectral_norm hook the parameter is "0.weight_orig": "0.weight" was pointed to "1.weight"
    model = nn.Sequential(nn.utils.spectral_norm(nn.Linear(4, 4)), nn.Linear(4, 4))
    with pytest.raises(InitError, match=r"only='0.weight' selects no parameter of 4 \(nearest path: '0.weight_orig'\)"):
        reinit(model, "kaiming_relu", only="0.weight")
    assert [e.path for e in reinit(model, "kaiming_relu", only="0.weight_orig")] == ["0.weight_orig"]
