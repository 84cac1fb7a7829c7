"""Never half-written, never silent: every failure leaves the model and the RNG as they were.

Each case here failed on 0.2.0 before the fix: a write that failed halfway, a call that was wrong
without a word, or an error that did not say what to do.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Callable, Iterator

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import parametrizations, parametrize

import torchinit
from torchinit import Fans, InitError, Override, reinit
from torchinit._api.reinit import unwrap
from torchinit.extend import Action, Role, register_layer
from torchinit.testing import assert_std


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    out = {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()}
    out["<rng>"] = torch.get_rng_state()
    return out


@contextlib.contextmanager
def unchanged(model: nn.Module, generator: torch.Generator | None = None) -> Iterator[None]:
    """Asserts that parameters, buffers, torch's RNG and ``generator`` are bitwise as before the block."""
    before = _state(model)
    gen = generator.get_state() if generator is not None else None
    yield
    after = _state(model)
    assert before.keys() == after.keys()
    for key, value in before.items():
        assert value.dtype == after[key].dtype and torch.equal(value, after[key]), key
    if generator is not None:
        assert torch.equal(gen, generator.get_state())  # type: ignore[arg-type]


class Symmetric(nn.Module):
    """PyTorch's parametrization tutorial example: no right_inverse."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.triu() + x.triu(1).mT


def _later_layer(parametrize_last: object) -> nn.Module:
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8))
    parametrize_last(model[2])  # type: ignore[operator]
    return model


@pytest.mark.parametrize(
    "parametrize_last",
    [
        lambda m: parametrize.register_parametrization(m, "weight", Symmetric()),
        lambda m: parametrizations.orthogonal(m, "weight", orthogonal_map="matrix_exp", use_trivialization=False),
    ],
    ids=["symmetric-without-right_inverse", "orthogonal-no-trivialization"],
)
def test_a_parametrization_that_cannot_be_assigned_is_refused_before_any_write(parametrize_last: object) -> None:
    model = _later_layer(parametrize_last)
    with (
        unchanged(model),
        pytest.raises(InitError, match=r"2.weight \(ParametrizedLinear, parametrized by .*right_inverse fails"),
    ):
        reinit(model, "kaiming_relu")


def test_inference_tensors_are_refused_before_any_write() -> None:
    with torch.inference_mode():
        model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    with unchanged(model), pytest.raises(InitError, match=r"0.weight .* created under torch.inference_mode\(\)"):
        reinit(model, "kaiming_relu")
    with torch.inference_mode():
        reinit(model, "kaiming_relu")  # inside it, it works


class Table(nn.Module):
    def __init__(self, rows: int, pad: int, chunks: int) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.zeros(rows, 4))
        self.gates = nn.Parameter(torch.zeros(rows, 4))
        self.pad, self.chunks = pad, chunks


def test_rules_that_index_out_of_range_are_refused_before_any_write() -> None:
    def roles(m: nn.Module, name: str) -> Role | None:
        if name == "table":
            return Role("embedding", padding_idx=m.pad)  # type: ignore[arg-type]
        return Role("recurrent", fans=Fans(4, 4, chunks=m.chunks))  # type: ignore[arg-type]

    register_layer(Table, roles=roles)
    model = nn.Sequential(nn.Linear(4, 4), Table(rows=5, pad=7, chunks=1))
    with unchanged(model), pytest.raises(InitError, match=r"1.table .* zeroes row 7, outside its 5 rows"):
        reinit(model, "kaiming_relu")
    model = nn.Sequential(nn.Linear(4, 4), Table(rows=5, pad=0, chunks=4))
    with unchanged(model), pytest.raises(InitError, match=r"1.gates .* 4 chunks along dim 0, which do not divide 5"):
        reinit(model, "orthogonal")


@pytest.mark.filterwarnings("ignore::torchinit.RecipeMismatchWarning")  # toy models
@pytest.mark.parametrize("seed", [None, 0])
@pytest.mark.parametrize(
    ("rule", "match"),
    [
        (lambda: Action("uniform", -2.0), r"0.weight \(Linear\): a uniform draw's bound must be >= 0; got bound=-2.0"),
        (lambda: Action("normal", math.nan), r"0.weight \(Linear\): a normal draw's std and mean must be finite"),
        (
            lambda: Action("truncated_normal", 1.0, cut=-1.0),
            r"0.weight .*cut must be a positive number of sigmas.*-1.0",
        ),
        (lambda: Action("normal", 1e39), r"0.weight .*must keep torch.float32 values finite"),
        (lambda: Action("constant", math.inf), r"0.weight .*constant draw's value and mean must be finite"),
        (
            lambda: Action("gaussian", 1.0),
            r"0.weight \(Linear\): an Action's kind must be one of .*got kind='gaussian'",
        ),
        (lambda: Action("constant", 0.0, zero_row=1.5), r"0.weight .*zero_row must be an integer; got .*1.5"),
        (lambda: Action("constant", 0.0, chunk_values=(1.0, math.nan)), r"0.weight .*chunk value must be a finite"),
    ],
)
def test_a_rule_s_bad_std_bound_or_cut_is_refused_before_any_write(
    rule: Callable[[], Action], match: str, seed: int | None
) -> None:
    # Recipes and overrides hand over Actions directly: their values are checked with the scheme's, so a bad
    # one is an InitError naming the path before the first write (it used to fail mid-write, or not at all
    # with seed=, leaving a report that named a negative std).
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    with unchanged(model), pytest.raises(InitError, match=match):
        reinit(model, "kaiming_relu", overrides=[Override(path="0.weight", rule=lambda p, m, t: rule())], seed=seed)
    with (
        unchanged(model),
        pytest.raises(InitError, match=r"initializer_range must be a finite number >= 0; got initializer_range=-1.0"),
    ):
        reinit(model, torchinit.recipes.gpt2(initializer_range=-1.0, n_layer=2).anywhere(), seed=seed)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a second device type")
def test_a_generator_on_the_wrong_device_is_refused_up_front() -> None:
    model = nn.Sequential(nn.Linear(4, 4))
    cuda = torch.Generator(device="cuda")
    with unchanged(model), pytest.raises(InitError, match=r"0.weight .* is on cpu but generator= draws on cuda"):
        reinit(model, "kaiming_relu", generator=cuda)


class Passthrough(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def right_inverse(self, x: torch.Tensor) -> torch.Tensor:
        return x


class FailingInverse(nn.Module):
    """A parametrization whose right_inverse passes reinit's dry run (which runs on a copy) but fails on the
    real write once ``armed``: a fault after validation."""

    def __init__(self, fail_at: int = 1) -> None:
        super().__init__()
        self.home, self.armed, self.calls, self.fail_at = id(self), False, 0, fail_at

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def right_inverse(self, x: torch.Tensor) -> torch.Tensor:
        if self.armed and id(self) == self.home:  # the real parametrization, not the dry run's copy
            self.calls += 1
            if self.calls == self.fail_at:
                raise RuntimeError("injected fault")
        return x


def test_a_failure_after_validation_restores_every_write_and_the_rngs() -> None:
    model = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8), nn.Linear(8, 8))
    model[1].running_mean.fill_(3.0)
    fault = FailingInverse()
    parametrize.register_parametrization(model[2], "weight", fault)
    fault.armed = True
    gen = torch.Generator().manual_seed(0)
    with unchanged(model, gen), pytest.raises(RuntimeError, match="injected fault"):
        reinit(model, "kaiming_relu", generator=gen)
    fault.calls = 0
    with unchanged(model, gen), pytest.raises(RuntimeError, match="injected fault"):
        reinit(model, "kaiming_relu", seed=0)


@settings(max_examples=25, deadline=None)
@given(
    widths=st.lists(st.integers(1, 6), min_size=2, max_size=6),
    norm=st.booleans(),
    fault_at=st.integers(0, 20),
    keyed=st.booleans(),
)
def test_a_fault_at_any_write_leaves_parameters_buffers_and_rng_unchanged(
    widths: list[int], norm: bool, fault_at: int, keyed: bool
) -> None:
    # a random small model; the fault is a right_inverse that raises at a random one of its writes
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(widths):
        layers += [nn.Linear(a, b), nn.BatchNorm1d(b) if norm else nn.ReLU()]
    model = nn.Sequential(*layers)
    linears = [m for m in model if isinstance(m, nn.Linear)]
    # one layer's right_inverse fails on the real write: earlier layers are written by then
    faulty = FailingInverse()
    for layer in linears:
        chosen = layer is linears[fault_at % len(linears)]
        parametrize.register_parametrization(layer, "weight", faulty if chosen else Passthrough())
    faulty.armed = True
    for m in model:
        if isinstance(m, nn.BatchNorm1d):
            m.running_var.uniform_(1, 2)
    gen = None if keyed else torch.Generator().manual_seed(1)
    with unchanged(model, gen), pytest.raises(RuntimeError, match="injected fault"):
        reinit(model, "kaiming_relu", seed=0 if keyed else None, generator=gen)


def _interrupt_third_write(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Raise SIGINT during the writer's third write; the count of writes made comes back in ``["n"]``."""
    import signal

    from torchinit._model import write as _write

    real = _write.write
    calls = {"n": 0}

    def interrupted(action: object, tensor: torch.Tensor, generator: object) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            signal.raise_signal(signal.SIGINT)  # arrives in the middle of the write phase
        real(action, tensor, generator)  # type: ignore[arg-type]

    monkeypatch.setattr(_write, "write", interrupted)
    return calls


