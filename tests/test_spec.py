"""The core config machinery: the ``name,k=v`` parser, config sections -> dataclasses, the
registries, and the objective builders passing only what a config states."""

import dataclasses

import ml_collections
import numpy as np
import pytest

from flowjax import objectives, paths
from flowjax.objectives import freeflow, meanflow, reflow
from flowjax.objectives.dispersive import Dispersive
from flowjax.objectives.registry import OBJECTIVES, make_objective
from flowjax.registry import Registry, UnknownName
from flowjax.solvers import sde
from flowjax.spec import coerce, format_spec, from_section, parse_spec, parse_value
from flowjax.time import grids, laws

# -- the parser -------------------------------------------------------------------------------


def test_parse_spec_types_values_by_their_spelling():
    assert parse_spec("logit_normal,loc=0.4,scale=1") == (
        "logit_normal",
        {"loc": 0.4, "scale": 1.0},
    )
    name, kw = parse_spec(" edm , rho=5, sigma_min=1e-3,flag=TRUE,off=false,x=None,s=abc,n=-2 ")
    assert name == "edm"
    assert kw == {
        "rho": 5,
        "sigma_min": 1e-3,
        "flag": True,
        "off": False,
        "x": None,
        "s": "abc",
        "n": -2,
    }
    types = {k: type(v) for k, v in kw.items()}
    assert types["rho"] is int and types["sigma_min"] is float and types["n"] is int
    assert parse_value("inf") == float("inf") and parse_value("2.0") == 2.0
    assert type(parse_value("2.0")) is float
    assert parse_spec("uniform") == ("uniform", {}) and parse_spec("uniform,") == ("uniform", {})


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("uniform", {}),
        ("logit_normal", {"loc": -0.8, "scale": 1.0}),
        ("discrete", {"num_steps": 2, "t_min": 0.0}),
        ("x", {"a": True, "b": None, "c": "text", "d": 1e-12, "e": -3, "f": float("inf")}),
    ],
)
def test_format_spec_round_trips(name, kwargs):
    text = format_spec(name, kwargs)
    back = parse_spec(text)
    assert back == (name, kwargs)
    assert [type(v) for v in back[1].values()] == [type(v) for v in kwargs.values()]
    assert format_spec(*back) == text


def test_format_spec_refuses_what_it_cannot_write():
    for bad in ({"s": "a,b"}, {"s": "3"}, {"v": (1, 2)}):
        with pytest.raises(ValueError, match="cannot be written"):
            format_spec("x", bad)


@pytest.mark.parametrize(
    "spec, problem",
    [
        ("", "it does not start with a name"),
        ("loc=1", "it does not start with a name"),
        ("logit_normal,loc", "item 'loc' is not key=value"),
        ("logit_normal,=3", "item '=3' is not key=value"),
        ("logit_normal,loc=", "item 'loc=' is not key=value"),
        ("logit_normal,1x=3", "item '1x=3' is not key=value"),
        ("logit_normal,loc=1,loc=2", "key 'loc' is given twice"),
    ],
)
def test_parse_spec_errors_say_what_and_show_an_example(spec, problem):
    with pytest.raises(ValueError) as err:
        parse_spec(spec, kind="time sampler", example="logit_normal,loc=0.4")
    message = str(err.value)
    assert message.startswith(f"bad time sampler {spec!r}: {problem}")
    assert message.endswith("write NAME[,key=value...] such as 'logit_normal,loc=0.4'")


# Every text form accepted before the one parser, with what it built (same draws, same grids).
OLD_LAW_SPECS = {
    "uniform": laws.Uniform(),
    "uniform,t_min=1e-3": laws.Uniform(t_min=1e-3),
    "logit_normal,loc=-0.8,scale=1": laws.LogitNormal(-0.8, 1.0),
    "logit_normal,loc=0,shift=3": laws.Shifted(laws.LogitNormal(0.0, 1.0), 3.0),
    "u_shaped,a=4": laws.UShaped(a=4.0),
    "discrete,num_steps=2": laws.Discrete(2),
    "discrete,num_steps=2.0": laws.Discrete(2),
    "mode, a=1.0": laws.ModeSampler(a=1.0),
    "cosmap": laws.CosMap(),
}


@pytest.mark.parametrize("spec", sorted(OLD_LAW_SPECS))
def test_law_specs_build_what_they_built_before(spec):
    law = laws.time_sampler_from_spec(spec)
    expected = OLD_LAW_SPECS[spec]
    assert law == expected
    if isinstance(law, laws.Shifted):
        law, expected = law.base, expected.base
    for field in dataclasses.fields(law):  # floats stay floats: same arithmetic, same draws
        assert type(getattr(law, field.name)) is type(getattr(expected, field.name))
    law = laws.time_sampler_from_spec(spec)
    assert laws.time_sampler_from_spec(laws.time_sampler_spec(law)) == law


