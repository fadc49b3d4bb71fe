"""`min_p` reaches SamplingParams, and a bad value is a 400 naming it."""

import pytest

from adaptive_sarathi.server.errors import APIError
from adaptive_sarathi.server.protocol import parse_completion_request


def test_min_p_is_parsed():
    assert parse_completion_request({"prompt": "hi", "min_p": 0.2}, 100).params.min_p == 0.2
    assert parse_completion_request({"prompt": "hi"}, 100).params.min_p == 0.0


@pytest.mark.parametrize("value", [1.5, -0.1, "0.2", True])
def test_bad_min_p_is_a_400_naming_it(value):
    with pytest.raises(APIError) as err:
        parse_completion_request({"prompt": "hi", "min_p": value}, 100)
    assert err.value.status == 400 and "min_p" in str(err.value)