def test_ctrl_c_during_the_writes_is_held_until_the_model_is_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    model = nn.Sequential(*[nn.Linear(4, 4) for _ in range(6)])
    calls = _interrupt_third_write(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        reinit(model, "kaiming_relu")
    assert calls["n"] == 12  # every write ran before the interrupt was raised
    assert all(float(m.bias.detach().abs().max()) == 0 for m in model)  # the whole model got the scheme


def test_ctrl_c_stops_backed_up_writes_at_once_and_undoes_them(monkeypatch: pytest.MonkeyPatch) -> None:
    model = nn.Sequential(*[nn.Linear(4, 4) for _ in range(6)])
    gen = torch.Generator().manual_seed(0)
    calls = _interrupt_third_write(monkeypatch)
    with unchanged(model, gen), pytest.raises(KeyboardInterrupt):
        reinit(model, "orthogonal", generator=gen)  # QR temporaries: backed up
    assert calls["n"] == 3  # not held to the end: nothing more was written after the interrupt


def test_skip_overrides_leave_norm_statistics_alone() -> None:
    def model() -> nn.Module:
        m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.BatchNorm2d(4, affine=False))
        for bn in m[1:]:
            bn.running_mean.fill_(0.5)
            bn.num_batches_tracked.fill_(7)
        m[1].requires_grad_(False)
        return m

    m = model()
    reinit(m, "kaiming_relu", overrides=[Override(frozen=True, skip=True)])  # the README's frozen backbone
    assert float(m[1].running_mean[0]) == 0.5 and int(m[1].num_batches_tracked) == 7  # frozen: kept
    assert float(m[2].running_mean[0]) == 0.5  # affine=False has no parameters: frozen by definition
    m = model()
    reinit(m, "kaiming_relu", overrides=[Override(module=nn.BatchNorm2d, skip=True)])
    assert all(float(bn.running_mean[0]) == 0.5 for bn in m[1:])
    m = model()
    reinit(m, "kaiming_relu")
    assert float(m[1].running_mean[0]) == 0.5 and int(m[1].num_batches_tracked) == 7  # frozen by default: kept
    assert float(m[2].running_mean[0]) == 0 and int(m[2].num_batches_tracked) == 0  # reset
    m = model()
    reinit(m, "kaiming_relu", overrides=[Override(frozen=True)])  # frozen ones written by the scheme: reset
    assert all(float(bn.running_mean[0]) == 0 and int(bn.num_batches_tracked) == 0 for bn in m[1:])


