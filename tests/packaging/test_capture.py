"""Preprocessing functions captured by source with what they need (SPEC 4)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from nbmlops.errors import CaptureError
from nbmlops.packaging.capture import CapturedCode, capture
from tests import capture_examples as ex


def run_captured(captured: CapturedCode) -> dict:
    """Execute the captured source on its own, as the artifact's loader does."""
    namespace: dict = {"__name__": "nbmlops_preprocess"}
    exec(compile(captured.source, "<captured>", "exec"), namespace)
    return namespace


def charges_frame() -> pd.DataFrame:
    return pd.DataFrame({"monthly_charges": [10.0, 55.5, 120.25], "total_charges": [0.0, 3.5, 9e3]})


def capture_error(*functions) -> CaptureError:
    with pytest.raises(CaptureError) as info:
        capture(list(functions))
    return info.value


# -- what is captured --------------------------------------------------------------------------


def test_function_with_helper_constant_and_module_runs_on_its_own():
    captured = capture([ex.add_log_charges])
    namespace = run_captured(captured)

    frame = charges_frame()
    pd.testing.assert_frame_equal(
        namespace["add_log_charges"](frame.copy()), ex.add_log_charges(frame.copy())
    )
    # Everything it needs is defined by the captured source itself, not borrowed.
    assert namespace["LOG_OFFSET"] == ex.LOG_OFFSET
    assert namespace["CHARGE_COLUMNS"] == ex.CHARGE_COLUMNS
    assert namespace["np"] is np
    assert namespace["log_charge"] is not ex.log_charge
    assert captured.functions == ("add_log_charges",)


def test_captured_source_defines_the_helper_before_the_function_that_calls_it():
    source = capture([ex.add_log_charges]).source
    assert "import numpy as np" in source
    assert source.index("LOG_OFFSET = 1.5") < source.index("def log_charge(")
    assert source.index("def log_charge(") < source.index("def add_log_charges(")


def test_decorator_and_default_argument_are_defined_before_use():
    # A decorator and a default are evaluated when the def runs, so order matters here.
    namespace = run_captured(capture([ex.scaled]))
    assert namespace["scaled"](2) == ex.scaled(2) == 6.0
    assert namespace["scaled"].tagged is True


def test_several_functions_share_one_module():
    captured = capture([ex.add_log_charges, ex.to_frame])
    assert captured.functions == ("add_log_charges", "to_frame")
    namespace = run_captured(captured)
    pd.testing.assert_frame_equal(namespace["to_frame"]([1, 2]), ex.to_frame([1, 2]))
    assert captured.source.count("def log_charge(") == 1


def test_imported_functions_and_aliased_modules_become_imports():
    captured = capture([ex.distance, ex.distance_aliased, ex.to_frame])
    lines = captured.source.splitlines()
    assert "from math import sqrt" in lines
    assert "from math import sqrt as square_root" in lines
    assert "import pandas as pd" in lines
    # The library code itself is imported, never copied.
    assert "def sqrt" not in captured.source
    assert "class DataFrame" not in captured.source

    namespace = run_captured(captured)
    frame = pd.DataFrame({"x": [3.0, -16.0], "y": [4.0, 12.0]})
    assert namespace["distance"](frame) == ex.distance(frame) == [5.0, 20.0]
    assert (
        namespace["distance_aliased"](frame)
        == ex.distance_aliased(frame)
        == [
            math.sqrt(3.0),
            4.0,
        ]
    )


def test_modules_lists_top_level_modules():
    assert capture([ex.add_log_charges]).modules == ("numpy",)
    assert capture([ex.distance, ex.to_frame]).modules == ("math", "pandas")
    assert capture([ex.use_constants]).modules == ()


def test_to_dict_names_functions_and_modules():
    captured = capture([ex.add_log_charges, ex.to_frame])
    assert captured.to_dict() == {
        "functions": ["add_log_charges", "to_frame"],
        "modules": ["numpy", "pandas"],
    }


