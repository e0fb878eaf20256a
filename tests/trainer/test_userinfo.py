"""Credentials in a URI, found in a value and hidden in echoed text (prefops_trainer.core.rules.userinfo; the operator's
copy is generated from it)."""

import pytest

from prefops_trainer.core.rules.userinfo import carries_userinfo, redact


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("s3://KEY:SECRET@bucket/m", "s3://***@bucket/m"),
        ("s3:///KEY:SECRET@bucket/m", "s3:///***@bucket/m"),
        ("s3:/KEY:SECRET@bucket/m", "s3:/***@bucket/m"),
        ("s3:KEY:SECRET@bucket/m", "s3:***@bucket/m"),
        ("s3://KEY:SE/CRET@bucket/m", "s3://***@bucket/m"),
        ("hf://hf_TOKEN@org/name", "hf://***@org/name"),
    ],
)
def test_a_uri_with_user_information_is_found_and_shown_without_it(value, shown):
    assert carries_userinfo(value)
    assert redact(f'model.source="{value}", trial t-0') == f'model.source="{shown}", trial t-0'


@pytest.mark.parametrize(
    "value", ["hf://org/name@v1.0", "s3://bucket/a/b@c", "examples/tiny/model", "spec.x: a@b", "file:///data/x@y"]
)
def test_an_at_sign_after_a_path_segment_is_no_credential_and_stays(value):
    assert not carries_userinfo(value)
    assert redact(value) == value
