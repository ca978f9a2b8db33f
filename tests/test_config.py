from pathlib import Path

import pytest

from ghapp.config import load_settings, unknown_variables
from ghapp.errors import ConfigError

from .keys import PRIVATE_KEY_PEM

POOLS = """
pools:
  - name: linux
    labels: [self-hosted, linux, x64]
    max_runners: 20
    image: ghcr.io/actions/actions-runner:latest
    runner_group: Default
  - name: gpu
    labels: [self-hosted, linux, gpu]
"""


@pytest.fixture
def pools_file(tmp_path: Path) -> Path:
    path = tmp_path / "pools.yaml"
    path.write_text(POOLS)
    return path


def env(pools_file: Path, **extra: str) -> dict[str, str]:
    return {
        "GHAPP_APP_ID": "12345",
        "GHAPP_PRIVATE_KEY": PRIVATE_KEY_PEM,
        "GHAPP_WEBHOOK_SECRET": "hush-hush",
        "GHAPP_POOLS_FILE": str(pools_file),
        "GHAPP_NAMESPACE": "runners",
        **extra,
    }


def test_full_environment_is_read(pools_file: Path) -> None:
    settings = load_settings(
        env(pools_file, GHAPP_PORT="9000", GHAPP_GITHUB_API_URL="https://ghe.example/api/v3/")
    )
    assert settings.app_id == "12345"
    assert settings.port == 9000
    assert settings.namespace == "runners"
    assert [pool.name for pool in settings.pools] == ["linux", "gpu"]
    assert settings.pools[0].runner_group == "Default"
    assert settings.github_api_url == "https://ghe.example/api/v3"
    assert settings.web_url == "https://ghe.example"
    settings.require_credentials()


def test_defaults(pools_file: Path) -> None:
    settings = load_settings({"GHAPP_POOLS_FILE": str(pools_file)})
    assert (settings.host, settings.port, settings.admin_port) == ("0.0.0.0", 8080, 9090)
    assert settings.github_api_url == "https://api.github.com"
    assert settings.web_url == "https://github.com"
    assert settings.namespace == "default"


def test_admin_port_must_differ_from_the_public_port(pools_file: Path) -> None:
    assert load_settings(env(pools_file, GHAPP_ADMIN_PORT="9191")).admin_port == 9191
    with pytest.raises(ConfigError, match="GHAPP_ADMIN_PORT and GHAPP_PORT are both 9000"):
        load_settings(env(pools_file, GHAPP_PORT="9000", GHAPP_ADMIN_PORT="9000"))
    with pytest.raises(ConfigError, match="GHAPP_ADMIN_PORT"):
        load_settings(env(pools_file, GHAPP_ADMIN_PORT="70000"))


def test_bundled_pools_file_is_the_default() -> None:
    settings = load_settings({})
    assert settings.pools[0].labels == ("self-hosted", "linux", "x64")


def test_secrets_from_files(tmp_path: Path, pools_file: Path) -> None:
    (tmp_path / "key.pem").write_text(PRIVATE_KEY_PEM)
    (tmp_path / "secret").write_text("from-a-file\n")
    environ = env(
        pools_file,
        GHAPP_PRIVATE_KEY_FILE=str(tmp_path / "key.pem"),
        GHAPP_WEBHOOK_SECRET_FILE=str(tmp_path / "secret"),
    )
    del environ["GHAPP_PRIVATE_KEY"], environ["GHAPP_WEBHOOK_SECRET"]
    settings = load_settings(environ)
    assert settings.webhook_secret is not None
    assert settings.webhook_secret.get_secret_value() == "from-a-file"


