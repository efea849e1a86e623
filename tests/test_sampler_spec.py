"""The sampler grammar (flowjax.solvers.spec): one parser, labels that name metrics, and the
options each objective declares (checked with one-line errors that list them)."""

import re

import pytest

from flowjax.objectives import BlockwiseFlowMatching, DecomposableFlowMatching, FlowMatching
from flowjax.solvers.spec import (
    Piece,
    eval_spec_label,
    format_eval_spec,
    objective_keywords,
    parse_eval_spec,
    parse_sampler_spec,
    sampler_keywords,
)

SPECS = [
    "euler:4",
    "dpm++2m:8:logsnr",
    "heun:8:shifted,alpha=3",
    "euler:3:0,0.2,0.5,1",
    "euler:2|heun:4:logsnr|midpoint:2",
    "euler:8@frn",
    "euler:2|heun:4@full",
    "euler:40@tau=0.7,phases=1.0/1.0",
    "euler:8@tau=0.6/0.85",
]


@pytest.mark.parametrize("spec", SPECS)
def test_format_inverts_parse(spec):
    parsed = parse_eval_spec(spec)
    assert format_eval_spec(*parsed) == spec
    assert parse_eval_spec(format_eval_spec(*parsed)) == parsed


# Metric names written before the grammar moved (the labels of the former parser, which knew
# the option names): a summary's keys must not change.
LABELS = [
    ("euler:4", (), "euler_nfe4"),
    ("heun:8:shifted,alpha=3", (), "heun_nfe8_shifted_alpha3"),
    ("euler:3:0,0.2,0.5,1", (), "euler_nfe3_0_0.2_0.5_1"),
    ("euler:2|heun:4:logsnr@frn", BlockwiseFlowMatching, "euler_nfe2+heun_nfe4_logsnr_frn"),
    ("euler:8@full", BlockwiseFlowMatching, "euler_nfe8_full"),
    ("euler:40@tau=0.7,phases=1/1", DecomposableFlowMatching, "euler_nfe40_tau0.7_phases1-1"),
    ("euler:40@phases=1/1,tau=0.7", DecomposableFlowMatching, "euler_nfe40_tau0.7_phases1-1"),
    ("euler:8@tau=0.6/0.85", DecomposableFlowMatching, "euler_nfe8_tau0.6-0.85"),
]


@pytest.mark.parametrize("spec,objective,label", LABELS)
def test_labels_are_the_metric_names_of_before(spec, objective, label):
    order = objective.sampler_options if objective else ()
    assert eval_spec_label(*parse_eval_spec(spec), order=order) == label


def test_pieces_and_options_as_written():
    assert parse_sampler_spec("euler:4") == ("euler", 4, "uniform")
    pieces, options = parse_eval_spec("euler:2|heun:4:logsnr@frn")
    assert pieces == [Piece("euler", 2), Piece("heun", 4, "logsnr")] and options == {"frn": True}
    _, options = parse_eval_spec("euler:8@phases=3/1,tau=0.5")
    assert list(options.items()) == [("phases", (3.0, 1.0)), ("tau", (0.5,))]


def test_each_objective_turns_its_declared_options_into_sampler_keywords():
    blockwise, decomposable = BlockwiseFlowMatching(), DecomposableFlowMatching()
    assert objective_keywords(blockwise, *parse_eval_spec("euler:1|heun:2@frn")) == {"frn": True}
    assert objective_keywords(blockwise, *parse_eval_spec("euler:8@full")) == {"frn": False}
    assert objective_keywords(decomposable, *parse_eval_spec("euler:8@tau=0.6,phases=1/1")) == {
        "thresholds": (0.6,),
        "phase_weights": (1.0, 1.0),
    }
    assert objective_keywords(FlowMatching(), *parse_eval_spec("heun:8:logsnr")) == {}


@pytest.mark.parametrize(
    "objective,spec,message",
    [
        (
            BlockwiseFlowMatching(),
            "euler:4@bogus",
            "unknown sampler option 'bogus' in 'euler:4@bogus'; the options of objective "
            "BlockwiseFlowMatching: @frn (Feature Residual Approximation), @full (",
        ),
        (DecomposableFlowMatching(), "euler:8@frn", "DecomposableFlowMatching: @tau=V[/V...] ("),
        (FlowMatching(), "euler:8@tau=0.7", "the options of objective FlowMatching: none"),
        (FlowMatching(), "euler:1|euler:1", "takes one 'solver:nfe[:grid]'"),
        (DecomposableFlowMatching(), "euler:2|euler:2", "per-segment settings ('a|b')"),
        (BlockwiseFlowMatching(), "euler:8@frn=1", "'frn' in 'euler:8@frn=1.0' is written @frn"),
        (DecomposableFlowMatching(), "euler:8@tau", "is written @tau=V[/V...]"),
        (
            BlockwiseFlowMatching(),
            "euler:8@frn,full",
            "'frn' and 'full' in 'euler:8@frn,full' both set frn",
        ),
    ],
)
def test_an_undeclared_or_misused_option_is_refused_naming_the_objectives_options(
    objective, spec, message
):
    with pytest.raises(ValueError, match=re.escape(message)) as err:
        objective_keywords(objective, *parse_eval_spec(spec))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "spec,message",
    [
        ("euler:2|heun", "must look like 'solver:nfe'"),
        ("euler", "must look like 'solver:nfe'"),
        ("heun:8:shifted,alpha", "alpha"),
        ("euler:8@tau=high", "needs numbers joined by '/'"),
        ("euler:8@", "must be a name or name=numbers"),
        ("euler:8@1x", "must be a name or name=numbers"),
        ("euler:8@tau=1,tau=2", "'tau' is given twice"),
    ],
)
def test_malformed_strings_fail_before_any_objective_is_asked(spec, message):
    with pytest.raises(ValueError, match=message) as err:
        parse_eval_spec(spec)
    assert "\n" not in str(err.value)


def test_a_declaration_is_all_a_new_option_needs():
    from flowjax.types import SamplerOption

    declared = {"scale": SamplerOption("noise_scale", help="scale of the starting noise")}
    pieces, options = parse_eval_spec("euler:4@scale=0.5")
    assert sampler_keywords(pieces, options, declared, segmented=False, owner="x") == {
        "noise_scale": (0.5,)
    }
    assert eval_spec_label(pieces, options, order=declared) == "euler_nfe4_scale0.5"