def test_constants_round_trip_exactly():
    namespace = run_captured(capture([ex.use_constants]))
    nested, nan, scalars, n = namespace["use_constants"]([1, 2, 3])

    # repr distinguishes list from tuple, -0.0 from 0.0, and keeps dict order; nan == nan in repr.
    assert repr(nested) == repr(ex.NESTED_CONSTANT)
    assert type(nested["labels"]) is tuple
    assert type(nested["bins"]) is list
    assert type(nested["tags"]) is set
    assert math.isnan(nested["fill"])
    assert nested["cap"] == math.inf
    assert math.copysign(1.0, nested["floor"]) == -1.0
    assert nested["raw"] == b"\x00\x01"
    assert math.isnan(nan)
    assert scalars == [0.1, 7]
    assert n == 3


def test_numpy_string_constants_round_trip():
    # A category list built from a numpy array holds np.str_, not str: the captured module
    # must rebuild it without relying on a numpy import the function itself does not need.
    namespace = run_captured(capture([ex.uses_numpy_strings]))
    assert namespace["uses_numpy_strings"](None) == ex.uses_numpy_strings(None)


# -- what cannot be captured, and says so ------------------------------------------------------


def test_open_file_handle_is_named(tmp_path, monkeypatch):
    lookup = tmp_path / "lookup.csv"
    lookup.write_text("a,b\n")
    with open(lookup) as handle:
        monkeypatch.setattr(ex, "LOOKUP_FILE", handle)
        error = capture_error(ex.read_lookup)
    message = str(error)
    assert "'LOOKUP_FILE'" in message
    assert "open file" in message
    assert "open the file inside the function" in message
    assert error.function == "read_lookup"
    assert len(error.problems) == 1


def test_lambda_inside_a_dict_constant_is_named():
    error = capture_error(ex.apply_transforms)
    message = str(error)
    assert "'TRANSFORMS'" in message
    assert "'double'" in message
    assert "lambda" in message
    assert "def" in message


def test_name_defined_nowhere_is_named():
    error = capture_error(ex.uses_undefined)
    assert "'NOT_DEFINED_ANYWHERE'" in str(error)
    assert "defined nowhere" in str(error)


def test_fitted_object_read_as_a_global_is_named():
    error = capture_error(ex.uses_fitted_scaler)
    message = str(error)
    assert "'SCALER'" in message
    assert "StandardScaler" in message
    assert "Pipeline" in message  # says where a fitted object belongs


def test_lambda_passed_as_the_function_is_refused_with_usable_advice():
    error = capture_error(lambda frame: frame * 2)
    message = str(error)
    assert "lambda" in message
    assert "def " in message
    # The advice must be something the user can type: "def <lambda>(...)" is not Python.
    assert "def <lambda>" not in message


def test_closure_is_named_with_its_free_variables():
    error = capture_error(ex.make_scaler(3))
    message = str(error)
    assert "'scale'" in message
    assert "closure over factor" in message
    assert "top level" in message


def test_decorated_helper_from_a_local_file_is_not_imported_from_it():
    # A server has no tests/capture_examples.py: the helper must be captured by source or
    # named in a CaptureError, never turned into an import of the local module.
    try:
        captured = capture([ex.uses_cached_helper])
    except CaptureError as error:
        assert "'cached_rate'" in str(error)
    else:
        assert ex.__name__ not in captured.source
        assert run_captured(captured)["uses_cached_helper"]([1, 2, 3]) == 0.25


@pytest.mark.parametrize("not_a_function", [np.log, len, ex.SCALER, "add_log_charges"])
def test_things_that_are_not_def_functions_are_refused(not_a_function):
    error = capture_error(not_a_function)
    assert "not a Python function defined with def" in str(error)


def test_a_problem_in_a_later_function_names_that_function():
    error = capture_error(ex.add_log_charges, ex.uses_undefined)
    assert error.function == "uses_undefined"
    assert "'uses_undefined'" in str(error)