def test_grid_specs_build_what_they_built_before():
    for spec, expected in {
        "uniform": grids.uniform_grid(4),
        "shifted,alpha=3": grids.shifted_grid(4, 3.0),
        "edm,rho=5": grids.edm_grid(4, rho=5.0),
        "logsnr,t_min=0.01": grids.logsnr_uniform_grid(4, t_min=0.01),
        "diffusers,shift=3,num_train_timesteps=100": grids.diffusers_flow_grid(4, 3.0, 100),
        "0,0.1,0.5,0.9,1": np.array([0, 0.1, 0.5, 0.9, 1.0]),
    }.items():
        np.testing.assert_array_equal(grids.grid_from_spec(spec, 4), expected)


def test_number_fields_refuse_text():
    with pytest.raises(ValueError, match="loc must be a number; got 'abc'"):
        laws.time_sampler_from_spec("logit_normal,loc=abc")
    with pytest.raises(ValueError, match="alpha must be a number"):
        grids.grid_from_spec("shifted,alpha=big", 4)


def test_other_text_forms_use_the_parser():
    assert sde.make_diffusion("square,eta=3") == sde.DiffusionCoefficient("square", 3.0)
    with pytest.raises(ValueError, match="bad diffusion 'square,eta'"):
        sde.make_diffusion("square,eta")
    from flowjax.search import rewards

    assert rewards.parse_reward_spec("toy_mode,mode=3") == ("toy_mode", {"mode": 3})
    with pytest.raises(ValueError, match="bad reward spec"):
        rewards.parse_reward_spec("toy_mode,mode")


# -- config sections -> dataclasses -----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Thing:
    num_classes: int | None = None
    scale: float = 2.0
    steps: int = 3
    interval: tuple[float, float] | None = None


def test_from_section_passes_only_the_stated_keys():
    assert from_section(_Thing, {}, where="x") == _Thing()
    assert from_section(_Thing, None, where="x", num_classes=4) == _Thing(num_classes=4)
    built = from_section(
        _Thing,
        {"scale": 1, "steps": 5.0, "interval": [0, 1]},
        where="x",
        convert={"interval": lambda v: tuple(float(a) for a in v)},
    )
    assert built == _Thing(scale=1.0, steps=5, interval=(0.0, 1.0))
    assert type(built.scale) is float and type(built.steps) is int


def test_from_section_unknown_key_names_the_valid_ones():
    with pytest.raises(ValueError) as err:
        from_section(_Thing, {"scael": 1.0}, where="objective.thing")
    assert str(err.value) == (
        "unknown key(s) ['scael'] in objective.thing; valid keys: "
        "['interval', 'num_classes', 'scale', 'steps']"
    )
    # A field the caller decides is not configurable.
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['num_classes'\]"):
        from_section(_Thing, {"num_classes": 3}, where="x", num_classes=4)


def test_coerce_converts_by_annotation_only():
    assert coerce(grids.edm_grid, {"rho": 5}) == {"rho": 5.0}
    assert type(coerce(grids.edm_grid, {"rho": 5})["rho"]) is float
    assert coerce(_Thing, {"steps": 2.5}) == {"steps": 2.5}  # not integral: the class refuses
    assert coerce(_Thing, {"scale": True}) == {"scale": True}


# -- registries -------------------------------------------------------------------------------


def test_registry_lookup_error_and_dict_forms():
    reg = Registry("widget", {"b": 2})
    reg["a"] = 1  # the one-line form
    assert reg.register("c", 3) == 3 and reg.register("c", 3) == 3
    assert reg.names() == ["b", "a", "c"] and "a" in reg and len(reg) == 3
    assert reg.get("zzz") is None  # Mapping semantics kept
    with pytest.raises(UnknownName) as err:
        reg["zzz"]
    assert str(err.value) == "unknown widget 'zzz'; choose one of ['a', 'b', 'c']"
    assert isinstance(err.value, ValueError) and isinstance(err.value, KeyError)
    with pytest.raises(ValueError, match="widget 'c' is already registered"):
        reg.register("c", 4)


def test_every_table_speaks_the_same_error():
    from flowjax import search, solvers
    from flowjax.data.sources import SOURCES
    from flowjax.models.registry import _MODELS
    from flowjax.objectives.losses import LOSSES

    for registry, kind in [
        (OBJECTIVES, "objective"),
        (solvers.base.SOLVERS, "solver"),
        (_MODELS, "model"),
        (LOSSES, "loss"),
        (paths.PATHS, "path"),
        (laws.LAWS, "time sampler"),
        (grids.GRIDS, "time grid"),
        (SOURCES, "data kind"),
        (sde.DIFFUSIONS, "diffusion"),
        (search.METHODS, "search method"),
    ]:
        assert isinstance(registry, Registry)
        with pytest.raises(ValueError, match=f"^unknown {kind} 'nope'; choose one of \\["):
            registry["nope"]


