"""LSUV: every layer's output std on the batch ends within tolerance; modes, no_grad and errors."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import torchinit
from torchinit import InitError, LSUVScheme, reinit

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "none": nn.Identity}


def layer_output_stds(model: nn.Module, data: torch.Tensor) -> dict[str, float]:
    stds: dict[str, float] = {}

    def hook(name: str) -> Any:
        def record(module: nn.Module, args: Any, out: torch.Tensor) -> None:
            stds[name] = float(out.std())  # returns None: the output itself is left alone

        return record

    hooks = [
        m.register_forward_hook(hook(n)) for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))
    ]
    with torch.no_grad():
        model(data)
    for h in hooks:
        h.remove()
    return stds


@settings(max_examples=12)
@given(
    depth=st.integers(1, 8), width=st.integers(8, 48), activation=st.sampled_from(list(ACTIVATIONS)),
    conv=st.booleans(), center=st.booleans(), tol=st.sampled_from([0.02, 0.1]), seed=st.integers(0, 2**31),
)  # fmt: skip
def test_every_layer_ends_within_tolerance(
    depth: int, width: int, activation: str, conv: bool, center: bool, tol: float, seed: int
) -> None:
    torch.manual_seed(seed)
    act = ACTIVATIONS[activation]
    if conv:
        layers: list[nn.Module] = [nn.Conv2d(3, width, 3, padding=1), act()]
        layers += [m for _ in range(depth) for m in (nn.Conv2d(width, width, 3, padding=1), act())]
        model, data = nn.Sequential(*layers), torch.randn(8, 3, 12, 12) * 3 + 1
    else:
        layers = [nn.Linear(20, width), act()] + [m for _ in range(depth) for m in (nn.Linear(width, width), act())]
        model, data = nn.Sequential(*layers), torch.randn(256, 20) * 3 + 1
    report = reinit(model, LSUVScheme(tol=tol, center=center, max_iter=20), data=data)
    stds = layer_output_stds(model, data)
    assert len(report.lsuv) == len(stds) == depth + 1
    for name, std in stds.items():
        assert abs(std - 1.0) <= tol, (name, std, report.lsuv)
    assert all(layer.converged for layer in report.lsuv)


def test_modes_restored_and_no_grad_safe() -> None:
    model = nn.Sequential(nn.Linear(10, 10), nn.Dropout(0.5), nn.BatchNorm1d(10), nn.Linear(10, 10))
    model[2].eval()  # a mixed-mode model: each module's flag must come back as it was
    modes = [m.training for m in model.modules()]
    with torch.no_grad():
        report = reinit(model, "lsuv", data=torch.randn(64, 10))
    assert [m.training for m in model.modules()] == modes
    assert [layer.path for layer in report.lsuv] == ["0", "3"]
    assert "lsuv 3: output std" in str(report)


def test_tuple_and_dict_batches() -> None:
    class Two(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 8)

        def forward(self, x: torch.Tensor, scale: float = 1.0) -> Any:
            return self.b(torch.relu(self.a(x * scale)))

    for data in ((torch.randn(32, 4), 2.0), {"x": torch.randn(32, 4), "scale": 2.0}):
        report = reinit(Two(), "lsuv", data=data)
        assert [layer.path for layer in report.lsuv] == ["a", "b"]


def test_lsuv_errors() -> None:
    model = nn.Sequential(nn.Linear(3, 3))
    before = model[0].weight.clone()
    with pytest.raises(
        InitError, match=r"lsuv needs a batch to measure activations on: reinit\(model, 'lsuv', data=batch\)"
    ):
        reinit(model, "lsuv")
    with pytest.raises(InitError, match="data= is only used by the lsuv scheme; got scheme='kaiming_relu'"):
        reinit(model, "kaiming_relu", data=torch.randn(2, 3))
    with pytest.raises(InitError, match="runs only through reinit"):
        torchinit.build(lambda: nn.Linear(3, 3), "lsuv")
    assert torch.equal(model[0].weight, before)
    with pytest.raises(InitError, match="tol must be a number in"):
        LSUVScheme(tol=0)
    with pytest.raises(InitError, match="max_iter must be a positive integer; got max_iter=0"):
        LSUVScheme(max_iter=0)
    with pytest.raises(InitError, match="base must be a Scheme; got base='orthogonal'"):
        LSUVScheme(base="orthogonal")  # type: ignore[arg-type]
    assert "lsuv" in torchinit.list_schemes()


def test_lsuv_warns_about_uncovered_parameters_like_every_scheme() -> None:
    class WithScale(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(8, 8)
            self.scale = nn.Parameter(torch.full((8,), 2.0))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x) * self.scale

    model = WithScale()
    with pytest.warns(torchinit.UncoveredParameterWarning, match=r"scale \(8,\)"):
        report = reinit(model, "lsuv", data=torch.randn(64, 8))
    assert [e.path for e in report.skipped] == ["scale"]
    assert torch.equal(model.scale, torch.full((8,), 2.0))


# --- one calibrating pass: the 0.2 algorithm's result, at O(layers) forward work -------------------------


def output_of(model: nn.Module, layer: nn.Module, data: torch.Tensor) -> torch.Tensor:
    grabbed: list[torch.Tensor] = []
    hook = layer.register_forward_hook(lambda m, a, o: grabbed.append(o))  # returns None: output untouched
    model(data)
    hook.remove()
    return grabbed[0]


def prefix_lsuv(model: nn.Module, data: torch.Tensor, scheme: LSUVScheme) -> list[tuple[str, float, int]]:
    """The 0.2 algorithm, as the reference: for every measurement, a full forward pass up to the layer."""
    model.eval()
    order: dict[nn.Module, str] = {}
    dense = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    hooks = [
        m.register_forward_hook(lambda m, a, o, n=n: None if m in order else order.update({m: n})) for n, m in dense
    ]
    with torch.no_grad():
        model(data)
    for h in hooks:
        h.remove()
    results = []
    with torch.no_grad():
        for layer, name in order.items():
            for iterations in range(scheme.max_iter + 1):
                out = output_of(model, layer, data)
                if scheme.center and layer.bias is not None:
                    channel = 1 if out.dim() > 2 else out.dim() - 1
                    layer.bias.sub_(out.mean(dim=[d for d in range(out.dim()) if d != channel]))
                    out = output_of(model, layer, data)
                std = float(out.std())
                if abs(std - 1.0) <= scheme.tol or iterations == scheme.max_iter:
                    break
                layer.weight.mul_(1.0 / std)
            results.append((name, std, iterations))
    return results


def mlp() -> nn.Module:
    layers: list[nn.Module] = [nn.Linear(12, 32), nn.Tanh()]
    return nn.Sequential(*layers, *[m for _ in range(5) for m in (nn.Linear(32, 32), nn.ReLU())], nn.Linear(32, 3))


def cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, groups=4), nn.BatchNorm2d(16), nn.GELU(),
        nn.Conv2d(16, 8, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.LazyLinear(5),
    )  # fmt: skip


@pytest.mark.parametrize("center", [False, True])
@pytest.mark.parametrize("make", [mlp, cnn])
def test_one_pass_matches_the_prefix_pass_algorithm(make: Any, center: bool, seed: int) -> None:
    # random biases make the output std nonlinear in the weight scale: several rescalings per layer
    base = torchinit.Scheme.orthogonal().with_overrides(torchinit.Override(path="*.bias", std=0.5))
    scheme = LSUVScheme(tol=0.02, max_iter=8, center=center, base=base)
    data = torch.randn(64, 12) * 2 + 1 if make is mlp else torch.randn(8, 3, 12, 12) * 2 + 1
    new, old = make(), make()
    with torch.no_grad():
        new(data), old(data)  # materialize the lazy layer
    report = reinit(new, scheme, data=data, generator=torch.Generator().manual_seed(seed))
    reinit(old, scheme.base, generator=torch.Generator().manual_seed(seed))
    expected = prefix_lsuv(old, data, scheme)
    assert [(layer.path, layer.iterations) for layer in report.lsuv] == [(n, i) for n, _, i in expected]
    assert center or any(layer.iterations > 1 for layer in report.lsuv)  # centered, one rescaling is exact
    for layer, (_, std, _) in zip(report.lsuv, expected, strict=True):
        assert layer.std == pytest.approx(std, rel=1e-4)
    for (name, a), b in zip(new.state_dict().items(), old.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=name)


def test_forward_work_does_not_grow_with_depth() -> None:
    def passes(depth: int) -> tuple[int, int]:
        model = nn.Sequential(*[m for _ in range(depth) for m in (nn.Linear(16, 16), nn.ReLU())])
        counts = {"model": 0, "layers": 0}
        model.register_forward_pre_hook(lambda *_: counts.__setitem__("model", counts["model"] + 1))
        for layer in model[::2]:
            layer.register_forward_pre_hook(lambda *_: counts.__setitem__("layers", counts["layers"] + 1))
        report = reinit(model, "lsuv", data=torch.randn(128, 16))
        assert all(layer.converged for layer in report.lsuv)
        return counts["model"], counts["layers"]

    shallow, deep = passes(3), passes(30)
    assert shallow[0] == deep[0] == 3  # the data check, the calibrating pass, the final measuring pass
    assert deep[1] <= 30 * (3 + 1)  # each layer: its 3 passes plus a re-run per rescaling (1 here)


def test_a_module_called_several_times_is_solved_on_its_first_call() -> None:
    class Loop(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inp, self.step, self.out = nn.Linear(6, 16), nn.Linear(16, 16), nn.Linear(16, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.inp(x)
            for _ in range(3):
                h = torch.tanh(self.step(h))
            return self.out(h)

    model = Loop()
    data = torch.randn(128, 6)
    report = reinit(model, "lsuv", data=data)
    assert [(layer.path, layer.calls) for layer in report.lsuv] == [("inp", 1), ("step", 3), ("out", 1)]
    stds = layer_output_stds(model, data)  # the first call's (the later ones overwrite it: only step's)
    first: dict[str, float] = {}
    model.step.register_forward_hook(lambda m, a, o: None if first else first.update(std=float(o.std())))
    with torch.no_grad():
        model(data)
    assert abs(first["std"] - 1.0) <= 0.1 and abs(stds["inp"] - 1.0) <= 0.1 and abs(stds["out"] - 1.0) <= 0.1
    assert report.lsuv[1].std == pytest.approx(first["std"], rel=1e-5)
    assert "; called 3 times, solved on the first call" in str(report)


class TiedLM(nn.Module):
    def __init__(self, vocab: int = 50, width: int = 32) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.body = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, width))
        self.norm = nn.LayerNorm(width)
        self.lm_head = nn.Linear(width, vocab, bias=False)
        self.lm_head.weight = self.embed.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.norm(self.body(self.embed(ids))))


def test_a_table_tied_to_the_output_layer_is_solved_once_at_the_output_layer() -> None:
    # As an embedding, unit-std outputs would give logits sqrt(d) times too large (GPT-2: loss 30 for ln V 7.6):
    # the tied table is calibrated where its scale sets the loss, for unit-std logits.
    model = TiedLM()
    ids = torch.randint(0, 50, (8, 16), generator=torch.Generator().manual_seed(0))
    report = reinit(model, "lsuv", data=ids)
    assert model.lm_head.weight is model.embed.weight
    assert [layer.path for layer in report.lsuv] == ["body.0", "body.2", "lm_head"]
    assert report.lsuv[-1].shared_with == ("embed",)
    stds = layer_output_stds(model, ids)  # body.0, body.2 and lm_head
    assert abs(stds["lm_head"] - 1.0) <= 0.1, stds
    # the layers between were solved before the head set the table's scale: without a norm in between their
    # std moved, and the report (measured on the final model) says so rather than claiming 1
    assert all(layer.std == pytest.approx(stds[layer.path], rel=1e-4) for layer in report.lsuv), (stds, report.lsuv)
    entry = report["lm_head.weight"]
    assert entry.source.startswith("lsuv at lm_head: output std 1.0")
    assert "tied, solved once here (shared with embed)" in entry.source
    assert entry.std == pytest.approx(float(model.embed.weight.detach().square().mean().sqrt()), rel=1e-6)
    assert f"then x{report.lsuv[-1].scale:.4g} by lsuv" in entry.rule
    assert f"lsuv lm_head: output std {report.lsuv[-1].std:.4f}" in str(report)
    assert "; tied, also used by embed (solved here once)" in str(report)


@pytest.mark.integration
def test_lsuv_on_a_tied_hugging_face_gpt2() -> None:
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=64, n_positions=16)
    config.bos_token_id = config.eos_token_id = 0
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config)
    ids = torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(0))
    report = reinit(model, "lsuv", data={"input_ids": ids})
    assert report.lsuv[-1].path == "lm_head" and report.lsuv[-1].shared_with == ("transformer.wte",)
    assert "transformer.wte" not in [layer.path for layer in report.lsuv]
    assert all(layer.converged for layer in report.lsuv), report.lsuv
    assert "shared with transformer.wte" in report["lm_head.weight"].source
    with torch.no_grad():
        loss = float(model(ids, labels=ids).loss)
    assert loss < math.log(64) + 1.0  # unit-std logits: about ln V + 1/2 (it was ln V + 22 solved at wte)
    assert "by lsuv" in report["transformer.h.1.mlp.c_proj.weight"].rule


def test_report_entries_give_the_final_std_and_centered_biases() -> None:
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    report = reinit(model, LSUVScheme(center=True), data=torch.randn(64, 8) + 3)
    for i, layer in zip((0, 2), report.lsuv, strict=True):
        weight = report[f"{i}.weight"]
        assert weight.std == pytest.approx(float(model[i].weight.detach().square().mean().sqrt()))
        assert weight.rule == f"orthogonal(gain=1), then x{layer.scale:.4g} by lsuv"
        assert weight.source == f"lsuv at {i}: output std {layer.std:.3f}"
        assert report[f"{i}.bias"].rule == "constant(0), then centered by lsuv"
    assert report["0.bias"].std is not None and report["0.bias"].std > 0


def test_progress_bar_only_when_asked(capsys: pytest.CaptureFixture[str]) -> None:
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    reinit(model, "lsuv", data=torch.randn(32, 8))
    assert capsys.readouterr().err == ""  # stderr is not a terminal here
    reinit(model, LSUVScheme(progress=True), data=torch.randn(32, 8))
    err = capsys.readouterr().err
    assert err.endswith("3/3 3 layers\n") and "\rlsuv [" in err
    with pytest.raises(InitError, match="progress must be True, False or None"):
        LSUVScheme(progress="yes")  # type: ignore[arg-type]


class _Observer(nn.Module):
    """Records the largest value it has seen in a buffer (as quantization observers do), on every call."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("seen", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.copy_(torch.maximum(self.seen, x.detach().abs().max()))
        return x


