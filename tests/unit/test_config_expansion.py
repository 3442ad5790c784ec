"""``${VAR}`` / ``${VAR:-default}`` in the config file, ``VAR_FILE`` and ``secrets_dir``; secrets stay out of errors."""

import pytest

from app.config.settings import ConfigError, Settings, load_settings

WEBHOOK = """
webhooks:
  - name: github
    path: /hooks/github
    verify: {{scheme: github, secrets: [{secret}]}}
    deliver_to: [{{name: ci, url: "http://ci.internal/hook"}}]
"""


def write(tmp_path, text):
    path = tmp_path / "gatehouse.yaml"
    path.write_text(text)
    return path


def test_variable_in_a_secret_is_taken_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("GITHUB_SECRET", "s3cret-from-env")
    settings = load_settings(write(tmp_path, WEBHOOK.format(secret='"${GITHUB_SECRET}"')))
    assert settings.webhooks[0].verify.secrets[0].get_secret_value() == "s3cret-from-env"


def test_missing_variable_names_the_setting(tmp_path, monkeypatch):
    monkeypatch.delenv("GITHUB_SECRET", raising=False)
    monkeypatch.delenv("GITHUB_SECRET_FILE", raising=False)
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, WEBHOOK.format(secret='"${GITHUB_SECRET}"')))
    assert "webhooks[0] 'github' -> verify.secrets[0]: environment variable GITHUB_SECRET is not set" in str(
        caught.value
    )


def test_default_applies_when_unset_or_empty_and_parts_of_strings_expand(tmp_path, monkeypatch):
    monkeypatch.delenv("UPSTREAM_HOST", raising=False)
    monkeypatch.setenv("READ_TIMEOUT", "")
    monkeypatch.setenv("PORT", "8081")
    path = write(
        tmp_path,
        "timeout: {read: '${READ_TIMEOUT:-12}'}\n"
        "routes:\n  - {name: a, prefix: /a, upstream: 'http://${UPSTREAM_HOST:-users}:${PORT}/v1'}\n",
    )
    settings = load_settings(path)
    assert settings.timeout.read == 12
    assert settings.routes[0].upstream == "http://users:8081/v1"


def test_doubled_dollar_is_a_literal_and_bad_references_are_errors(tmp_path):
    path = write(
        tmp_path,
        "routes:\n  - {name: a, prefix: /a, upstream: http://a, request_headers: {set: {x-t: '$${NOT_EXPANDED}'}}}\n",
    )
    assert load_settings(path).routes[0].request_headers.set == {"x-t": "${NOT_EXPANDED}"}
    with pytest.raises(ConfigError, match=r"log_level: \$\{1BAD\} is not a valid reference"):
        load_settings(write(tmp_path, "log_level: '${1BAD}'\n"))


def test_variable_file_supplies_the_value_without_its_newline(tmp_path, monkeypatch):
    secret_file = tmp_path / "github_secret"
    secret_file.write_text("from-a-mounted-file\n")
    monkeypatch.delenv("GITHUB_SECRET", raising=False)
    monkeypatch.setenv("GITHUB_SECRET_FILE", str(secret_file))
    settings = load_settings(write(tmp_path, WEBHOOK.format(secret='"${GITHUB_SECRET}"')))
    assert settings.webhooks[0].verify.secrets[0].get_secret_value() == "from-a-mounted-file"
    monkeypatch.setenv("GITHUB_SECRET_FILE", str(tmp_path / "absent"))
    with pytest.raises(ConfigError, match="GITHUB_SECRET_FILE: cannot read .*absent"):
        load_settings(write(tmp_path, WEBHOOK.format(secret='"${GITHUB_SECRET}"')))


def test_secrets_dir_supplies_top_level_secrets(tmp_path, monkeypatch):
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "gatehouse_admin_token").write_text("an-admin-token-of-some-length\n")
    (secrets / "gatehouse_redis_url").write_text("redis://:pw@redis:6379/0")
    monkeypatch.setenv("GATEHOUSE_SECRETS_DIR", str(secrets))
    settings = load_settings()
    assert (
        settings.admin_token is not None and settings.admin_token.get_secret_value() == "an-admin-token-of-some-length"
    )
    assert settings.redis_url is not None and settings.redis_url.get_secret_value() == "redis://:pw@redis:6379/0"
    monkeypatch.setenv("GATEHOUSE_SECRETS_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="secrets_dir: .*nowhere.* is not a directory"):
        load_settings()


@pytest.mark.parametrize(
    ("settings", "secret"),
    [
        ({"admin_token": "too-short-1234"}, "too-short-1234"),
        ({"redis_url": "http://user:hunter2@redis"}, "hunter2"),
        ({"webhook_store": "postgresql://u:hunter2@db:notaport/x"}, "hunter2"),
    ],
)
def test_errors_never_echo_a_secret_value(settings, secret):
    with pytest.raises(ConfigError) as caught:
        Settings(**settings)
    assert next(iter(settings)) in str(caught.value)
    assert secret not in str(caught.value)


def test_errors_never_echo_a_substituted_value(tmp_path, monkeypatch):
    monkeypatch.setenv("LEVEL", "hunter2-level")
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, "log_level: '${LEVEL}'\n"))
    assert "log_level" in str(caught.value) and "hunter2" not in str(caught.value)


@pytest.mark.parametrize("prefix", ["/_ops\n", "/_ops ", "/_o\tps", "/_öps"])
def test_ops_prefix_rejects_whitespace_controls_and_non_ascii(prefix):
    with pytest.raises(ConfigError, match="ops_prefix: may hold only"):
        Settings(ops_prefix=prefix)