# -- objective builders: defaults live once ---------------------------------------------------


def _spy(monkeypatch, cls):
    """Record the keyword arguments every construction of ``cls`` receives."""
    calls, init = [], cls.__init__

    def spy(self, *args, **kwargs):
        calls.append(set(kwargs))
        init(self, *args, **kwargs)

    monkeypatch.setattr(cls, "__init__", spy)
    return calls


@pytest.mark.parametrize("name", ["flow_matching", "meanflow", "reflow", "freeflow"])
def test_builders_pass_only_the_configured_keys(monkeypatch, name):
    """A builder given only ``name`` passes nothing but what the caller decides, so every
    default comes from the dataclass (a default restated in the registry fails here)."""
    cls = type(make_objective({"name": name}))
    calls = _spy(monkeypatch, cls)
    obj = make_objective(ml_collections.ConfigDict({"name": name}))
    assert calls == [{"num_classes"}]
    assert obj == cls()
    section = {"name": name, "label_dropout": 0.0, name: {}}
    make_objective(ml_collections.ConfigDict(section), num_classes=3)
    assert calls[-1] <= {"num_classes", "label_dropout"}


def test_meanflow_dispersive_and_subsections_pass_only_stated_keys(monkeypatch):
    calls = _spy(monkeypatch, Dispersive)
    cfg = {"name": "meanflow", "meanflow": {"kappa": 0.5}, "dispersive": {"weight": 0.25}}
    obj = make_objective(cfg, num_classes=10)
    assert calls == [{"weight"}] and obj.dispersive == Dispersive(weight=0.25)
    assert obj == meanflow.MeanFlow(num_classes=10, kappa=0.5, dispersive=Dispersive(0.25))
    cfg["dispersive"] = {"weight": 0.0, "tau": 2.0}
    assert make_objective(cfg, num_classes=10).dispersive is None


def test_builders_convert_specs_and_intervals():
    obj = make_objective(
        {
            "name": "freeflow",
            "freeflow": {
                "r_sampler": "logit_normal,loc=-1",
                "correction_guidance_interval": [0, 1],
            },
        }
    )
    assert obj == freeflow.FreeFlow(
        r_sampler=laws.LogitNormal(-1.0), correction_guidance_interval=(0.0, 1.0)
    )
    obj = make_objective(
        {
            "name": "reflow",
            "time_sampler": "u_shaped,a=4",
            "loss": "pseudo_huber",
            "reflow": {"huber_normalize": True},
        }
    )
    assert obj == reflow.Reflow(
        time_sampler=laws.UShaped(4.0), loss=objectives.PseudoHuber(normalize=True)
    )
    obj = make_objective({"name": "flow_matching", "path": "cosine", "time_sampler": "cosmap"})
    assert obj.path == paths.CosinePath() and obj.time_sampler == laws.CosMap()


def test_unknown_and_retired_objective_keys():
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['tiem_sampler'\] in objective"):
        make_objective({"name": "flow_matching", "tiem_sampler": "uniform"})
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['unknown'\] in objective.freeflow"):
        make_objective({"name": "freeflow", "freeflow": {"unknown": 1}})
    # The retired second form of the time sampler shows the spec that replaces it.
    cfg = {"name": "flow_matching", "time_sampler": "logit_normal"}
    with pytest.raises(ValueError) as err:
        make_objective({**cfg, "logit_normal": {"loc": 0.4, "scale": 1.0}})
    assert "objective.logit_normal is retired" in str(err.value)
    assert "objective.time_sampler='logit_normal,loc=0.4,scale=1.0'" in str(err.value)
    assert laws.time_sampler_from_spec("logit_normal,loc=0.4,scale=1.0") == laws.LogitNormal(0.4)
    with pytest.raises(ValueError, match="objective.time_shift is retired.*shift=3"):
        make_objective({**cfg, "time_shift": 3.0})


def test_eval_sampler_strings_check_their_grid_part_with_the_parser():
    from flowjax.evaluation.evaluator import parse_sampler_spec

    assert parse_sampler_spec("heun:8:shifted,alpha=3") == ("heun", 8, "shifted,alpha=3")
    assert parse_sampler_spec("euler:3:0,0.2,0.5,1") == ("euler", 3, "0,0.2,0.5,1")
    assert parse_sampler_spec("euler:4") == ("euler", 4, "uniform")
    with pytest.raises(ValueError, match="bad time grid 'shifted,alpha'.*such as"):
        parse_sampler_spec("heun:8:shifted,alpha")