class _Doubling(nn.Module):
    """Edits its input in place, and draws from torch's RNG on every call."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        torch.rand(1)
        return x.mul_(2)


def _lsuv_model() -> nn.Sequential:
    return nn.Sequential(_Doubling(), nn.Linear(16, 32), _Observer(), nn.ReLU(), nn.Linear(32, 4))


def test_lsuv_runs_on_a_copy_of_the_batch_and_its_check_changes_nothing() -> None:
    model = _lsuv_model()
    batch = torch.randn(64, 16, generator=torch.Generator().manual_seed(0))
    before = batch.clone()
    reinit(model, "lsuv", data=batch, generator=torch.Generator().manual_seed(1))
    assert torch.equal(batch, before)  # the model doubled its input in place: on copies only
    # the validation pass is a dry run: a refused call leaves the RNG and every buffer as they were
    model = nn.Sequential(*_lsuv_model()[:4], nn.Linear(99, 4))  # fails at its last layer
    rng, seen = torch.get_rng_state(), model[2].seen.clone()
    with pytest.raises(InitError, match="forward pass on data failed before anything was written"):
        reinit(model, "lsuv", data=batch)
    assert torch.equal(torch.get_rng_state(), rng) and torch.equal(model[2].seen, seen)


def test_a_failing_lsuv_pass_restores_the_buffers_its_passes_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    from torchinit._schemes import lsuv as _lsuv

    model = _lsuv_model()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()

    def failing(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the last pass fails")

    monkeypatch.setattr(_lsuv, "_first_output_stds", failing)  # after the calibrating pass ran the model
    with pytest.raises(InitError, match="the last pass fails"):
        reinit(model, "lsuv", data=torch.randn(64, 16, generator=torch.Generator().manual_seed(0)))
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())  # observer max included
    assert torch.equal(torch.get_rng_state(), rng)


@pytest.mark.parametrize("how", [{"skip": True}, {"keep": True}])
def test_lsuv_leaves_a_skipped_or_kept_weight_alone(how: dict[str, bool]) -> None:
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))
    frozen = model[2].weight.detach().clone()
    report = reinit(model, "lsuv", data=torch.randn(64, 16), overrides=[torchinit.Override(path="2.weight", **how)])
    assert torch.equal(model[2].weight, frozen)
    assert [layer.path for layer in report.lsuv] == ["0", "4"]


@pytest.mark.parametrize(
    "how",
    [{"overrides": [torchinit.Override(path="2.bias", skip=True)]}, {"frozen": True}, {"only": "2.weight"}],
    ids=["skipped", "frozen", "outside-only"],
)
def test_centering_leaves_a_bias_the_call_does_not_write_alone(how: dict[str, Any]) -> None:
    # center=True shifted every watched layer's bias, also one the call skipped, kept frozen or left outside only=
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    model[2].bias.requires_grad_(not how.pop("frozen", False))
    bias = model[2].bias.detach().clone()
    report = reinit(model, LSUVScheme(center=True), data=torch.randn(64, 8) + 3, **how)
    assert torch.equal(model[2].bias, bias)
    assert "2" in [layer.path for layer in report.lsuv]  # the weight is still calibrated


class _Tokens(nn.Module):
    """A sequence model: (batch, tokens, features) activations, as many tokens as features."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.up, self.down = nn.Linear(width, width), nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(torch.relu(self.up(x)))