@pytest.mark.parametrize("training", [True, False])
def test_spectral_norm_vectors_are_refreshed_so_the_effective_weight_has_norm_one(training: bool) -> None:
    torch.manual_seed(0)
    new = parametrizations.spectral_norm(nn.Linear(64, 128))
    old = torch.nn.utils.spectral_norm(nn.Linear(64, 128))
    for layer in (new, old):
        reinit(layer, "kaiming_relu", generator=torch.Generator().manual_seed(0))
        layer.train(training)
        with torch.no_grad():
            layer(torch.zeros(1, 64))  # the legacy hook computes .weight in a forward pre-hook
            sigma = float(torch.linalg.matrix_norm(layer.weight.detach(), ord=2))
        assert abs(sigma - 1) < 1e-3, (type(layer).__name__, sigma)  # 0.2.0: ~33 for eval mode


def test_orthogonal_parametrization_uses_the_generator_and_reports_the_effective_std() -> None:
    layer = parametrizations.orthogonal(nn.Linear(64, 32))  # non-square: right_inverse completes Q with randn
    before = torch.get_rng_state()
    report = reinit(layer, "kaiming_relu", generator=torch.Generator().manual_seed(0))
    assert torch.equal(torch.get_rng_state(), before)
    effective = float(layer.weight.detach().std())
    assert math.isclose(report["weight"].std, effective, rel_tol=1e-6), (report["weight"], effective)
    assert "after its parametrization" in report["weight"].rule


