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

    from mfa_policy.core.schema import policy_schema

    jsonschema.Draft202012Validator.check_schema(policy_schema())


def test_lambda_handlers_import_nothing_beyond_the_runtime_and_powertools():
    # The Lambda ships lambda/ as it is: boto3 comes with the runtime and Powertools with its
    # layer; anything else (PyYAML, rich, moto) would fail at cold start in AWS.
    import subprocess
    import sys

    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in {'yaml', 'rich', 'moto', 'hypothesis', 'aws_cdk'}:\n"
        "            raise ImportError(f'{name} is not in the Lambda runtime')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import mfa_policy.handlers\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT / "lambda"), "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert result.returncode == 0, result.stderr
