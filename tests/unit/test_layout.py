"""The source roots must never shadow the `constructs` library that aws-cdk-lib imports."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_constructs_folder_has_no_init_file():
    assert not (ROOT / "constructs" / "__init__.py").exists()


def test_lambda_folder_has_no_init_file():
    assert not (ROOT / "lambda" / "__init__.py").exists()


def test_import_constructs_is_the_library():
    import constructs

    assert hasattr(constructs, "Construct")
    assert Path(constructs.__file__).resolve().parent != (ROOT / "constructs").resolve()


def test_shipped_json_schema_is_a_valid_json_schema():
    import jsonschema

    from mfa_policy.schema import policy_schema

    jsonschema.Draft202012Validator.check_schema(policy_schema())