def test_overrides_that_select_nothing_are_refused_naming_the_nearest_path() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    with (
        unchanged(model),
        pytest.raises(
            InitError, match=r"selects nothing: no parameter path matches '0.wieght' \(nearest: '0.weight'\)"
        ),
    ):
        reinit(model, overrides=[Override(path="0.wieght", skip=True)])
    with unchanged(model), pytest.raises(InitError, match=r"Override\(module=nn.Conv2d, skip=True\) selects nothing"):
        reinit(model, overrides=[Override(module=nn.Conv2d, skip=True)])
    with unchanged(model), pytest.raises(InitError, match="the module=/role=/frozen= filters exclude them all"):
        reinit(model, overrides=[Override(path="0.*", role="norm_weight", skip=True)])


def test_an_override_selects_a_tied_parameter_through_its_second_path() -> None:
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(10, 4)
            self.head = nn.Linear(4, 10, bias=False)
            self.head.weight = self.emb.weight

    model = Tied()
    report = reinit(model, overrides=[Override(path="head.weight", constant=0.5)])
    assert float(model.emb.weight.detach().min()) == 0.5 and report["emb.weight"].source == "override constant 0.5"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.compile's imports on this CPU build
def test_wrapper_prefixes_do_not_change_keyed_values_or_override_paths() -> None:
    def make() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.Linear(4, 4)))

    plain = make()
    reinit(plain, seed=3, overrides=[Override(path="1.0.bias", constant=1.0)])
    for wrap in (
        nn.DataParallel,
        lambda m: torch.compile(m),  # `_orig_mod.` at the root
        lambda m: nn.Sequential(m[0], torch.compile(m[1])) if False else _nested_compile(m),
    ):
        model = wrap(make())
        reinit(model, seed=3, overrides=[Override(path="1.0.bias", constant=1.0)])
        inner = torchinit._api.reinit.unwrap(model)  # type: ignore[attr-defined]
        for (key, a), b in zip(plain.state_dict().items(), [p for p in _params(inner)], strict=True):
            assert torch.equal(a, b), key


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.compile's imports on this CPU build
def test_an_override_may_use_the_wrapped_model_s_state_dict_names() -> None:
    def make() -> nn.Module:
        return nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))

    model = nn.DataParallel(make())
    assert "module.0.weight" in model.state_dict()  # the name a user copies
    scheme = torchinit.get_scheme("kaiming_relu").with_overrides(Override(path="module.2.bias", constant=0.25))  # type: ignore[attr-defined]
    report = reinit(model, scheme, overrides=[Override(path="module.0.weight", constant=0.5)])
    assert report["0.weight"].source == "override constant 0.5" and bool((model.module[0].weight == 0.5).all())
    assert bool((model.module[2].bias == 0.25).all())
    compiled = nn.DataParallel(torch.compile(make()))  # `module._orig_mod.0.weight`, either spelling
    for path in ("module._orig_mod.0.weight", "module.0.weight", "0.weight"):
        reinit(compiled, overrides=[Override(path=path, constant=0.75)])
        assert bool((unwrap(compiled)[0].weight == 0.75).all()), path
    with pytest.raises(InitError, match=r"Override\(path='module.0.weight', constant=0.5\) selects nothing"):
        reinit(make(), overrides=[Override(path="module.0.weight", constant=0.5)])  # no wrapper, no prefix


def _nested_compile(m: nn.Module) -> nn.Module:
    m[1] = torch.compile(m[1])  # a compiled submodule: `1._orig_mod.0.weight`
    return m