def test_missing_credentials_are_named(pools_file: Path) -> None:
    settings = load_settings({"GHAPP_POOLS_FILE": str(pools_file)})
    with pytest.raises(ConfigError) as error:
        settings.require_credentials()
    message = str(error.value)
    assert "GHAPP_APP_ID" in message
    assert "GHAPP_PRIVATE_KEY" in message
    assert "GHAPP_WEBHOOK_SECRET" in message


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GHAPP_PORT", "eighty"),
        ("GHAPP_PORT", "70000"),
        ("GHAPP_NAMESPACE", "Not_A_Namespace"),
        ("GHAPP_GITHUB_API_URL", "ftp://example"),
        ("GHAPP_LOG_FORMAT", "xml"),
    ],
)
def test_bad_values_are_named(pools_file: Path, name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_settings(env(pools_file, **{name: value}))


def test_bad_private_key_is_named_but_not_echoed(pools_file: Path) -> None:
    with pytest.raises(ConfigError) as error:
        load_settings(env(pools_file, GHAPP_PRIVATE_KEY="not-a-key-but-secret-text"))
    assert "GHAPP_PRIVATE_KEY" in str(error.value)
    assert "not-a-key-but-secret-text" not in str(error.value)


def test_secret_and_file_both_set_is_an_error(tmp_path: Path, pools_file: Path) -> None:
    (tmp_path / "secret").write_text("x")
    with pytest.raises(ConfigError, match="GHAPP_WEBHOOK_SECRET_FILE"):
        load_settings(env(pools_file, GHAPP_WEBHOOK_SECRET_FILE=str(tmp_path / "secret")))


def test_unreadable_secret_file(pools_file: Path) -> None:
    with pytest.raises(ConfigError, match="GHAPP_WEBHOOK_SECRET_FILE"):
        load_settings(env(pools_file, GHAPP_WEBHOOK_SECRET_FILE="/nonexistent/secret"))


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ("pools: []", "at least one pool"),
        ("pools:\n  - name: Bad_Name\n    labels: [a]", "pools.0.name"),
        ("pools:\n  - name: x\n    labels: []", "pools.0.labels"),
        ("pools:\n  - name: x\n    labels: [a]\n    max_runners: 0", "pools.0.max_runners"),
        ("pools:\n  - name: x\n    labels: [a]\n    colour: blue", "pools.0.colour"),
        ("pools:\n  - {name: x, labels: [a]}\n  - {name: x, labels: [b]}", "repeated: x"),
        ("pools: [unclosed", "not valid YAML"),
        ("pools:\n  - name: a-very-long-pool-name-that-is-too-long\n    labels: [a]", "pools.0.name"),
    ],
)
def test_pools_file_errors_name_the_field(tmp_path: Path, document: str, expected: str) -> None:
    path = tmp_path / "pools.yaml"
    path.write_text(document)
    with pytest.raises(ConfigError) as error:
        load_settings({"GHAPP_POOLS_FILE": str(path)})
    assert "GHAPP_POOLS_FILE" in str(error.value)
    assert expected in str(error.value)


def test_missing_pools_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="GHAPP_POOLS_FILE: cannot read"):
        load_settings({"GHAPP_POOLS_FILE": str(tmp_path / "nope.yaml")})


def test_allowed_accounts_and_runner_service_account(pools_file: Path) -> None:
    settings = load_settings(
        env(pools_file, GHAPP_ALLOWED_ACCOUNTS=" acme, Alice ,", GHAPP_RUNNER_SERVICE_ACCOUNT="ci-runner")
    )
    assert settings.allowed_accounts == ("acme", "Alice")
    assert settings.runner_service_account == "ci-runner"
    defaults = load_settings(env(pools_file))
    assert defaults.allowed_accounts == ()  # the App's owner only
    assert defaults.runner_service_account is None  # each namespace's `default` account


