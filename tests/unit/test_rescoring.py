from humane.governance.rescoring import schema_difference


def test_schema_difference_names_what_differs_and_numbers_are_alike():
    same = {"age": "double", "sex": "string"}
    assert schema_difference(same, dict(same)) is None
    assert schema_difference(same, {"age": "long", "sex": "string"}) is None  # as_request casts integers
    assert schema_difference(same, {"age": "string", "sex": "string", "job": "string"}) == (
        "the candidate adds ['job']; types differ for ['age']"
    )
    assert schema_difference(same, {"age": "double"}) == "the candidate lacks ['sex']"
