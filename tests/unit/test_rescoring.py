from humane.governance.rescoring import schema_difference


def test_the_champion_is_scorable_when_the_candidate_takes_all_its_inputs():
    same = {"age": "double", "sex": "string"}
    assert schema_difference(same, dict(same)) is None
    assert schema_difference(same, {"age": "long", "sex": "string"}) is None  # as_request casts integers
    assert schema_difference({"age": "double"}, same) is None  # the candidate also takes sex: no obstacle
    assert schema_difference(same, {"age": "string", "job": "string"}) == (
        "the candidate lacks ['sex']; types differ for ['age']"
    )