def test_centering_a_dense_layer_of_a_sequence_model_centers_its_features() -> None:
    # center=True took dim 1 of a 3-D output as the channels: the tokens of a (batch, tokens, features) output
    # (an error when their counts differ, per-token means in the bias when they agree)
    model = _Tokens()
    data = torch.randn(16, 8, 8, generator=torch.Generator().manual_seed(0)) + torch.arange(8.0)
    reinit(model, LSUVScheme(center=True), data=data, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        features = model.up(data).mean(dim=(0, 1))
    assert features.abs().max() < 1e-4, features
    conv = nn.Sequential(nn.Conv1d(3, 8, 3), nn.ReLU(), nn.Conv1d(8, 4, 1))  # (batch, channels, length): dim 1
    signal = torch.randn(4, 3, 8, generator=torch.Generator().manual_seed(1)) + 2
    reinit(conv, LSUVScheme(center=True), data=signal)
    with torch.no_grad():
        channels = conv[0](signal).mean(dim=(0, 2))
    assert channels.abs().max() < 1e-4, channels


class _ChannelsLastConv(nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).permute(0, 2, 3, 1)  # (N, H, W, C): its channels are not where a conv's are


def test_centering_a_layer_whose_channels_cannot_be_found_is_an_error_and_changes_nothing() -> None:
    model = nn.Sequential(_ChannelsLastConv(3, 4, 3), nn.ReLU())
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(InitError, match=r"lsuv center=True: 0's output has shape \(2, 6, 6, 4\), and its dim 1"):
        reinit(model, LSUVScheme(center=True), data=torch.randn(2, 3, 8, 8))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