@pytest.mark.parametrize(
    ("name", "value"),
    [("GHAPP_ALLOWED_ACCOUNTS", "acme, not an account"), ("GHAPP_RUNNER_SERVICE_ACCOUNT", "Bad_Name")],
)
def test_bad_policy_settings_are_named(pools_file: Path, name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_settings(env(pools_file, **{name: value}))


@pytest.mark.parametrize(
    ("given", "kept"), [(" 12345\n", "12345"), ("Iv23liAbC123", "Iv23liAbC123"), ("Iv1.0a1b2c", "Iv1.0a1b2c")]
)
def test_the_app_id_is_trimmed(pools_file: Path, given: str, kept: str) -> None:
    assert load_settings(env(pools_file, GHAPP_APP_ID=given)).app_id == kept


def test_a_blank_app_id_counts_as_missing(pools_file: Path) -> None:
    settings = load_settings(env(pools_file, GHAPP_APP_ID="  "))
    assert settings.app_id is None
    with pytest.raises(ConfigError, match="missing required settings: GHAPP_APP_ID"):
        settings.require_credentials()


@pytest.mark.parametrize("given", ["ghapp", "12 345", "0", "-5", "my-app-12345"])
def test_an_app_id_that_is_no_app_id_is_refused(pools_file: Path, given: str) -> None:
    with pytest.raises(ConfigError, match=r"GHAPP_APP_ID: must be the App's numeric id .* or its client id"):
        load_settings(env(pools_file, GHAPP_APP_ID=given))


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ("", "should be a mapping with a 'pools:' list of pools, found an empty file"),
        ("- name: x\n", "should be a mapping with a 'pools:' list of pools, found a list"),
        ("pool:\n  - {name: x, labels: [a]}\n", "pools: is missing; pool: is not a field ghapp knows"),
        ("pools: linux\n", "pools: should be a list ([a, b] or '- ' lines), found text"),
        ("pools:\n  - linux\n", "pools.0: should be a mapping (name: value lines), found text"),
        ("pools:\n  - {name: x, labels: self-hosted}\n", "pool 'x' (pools.0.labels): should be a list"),
        (
            "pools:\n  - {name: x, labels: [a], max_runners: ten}\n",
            "(pools.0.max_runners): should be a whole number, found text",
        ),
        ("pools:\n  - {name: x, labels: [a], allow_public: maybe}\n", "should be true or false, found text"),
        ("pools:\n  - {name: x}\n", "pool 'x' (pools.0.labels): is missing"),
        (
            "pools:\n  - {name: x, labels: [a], maxRunners: 3}\n",
            "is not a field ghapp knows (did you mean max_runners? known: name, labels,",
        ),
        (
            "pools:\n  - name: x\n   labels: [a\n",
            "is not valid YAML: expected <block end>, but found '<block mapping start>' at line 3, column 4",
        ),
    ],
)
def test_pools_file_errors_say_what_was_found_in_plain_words(
    tmp_path: Path, document: str, expected: str
) -> None:
    path = tmp_path / "pools.yaml"
    path.write_text(document)
    with pytest.raises(ConfigError) as error:
        load_settings({"GHAPP_POOLS_FILE": str(path)})
    message = str(error.value)
    assert message.startswith(f"GHAPP_POOLS_FILE: {path}")
    assert expected in message
    assert "\n" not in message  # one line


def test_values_are_never_repeated_in_pools_errors(tmp_path: Path) -> None:
    path = tmp_path / "pools.yaml"
    path.write_text("pools:\n  - {name: x, labels: [a], max_runners: hunter2-secret}\n")
    with pytest.raises(ConfigError) as error:
        load_settings({"GHAPP_POOLS_FILE": str(path)})
    assert "hunter2" not in str(error.value)


def test_unknown_variables_are_found_with_the_likely_meant_one() -> None:
    environ = {"GHAPP_POOL_FILE": "x", "GHAPP_PORT": "1", "GHAPP_FROBNICATE": "1", "HOME": "/root"}
    assert unknown_variables(environ) == [
        "GHAPP_FROBNICATE",
        "GHAPP_POOL_FILE (did you mean GHAPP_POOLS_FILE?)",
    ]
    assert unknown_variables({"GHAPP_PRIVATE_KEY_FILE": "k", "GHAPP_ADMIN_PORT": "9"}) == []