def _params(m: nn.Module) -> list[torch.Tensor]:
    return list(m.state_dict().values())


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"threads": "4"}, TypeError, "threads must be a positive integer or None; got threads='4'"),
        ({"threads": -3}, InitError, "threads must be a positive integer or None; got threads=-3"),
        ({"threads": 0}, InitError, "got threads=0"),
        ({"atomic": "yes"}, TypeError, "atomic must be True or False"),
        ({"overrides": Override(skip=True)}, InitError, r"Wrap one in a list: overrides=\[Override\(...\)\]"),
    ],
)
def test_bad_arguments_name_the_value_and_the_fix(kwargs: dict[str, object], error: type, match: str) -> None:
    model = nn.Sequential(nn.Linear(4, 4))
    with unchanged(model), pytest.raises(error, match=match):
        reinit(model, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"path": "[", "skip": True}, "unbalanced bracket"),
        ({"path": "", "skip": True}, "empty"),
        ({"skip": 1}, "skip must be True or False; got skip=1"),
        ({"frozen": "yes", "skip": True}, "frozen must be True, False or None; got frozen='yes'"),
        ({"scheme": "lsuv"}, "'lsuv' calibrates on data in a pass of its own"),
    ],
)
def test_bad_overrides_are_refused_when_made(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(InitError, match=match):
        Override(**kwargs)  # type: ignore[arg-type]


class Hooked(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)))


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ("abc", "lsuv's data must be a tensor, or a tuple/list/dict of tensors"),
        (torch.randn(8, 5), r"lsuv's forward pass on data failed before anything was written \(RuntimeError"),
        (torch.tensor([[math.nan, 0, 0, 0]] * 8), r"lsuv's data has 8 non-finite value\(s\) of 32"),
    ],
)
def test_lsuv_checks_its_data_before_writing(data: object, match: str) -> None:
    model = Hooked()
    with unchanged(model), pytest.raises(InitError, match=match):
        reinit(model, "lsuv", data=data)


@pytest.mark.parametrize("fault", [RuntimeError("hook failed"), KeyboardInterrupt()])
def test_lsuv_failures_during_the_passes_restore_the_model(fault: BaseException) -> None:
    model = Hooked()
    calls = {"n": 0}

    def hook(module: nn.Module, args: object, output: object) -> None:
        calls["n"] += 1
        if calls["n"] == 3:  # after the validation pass and the base init: in the rescaling passes
            raise fault

    model.b.register_forward_hook(hook)
    expected = InitError if isinstance(fault, Exception) else KeyboardInterrupt
    data = torch.randn(16, 4)
    with unchanged(model), pytest.raises(expected):
        reinit(model, "lsuv", data=data)


def test_lsuv_says_when_the_forward_path_changes_between_calls() -> None:
    class Flaky(Hooked):
        calls = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            Flaky.calls += 1
            return self.a(x) if Flaky.calls > 2 else self.b(torch.relu(self.a(x)))

    model = Flaky()
    data = torch.randn(16, 4)
    with unchanged(model), pytest.raises(InitError, match="forward path changes between calls"):
        reinit(model, "lsuv", data=data)


def test_the_fans_of_a_registered_layer_still_work_with_the_checks() -> None:
    # regression guard for the new checks on a registered chunked weight: divisible chunks pass
    class Packed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.empty(12, 4))

    register_layer(Packed, fans=lambda m, name: Fans(4, 4, chunks=3) if name == "weight" else None)
    reinit(Packed(), "orthogonal")


# --- construction helpers ------------------------------------------------------------------------------


def test_scheme_mixin_warns_about_a_raw_parameter_it_cannot_set() -> None:
    class Gate(torchinit.SchemeMixin, nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.empty(3))  # no rule covers it: it would stay uninitialized
            self.reset_parameters()

    with pytest.warns(torchinit.UncoveredParameterWarning, match=r"Gate.scale x 1: scale \(3,\)"):
        Gate()


def test_a_lazy_layer_made_under_default_scheme_gets_the_scheme_when_it_materializes() -> None:
    with torchinit.default_scheme("kaiming_relu", generator=torch.Generator().manual_seed(0)):
        layer = nn.LazyLinear(256)
    layer(torch.zeros(1, 1024))  # materialized after the block
    weight = layer.weight.detach()
    assert_std(weight, math.sqrt(2 / 1024))
    with pytest.raises(AssertionError):
        assert_std(weight, 1 / math.sqrt(3 * 1024))  # torch's default, what 0.2.0 gave
    assert not layer.bias.detach().any()
    layer.reset_parameters()  # later resets are torch's again, as for any layer made in the block
    assert layer.bias.detach().any()


def test_default_scheme_on_the_meta_device_builds_like_torch() -> None:
    with torch.device("meta"), torchinit.default_scheme("kaiming_relu"):
        model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    assert all(p.is_meta for p in model.parameters())


