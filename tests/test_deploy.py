"""The deployment files agree with the code: production settings pass Django's deploy checks,
refuse to start without a secret key, the Procfile, Dockerfile and docker-compose.yml run the same
commands, and .env.example lists every variable the settings read.

No database: the settings are exercised in fresh subprocesses, the files are parsed as text.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import string
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
SETTINGS_SOURCE = (ROOT / "config" / "settings.py").read_text()
GUNICORN_SOURCE = (ROOT / "config" / "gunicorn.py").read_text()

# `env.str("NAME"`, `env.db_url("NAME"`, `env("NAME"`, `os.environ.get("NAME"`, `os.environ["NAME"]`,
# `os.getenv("NAME"`.
ENV_READ = re.compile(
    r"""(?:\benv(?:\.\w+)?\(|os\.environ\.get\(|os\.environ\[|os\.getenv\()\s*["']([A-Z][A-Z0-9_]*)["']"""
)

# Runs manage.py with django-environ's `.env` loading switched off, so a developer's own .env
# cannot change what these tests see: only the environment given to the subprocess counts.
RUN_MANAGE_WITHOUT_DOTENV = (
    "import runpy, sys, environ;"
    "environ.Env.read_env = classmethod(lambda cls, *args, **kwargs: None);"
    "sys.argv = ['manage.py', *sys.argv[1:]];"
    "runpy.run_path('manage.py', run_name='__main__')"
)


def variables_read_by(source: str) -> set[str]:
    return set(ENV_READ.findall(source))


def random_secret_key(length: int = 60) -> str:
    alphabet = string.ascii_letters + string.digits + "!@#%^&*(-_=+)"
    return "".join(secrets.choice(alphabet) for _ in range(length))


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", RUN_MANAGE_WITHOUT_DOTENV, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# Variables production refuses to start without (secrets and hosts have no default there).
REQUIRED_IN_PRODUCTION = (
    "DJANGO_SECRET_KEY",
    "DJANGO_ALLOWED_HOSTS",
    "STRIPE_SECRET_KEY",
    "STRIPE_PUBLISHABLE_KEY",
    "STRIPE_WEBHOOK_SECRET",
    "SENDGRID_API_KEY",
    "GOOGLE_SERVICE_ACCOUNT_JSON",
)


def production_environment(**overrides: str) -> dict[str, str]:
    """The current environment minus everything the settings read, plus production values."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in variables_read_by(SETTINGS_SOURCE) and name != "DJANGO_SETTINGS_MODULE"
    }
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        DJANGO_ENV="production",
        DJANGO_SECRET_KEY=random_secret_key(),
        DJANGO_ALLOWED_HOSTS="shop.example.com",
        STRIPE_SECRET_KEY="sk_test_" + random_secret_key(24),
        STRIPE_PUBLISHABLE_KEY="pk_test_" + random_secret_key(24),
        STRIPE_WEBHOOK_SECRET="whsec_" + random_secret_key(24),
        SENDGRID_API_KEY="SG." + random_secret_key(24),
        GOOGLE_SERVICE_ACCOUNT_JSON='{"type": "service_account"}',
        PYTHONWARNINGS="default",
    )
    env.update(overrides)
    return env


# --- (a) and (b): production settings ----------------------------------------------------------
def test_check_deploy_passes_with_production_variables() -> None:
    env = production_environment()
    assert len(env["DJANGO_SECRET_KEY"]) == 60

    result = manage("check", "--deploy", "--fail-level", "WARNING", env=env)

    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "System check identified no issues" in output, output
    assert "WARNING" not in output.upper(), output
    assert env["DJANGO_SECRET_KEY"] not in output


def test_production_settings_refuse_to_load_without_a_secret_key() -> None:
    env = production_environment()
    del env["DJANGO_SECRET_KEY"]
    jwt_key = "jwt-signing-key-that-must-never-be-printed-" + secrets.token_hex(16)
    env["JWT_SIGNING_KEY"] = jwt_key

    result = manage("check", env=env)

    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "ImproperlyConfigured" in output, output
    assert "DJANGO_SECRET_KEY" in output, output
    assert jwt_key not in output
    # Nor the development key the settings use outside production.
    assert "development-only-key" not in output, output


def test_check_deploy_fails_when_a_security_setting_is_off() -> None:
    """The deploy check above is able to fail: with HSTS off it reports security.W004."""
    env = production_environment(DJANGO_SECURE_HSTS_SECONDS="0")

    result = manage("check", "--deploy", "--fail-level", "WARNING", env=env)

    assert result.returncode != 0
    assert "security.W004" in result.stdout + result.stderr


# --- (c): the same commands everywhere ---------------------------------------------------------
def procfile_commands() -> dict[str, str]:
    commands = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, command = line.partition(":")
            commands[name.strip()] = command.strip()
    return commands


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with backslash continuations joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, arguments = full.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def dockerfile_cmd() -> str:
    cmds = [arguments for keyword, arguments in dockerfile_instructions() if keyword == "CMD"]
    assert cmds, "the Dockerfile has no CMD"
    cmd = cmds[-1]  # the last CMD is the one that counts
    if cmd.startswith("["):
        return " ".join(json.loads(cmd))
    return cmd


def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def compose_command(service: str) -> str:
    command = compose()["services"][service]["command"]
    return command if isinstance(command, str) else shlex.join(command)


def test_procfile_has_the_web_and_worker_commands() -> None:
    commands = procfile_commands()
    assert commands["web"] == "gunicorn -c config/gunicorn.py config.asgi:application"
    assert commands["worker"] == "python manage.py qcluster"


def test_dockerfile_cmd_is_the_procfile_web_command() -> None:
    assert dockerfile_cmd() == procfile_commands()["web"]


def test_compose_runs_the_procfile_commands() -> None:
    procfile = procfile_commands()
    assert compose_command("web") == procfile["web"]
    assert compose_command("worker") == procfile["worker"]
    assert compose_command("sweeper") == procfile["sweeper"]
    assert compose_command("migrate") == "python manage.py migrate --noinput"


def test_compose_starts_web_and_worker_after_migrations_and_healthy_backends() -> None:
    services = compose()["services"]
    assert "version" not in compose()
    for name in ("web", "worker", "sweeper"):
        depends_on = services[name]["depends_on"]
        assert depends_on["migrate"] == {"condition": "service_completed_successfully"}, name
        assert depends_on["postgres"] == {"condition": "service_healthy"}, name
        assert depends_on["redis"] == {"condition": "service_healthy"}, name
    assert services["migrate"]["depends_on"]["postgres"] == {"condition": "service_healthy"}
    assert "healthcheck" in services["postgres"]
    assert "healthcheck" in services["redis"]


def test_compose_hard_codes_no_django_secret() -> None:
    for name in ("web", "worker", "migrate"):
        environment = compose()["services"][name]["environment"]
        assert environment["DJANGO_ENV"] == "production", name
        for variable in REQUIRED_IN_PRODUCTION:
            assert re.fullmatch(rf"\$\{{{variable}:?\?[^}}]*\}}", environment[variable]), (name, variable)


def test_dockerfile_bakes_in_no_secret() -> None:
    env_lines = " ".join(arguments for keyword, arguments in dockerfile_instructions() if keyword == "ENV")
    assert "DJANGO_ENV=production" in env_lines
    for variable in REQUIRED_IN_PRODUCTION:
        assert variable not in env_lines
    users = [arguments for keyword, arguments in dockerfile_instructions() if keyword == "USER"]
    assert users, "the image must not run as root"
    assert users[-1] not in {"root", "0"}


# --- (d): .env.example -------------------------------------------------------------------------
def test_env_example_lists_every_variable_the_settings_read() -> None:
    read = variables_read_by(SETTINGS_SOURCE) | variables_read_by(GUNICORN_SOURCE)
    # The pattern must really find them, or this test would pass on nothing.
    assert {"DJANGO_ENV", "DJANGO_SECRET_KEY", "DATABASE_URL", "REDIS_URL", "GUNICORN_BIND"} <= read
    assert len(read) >= 30

    example = (ROOT / ".env.example").read_text()
    listed = set(re.findall(r"^#?[ \t]*([A-Z][A-Z0-9_]*)=", example, flags=re.MULTILINE))

    assert sorted(read - listed) == []
    assert {"PORT", "PYTHON"} <= listed  # the Makefile's own


# --- (e): the image holds the product only ----------------------------------------------------
# Dev-only and test code the image leaves out (.dockerignore) and the product never imports.
LEFT_OUT_OF_THE_IMAGE = ("sandbox", "tests", "bench")
PRODUCT_PACKAGES = ("access", "config", "core", "orders", "payments", "integrations", "monitoring", "live")

# Imports the web process (as the image's CMD does), then its URLconf (every view, API and admin
# module); any import of a left-out package fails, as it would in the image, where they are absent.
IMPORT_THE_PRODUCT = """
import importlib.abc, sys
LEFT_OUT = {left_out!r}
class LeftOut(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in LEFT_OUT:
            raise ImportError(f"{{name}} is not in the image")
        return None
sys.meta_path.insert(0, LeftOut())
import config.asgi
from django.urls import get_resolver
get_resolver().url_patterns
from django.conf import settings
print(",".join(settings.INSTALLED_APPS))
print(",".join(sorted(m for m in sys.modules if m.partition(".")[0] in LEFT_OUT)))
"""


def dockerfile_build_environment() -> dict[str, str]:
    """The throwaway variables the Dockerfile gives `collectstatic` (its RUN line, parsed)."""
    [run] = [
        arguments
        for keyword, arguments in dockerfile_instructions()
        if keyword == "RUN" and "collectstatic" in arguments
    ]
    assignments = run.partition("python manage.py collectstatic")[0]
    return dict(re.findall(r"\b([A-Z][A-Z0-9_]*)=(\S+)", assignments))


def test_production_settings_import_no_sandbox_test_or_bench_module() -> None:
    build_env = dockerfile_build_environment()
    assert set(REQUIRED_IN_PRODUCTION) <= set(build_env)
    env = production_environment(**build_env)

    result = subprocess.run(
        [sys.executable, "-c", IMPORT_THE_PRODUCT.format(left_out=LEFT_OUT_OF_THE_IMAGE)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    installed, imported = result.stdout.splitlines()[-2:]
    assert "sandbox" not in installed.split(",")
    assert imported == ""


def test_development_settings_install_the_sandbox_app() -> None:
    from django.conf import settings

    assert not settings.PRODUCTION
    assert "sandbox" in settings.INSTALLED_APPS


def test_dockerignore_leaves_out_the_sandboxes_tests_and_benchmarks() -> None:
    patterns = {
        line.strip().rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    }

    assert set(LEFT_OUT_OF_THE_IMAGE) <= patterns
    assert not any(
        pattern.startswith("!") and pattern[1:].startswith(LEFT_OUT_OF_THE_IMAGE) for pattern in patterns
    )


def test_product_code_imports_no_sandbox_test_or_bench_module() -> None:
    left_out = "|".join(LEFT_OUT_OF_THE_IMAGE)
    importing = re.compile(rf"^\s*(?:from|import)\s+(?:{left_out})(?:\.|\s|$)", flags=re.MULTILINE)
    offenders = [
        str(path.relative_to(ROOT))
        for package in PRODUCT_PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if importing.search(path.read_text())
    ]

    assert offenders == []