@pytest.mark.parametrize(
    "old, expected",
    [
        (
            {"time_sampler": "uniform", "time_shift": 1.0, "uniform": {"t_min": 1e-3}},
            laws.Uniform(t_min=1e-3),
        ),
        (
            {
                "time_sampler": "logit_normal",
                "time_shift": 3.0,
                "uniform": {},
                "logit_normal": {"loc": 0.4, "scale": 1.0},
                "u_shaped": {"a": 4.0},
            },
            laws.Shifted(laws.LogitNormal(0.4, 1.0), 3.0),
        ),
        (
            {"time_sampler": "discrete", "discrete": {"num_steps": 2, "t_min": 0.0}},
            laws.Discrete(2),
        ),
    ],
)
def test_runs_stored_with_the_retired_form_load_the_same_law(old, expected):
    from flowjax.objectives.registry import upgrade_time_sampler

    section = upgrade_time_sampler({"name": "flow_matching", "path": "linear", **old})
    assert make_objective(section).time_sampler == expected
    assert upgrade_time_sampler(section) == section  # the spec form is left alone


@pytest.mark.parametrize(
    "config, section, cls, differs",
    [
        ("meanflow_toy2d", "meanflow", meanflow.MeanFlow, {"adaptive_p"}),
        ("meanflow_toy2d", "dispersive", Dispersive, {"weight"}),
        ("freeflow_toy2d", "freeflow", freeflow.FreeFlow, {"teacher_cfg_scale"}),
    ],
)
def test_config_sections_that_state_defaults_state_the_dataclass_defaults(
    config, section, cls, differs
):
    """The shipped configs state these sections to make them visible and overridable, saying
    they hold the dataclass's defaults (but ``differs``): the two must not drift apart."""
    from flowjax.config_files import load_config

    stated = dict(load_config(config).objective[section])
    built = make_objective(
        {"name": load_config(config).objective.name, section: stated}
        if section != "dispersive"
        else {"name": "meanflow", "dispersive": {**stated, "weight": 0.5}}
    )
    obj = built.dispersive if section == "dispersive" else built
    default = cls()
    for key in set(stated) - differs:
        assert getattr(obj, key) == getattr(default, key), (config, section, key)


def test_resuming_a_run_stored_with_the_retired_form_is_not_a_config_change(tmp_path):
    import json

    from flowjax.config_files import load_config
    from flowjax.training.faults import ConfigChangedError
    from flowjax.training.workdir import check_config_change

    config = load_config("toy2d_rf")
    config.objective.time_sampler = "logit_normal,loc=0.4,shift=3"
    stored = json.loads(config.to_json())
    stored["objective"].update(
        time_sampler="logit_normal", time_shift=3.0, logit_normal={"loc": 0.4, "scale": 1.0}
    )
    (tmp_path / "config.json").write_text(json.dumps(stored))
    assert check_config_change(str(tmp_path), config, saved_step=10) == []
    config.objective.time_sampler = "logit_normal,loc=0.5,shift=3"  # a real change is refused
    with pytest.raises(ConfigChangedError, match="objective.time_sampler"):
        check_config_change(str(tmp_path), config, saved_step=10)


def test_a_file_data_run_stored_with_a_relative_path_and_the_old_name_resumes(
    tmp_path, monkeypatch
):
    """Runs stored before data paths were made absolute and file data named after its file:
    the same file from the same directory, under its old label, is not a config change; another
    file, or a tfds name, is."""
    import json

    from flowjax.config_files import load_config
    from flowjax.training.faults import ConfigChangedError
    from flowjax.training.validate import validate_config
    from flowjax.training.workdir import check_config_change

    monkeypatch.chdir(tmp_path)
    np.savez(tmp_path / "pts.npz", x=np.zeros((64, 2), np.float32))
    config = load_config("toy2d_rf")
    config.data.kind, config.data.path = "array", "pts.npz"
    stored = json.loads(config.to_json())
    stored["data"]["name"] = "checkerboard"  # what array runs recorded before
    (tmp_path / "config.json").write_text(json.dumps(stored))
    config = validate_config(config)
    assert config.data.path == str(tmp_path / "pts.npz") and config.data.name == "pts"
    assert check_config_change(str(tmp_path), config, saved_step=10) == []
    other = tmp_path / "other"
    other.mkdir()
    monkeypatch.chdir(other)  # the stored relative path now names another file
    with pytest.raises(ConfigChangedError, match="data.path"):
        check_config_change(str(tmp_path), config, saved_step=10)
    monkeypatch.chdir(tmp_path)
    stored["data"]["kind"] = "toy"  # a name that did name the data
    (tmp_path / "config.json").write_text(json.dumps(stored))
    with pytest.raises(ConfigChangedError, match="data.name"):
        check_config_change(str(tmp_path), config, saved_step=10)