def test_build_dtype_is_per_call_and_never_process_wide() -> None:
    import threading

    seen: dict[str, object] = {}
    started, release = threading.Event(), threading.Event()

    def other_thread() -> None:  # builds a plain layer while build(dtype=float64) is constructing
        started.set()
        release.wait(5)
        seen["other"] = nn.Linear(2, 2).weight.dtype

    worker = threading.Thread(target=other_thread)
    worker.start()

    def factory() -> nn.Module:
        started.wait(5)
        model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
        model.register_buffer("steps", torch.arange(3))  # an integer buffer stays int64
        model.register_buffer("table", torch.tensor([0.1, 0.2]))
        release.set()
        worker.join(5)
        return model

    model, _ = torchinit.build(factory, "kaiming_relu", dtype=torch.float64)
    assert seen["other"] == torch.float32 and torch.get_default_dtype() == torch.float32
    assert {p.dtype for p in model.parameters()} == {torch.float64}
    assert model.steps.dtype == torch.int64 and model.table.dtype == torch.float64
    assert float(model.table[0]) == 0.1  # made in float64, not rounded through float32


def test_build_runs_the_default_for_real_when_model_code_reads_a_skipped_weight() -> None:
    class Snapshot(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(16, 16)
            self.lin.bias.data.zero_()  # model code writes one parameter: kept
            self.register_buffer("start", self.lin.weight.detach().clone())  # reads the weight: a real value

    torch.manual_seed(0)
    model, _ = torchinit.build(Snapshot, "kaiming_relu")
    start = model.start
    assert torch.isfinite(start).all() and float(start.abs().max()) <= 1 / 4  # torch's U(+-1/sqrt(16))
    assert float(start.std()) > 0.05
    assert not torch.equal(start, model.lin.weight.detach())  # the scheme then drew the weight once more


def test_build_refuses_a_model_where_it_needs_a_factory() -> None:
    with pytest.raises(InitError, match=r"build takes a factory .* got the module Linear. Pass build\(lambda: Linear"):
        torchinit.build(nn.Linear(4, 4), "kaiming_relu")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="threads must be a positive integer or None; got threads='4'"):
        torchinit.build(lambda: nn.Linear(4, 4), threads="4")  # type: ignore[arg-type]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.compile's imports on this CPU build
def test_an_override_written_with_the_compiled_prefix_still_selects() -> None:
    model = torch.compile(nn.Sequential(nn.Linear(4, 4)))
    report = reinit(model, "kaiming_relu", overrides=[Override(path="_orig_mod.0.bias", constant=0.5)])
    assert report["0.bias"].source == "override constant 0.5"


class _OwnReset(nn.BatchNorm1d):
    """A norm with a reset_running_stats of its own that fails once ``armed``: code of the user's, run after the
    writes."""

    armed = False

    def reset_running_stats(self) -> None:
        if self.armed:
            raise RuntimeError("my reset fails")
        super().reset_running_stats()


@pytest.mark.parametrize("keyed", [False, True])
def test_a_norm_s_own_reset_that_fails_after_the_writes_is_undone(keyed: bool) -> None:
    # plain draws took no backups, and the norms are reset after the writes: the model stayed half-written
    model = nn.Sequential(nn.Linear(4, 4), _OwnReset(4), nn.Linear(4, 4))
    model[1].running_mean.fill_(2.0)
    model[1].armed = True
    gen = None if keyed else torch.Generator().manual_seed(0)
    with unchanged(model, gen), pytest.raises(RuntimeError, match="my reset fails"):
        reinit(model, "kaiming_relu", generator=gen, seed=0 if keyed else None)


def test_running_statistics_made_under_inference_mode_are_refused_before_any_write() -> None:
    # the reset after the writes raised torch's RuntimeError on an inference buffer: a half-written model
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 4))
    with torch.inference_mode():
        model[1].running_mean = torch.full((4,), 2.0)
    with unchanged(model), pytest.raises(InitError, match=r"1.running_mean \(BatchNorm1d, shape \(4,\)\) was created"):
        reinit(model, "kaiming_relu")
    report = reinit(model, "kaiming_relu", overrides=[Override(path="1.*", skip=True)])  # the fix it names
    assert "1.running_mean" not in report.buffers


def test_an_undone_parametrized_write_keeps_its_buffers_objects() -> None:
    # the undo put a parametrization's buffers back as copies: a spectral norm's _u and _v were new tensors after
    # a failed call, so whatever held the old ones (a second model sharing them, an EMA) was cut off
    model = nn.Sequential(parametrizations.spectral_norm(nn.Linear(6, 6)), nn.Linear(6, 6))
    fault = FailingInverse()
    parametrize.register_parametrization(model[1], "weight", fault)
    fault.armed = True
    held = dict(model.named_buffers())
    with unchanged(model), pytest.raises(RuntimeError, match="injected fault"):
        reinit(model, "kaiming_relu", generator=torch.Generator().manual_seed(0))
    assert all(buffer is held[name] for name, buffer in model.named_buffers())
