"""Command line: `serve`, `reconcile`, `render`, `setup`, `check`, `send-test-webhook` (parse arguments, build
settings, run)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web

from ghapp import __version__, kubeaccess, logs, manifests, planner, policy, warm
from ghapp.config import (
    ENVIRONMENT_VARIABLES,
    Settings,
    load_settings,
    requested_log_format,
    unknown_variables,
)
from ghapp.errors import ConfigError, GhappError, KubernetesError
from ghapp.models import WorkflowJob
from ghapp.sensitive import Secret

SAMPLE_PAYLOAD = Path(__file__).with_name("data") / "sample-workflow-job.json"
TOKEN_PLACEHOLDER = "<registration-token>"
JITCONFIG_PLACEHOLDER = "<encoded-jit-config>"
RUNNER_ID_PLACEHOLDER = "<runner id from generate-jitconfig>"
log = logging.getLogger("ghapp")


class _ManifestDumper(yaml.SafeDumper):
    """YAML as people write manifests: no anchors, multi-line strings as literal blocks."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str_block(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_ManifestDumper.add_representer(str, _str_block)


def _add_pools_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pools", type=Path, help="pools file (default: GHAPP_POOLS_FILE, else the bundled sample)"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ghapp",
        description="A GitHub App that starts one ephemeral self-hosted Actions runner as a Kubernetes Job "
        "for every queued workflow job. Settings come from GHAPP_* environment variables: "
        + ", ".join(ENVIRONMENT_VARIABLES)
        + ".",
    )
    parser.add_argument("--version", action="version", version=f"ghapp {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="receive webhooks and start runners (needs the App credentials and a cluster)",
        description="Serve POST /webhook, /healthz and /readyz on GHAPP_HOST:GHAPP_PORT, and /metrics,"
        " /status and /status.json on GHAPP_HOST:GHAPP_ADMIN_PORT. "
        "Kubernetes access: KUBECONFIG or ~/.kube/config if present, else the pod's service account.",
    )
    _add_pools_argument(serve)
    reconcile = commands.add_parser(
        "reconcile",
        help="run one reconcile pass now and print what it did (needs the App credentials and a cluster)",
        description="Redeliver failed webhook deliveries, start runners for queued jobs that have none, and "
        "remove surplus and orphaned runners — once, without leader election — then print a JSON report. "
        "Exit 1 if a step failed.",
    )
    reconcile.add_argument("--once", action="store_true", required=True, help="one pass, then exit")
    _add_pools_argument(reconcile)
    render = commands.add_parser(
        "render",
        help="print the Secret and Job a queued workflow_job payload would produce (no GitHub, no cluster)",
        description="Plan a runner for a workflow_job payload and print the Kubernetes manifests as YAML, "
        "with the registration token replaced by a placeholder. Works offline.",
    )
    render.add_argument(
        "--payload",
        type=Path,
        default=SAMPLE_PAYLOAD,
        help="a workflow_job webhook payload (JSON); default: a bundled sample",
    )
    _add_pools_argument(render)
    render.add_argument("--pool", metavar="NAME", help="render for this pool, whatever the job's labels")
    render.add_argument(
        "--app-owner",
        metavar="LOGIN",
        help="the App owner's login, for the account rule when GHAPP_ALLOWED_ACCOUNTS is empty "
        "(without it that rule is not checked offline)",
    )
    render.add_argument(
        "--head-repository",
        metavar="OWNER/NAME",
        help="the workflow run's head repository, for the fork rule of public repositories "
        "(without it that rule is not checked offline)",
    )
    _add_setup_parser(commands)
    _add_check_parser(commands)
    _add_status_parsers(commands)
    _add_send_test_webhook_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "setup":
        return setup_command(args)
    if args.command == "check":
        return check_command(args)
    if args.command in ("status", "usage"):
        return status_command(args)
    if args.command == "send-test-webhook":
        return send_test_webhook_command(args)
    try:
        settings = load_settings(pools_file=args.pools)
        if args.command == "render":
            facts = policy.Facts(app_owner=args.app_owner, head_repository=args.head_repository, offline=True)
            return render(settings, payload_file=args.payload, pool_name=args.pool, facts=facts)
        if args.command == "reconcile":
            return reconcile_once(settings)
        return serve(settings)
    except GhappError as exc:
        return fail(str(exc))


def fail(message: str) -> int:
    """Print the one error line of a failed command (JSON when GHAPP_LOG_FORMAT=json); exit status 2."""
    print(logs.error_line(message, fmt=requested_log_format()), file=sys.stderr, flush=True)
    return 2


def render(
    settings: Settings,
    *,
    payload_file: Path,
    pool_name: str | None = None,
    facts: policy.Facts | None = None,
    now: float | None = None,
) -> int:
    """Print the manifests for one payload; exit 1 (with the rule and reason) if ghapp would not start a
    runner. Rules that need facts from GitHub that `facts` lacks are reported as not checked."""
    try:
        payload: Any = json.loads(payload_file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"--payload: cannot read {payload_file}: {exc.strerror}") from None
    except ValueError as exc:
        raise ConfigError(f"--payload: {payload_file} is not JSON: {exc}") from None
    pool = None
    if pool_name is not None:
        pool = settings.pool(pool_name)
        if pool is None:
            names = ", ".join(p.name for p in settings.pools)
            raise ConfigError(f"--pool: no pool named {pool_name!r} (pools: {names})")
    job = WorkflowJob.from_payload(payload)
    match planner.plan(job, settings, facts=facts or policy.Facts(offline=True), pool=pool):
        case planner.Skip(reason, rule) as skip if skip.refused:
            print(f"# no runner for workflow job {job.id}: refused by rule {rule}: {reason}")
            return 1
        case planner.Skip(reason):
            print(f"# no runner for workflow job {job.id}: {reason}")
            return 1
        case planner.RunnerPlan() as plan:
            print(_render_plan(plan, now=time.time() if now is None else now), end="")
            return 0
    raise AssertionError("unreachable")


def _render_plan(plan: planner.RunnerPlan, *, now: float) -> str:
    """The comment header, Secret and Job of `plan`, credentials replaced by placeholders."""
    jit = plan.pool.mode == "jit"
    placeholder = JITCONFIG_PLACEHOLDER if jit else TOKEN_PLACEHOLDER
    secret = manifests.runner_secret(plan, credential=Secret(placeholder), job_uid="<job-uid>")
    secret.pop("data")
    secret["stringData"] = {manifests.credential_key(plan.pool): placeholder}
    job = manifests.runner_job(plan)
    lines = [
        f"# pool {plan.pool.name} ({plan.pool.mode}), {plan.scope.kind} runner for {plan.scope.key}, "
        f"runner {plan.name}, namespace {plan.namespace}"
    ]
    lines += [f"# {note}" for note in plan.notes]
    lines += [f"# warm: {warm.describe(target)}" for target in warm.targets((plan.pool,), now)]
    if jit:
        job["metadata"]["annotations"][manifests.RUNNER_ID_ANNOTATION] = RUNNER_ID_PLACEHOLDER
        group = (
            f"the id of runner group {plan.pool.runner_group!r}"
            if plan.scope.kind == "org" and plan.pool.runner_group
            else "1 (the default group)"
        )
        lines.append(
            f"# JIT: POST {plan.scope.api_path}/actions/runners/generate-jitconfig with name {plan.name}, "
            f"labels {list(plan.pool.labels)}, work_folder _work, runner_group_id {group}"
        )
    lines.append(yaml.dump_all([secret, job], Dumper=_ManifestDumper, sort_keys=False))
    return "\n".join(lines)


@contextlib.contextmanager
def _naming_the_cluster(loaded: list[kubeaccess.KubeAccess]) -> Iterator[None]:
    """Cluster errors say which API server and context they are about (`loaded`: the access in use, once
    it is loaded)."""
    try:
        yield
    except KubernetesError as exc:
        if not loaded:
            raise
        raise KubernetesError(f"{exc} ({loaded[0].describe()})", status=exc.status) from None


def reconcile_once(settings: Settings) -> int:
    """One reconcile pass, as the leader would run it; prints the report as JSON."""
    from ghapp.app import start_services

    settings.require_credentials()
    kubeconfig = kubeaccess.kubeconfig_file(settings)
    logs.setup(level=settings.log_level, fmt=settings.log_format)
    loaded: list[kubeaccess.KubeAccess] = []

    async def run() -> dict[str, Any]:
        access = await kubeaccess.load(kubeconfig)
        loaded.append(access)
        services = await start_services(settings, kube_configuration=access.configuration)
        try:
            await services.inventory.sync()
            report = await services.reconciler.reconcile_once()
            await services.tasks.drain(grace=settings.shutdown_grace_seconds)
            return report.as_dict()
        finally:
            await services.close()

    with _naming_the_cluster(loaded):
        report = asyncio.run(run())
    print(json.dumps(report, indent=2))
    return 1 if report["errors"] else 0


def listen(host: str, port: int, *, setting: str) -> socket.socket:
    """A bound listening socket, or a `ConfigError` naming `setting` (port in use, address not here)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=128)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ConfigError(f"{setting}: cannot listen on {host}:{port}: {reason}") from None


def log_startup(settings: Settings) -> None:
    """The startup line (version, listen addresses, pools file, GitHub, App id, namespaces, account rule)
    and a warning for each thing that is probably a mistake."""
    log.info(f"ghapp {__version__} starting", extra={"version": __version__, **settings.summary()})
    if settings.uses_sample_pools:
        log.warning(
            "the pools file is the sample bundled with ghapp; set GHAPP_POOLS_FILE to your own",
            extra={"pools_file": str(settings.pools_file)},
        )
    for name in unknown_variables():
        log.warning(f"unknown setting {name} is ignored", extra={"variable": name.split()[0]})


def serve(settings: Settings) -> int:
    """Run the server until SIGINT/SIGTERM. The ports are bound first, so a port in use stops it before
    anything starts or is logged as serving."""
    from ghapp.app import admin_listener, build_admin_app, build_app, start_services

    settings.require_credentials()
    kubeconfig = kubeaccess.kubeconfig_file(settings)
    public = listen(settings.host, settings.port, setting="GHAPP_PORT")
    try:
        admin_socket = listen(settings.host, settings.admin_port, setting="GHAPP_ADMIN_PORT")
    except ConfigError:
        public.close()
        raise
    logs.setup(level=settings.log_level, fmt=settings.log_format)
    log_startup(settings)
    loaded: list[kubeaccess.KubeAccess] = []

    async def make_app() -> web.Application:
        access = await kubeaccess.load(kubeconfig)
        loaded.append(access)
        services = await start_services(settings, kube_configuration=access.configuration)
        try:
            await services.verify_app()
        except BaseException:
            await services.close()
            raise
        app = build_app(services)
        admin = build_admin_app(services)
        app.cleanup_ctx.append(
            admin_listener(admin, host=settings.host, port=settings.admin_port, sock=admin_socket)
        )
        return app

    try:
        with _naming_the_cluster(loaded):
            web.run_app(make_app(), sock=public, print=None, shutdown_timeout=10)
    finally:
        public.close()
        admin_socket.close()
    return 0


def _add_setup_parser(commands: Any) -> None:
    from ghapp import setup

    parser = commands.add_parser(
        "setup",
        help="create the GitHub App from its manifest (in a browser) and store its credentials",
        description="Serve a local page whose button registers the App on GitHub from its manifest "
        "(GitHub's App manifest flow), then store the App's id, private key and secrets in a Kubernetes "
        f"Secret (default: {setup.DEFAULT_NAMESPACE}/{setup.SECRET_NAME}) or in files (--output-dir). "
        "Uses GHAPP_GITHUB_API_URL for GitHub Enterprise Server and KUBECONFIG for the cluster. "
        "Credentials are never printed.",
    )
    parser.add_argument("--org", help="register the App in this organisation (default: your account)")
    parser.add_argument("--name", default=setup.DEFAULT_NAME, help="the App's name (editable on GitHub)")
    parser.add_argument(
        "--webhook-url",
        default=setup.PLACEHOLDER_WEBHOOK_URL,
        help="where GitHub sends webhooks: https://YOUR-HOST/webhook (default: a placeholder to edit later)",
    )
    parser.add_argument(
        "--port", type=int, default=setup.DEFAULT_PORT, help="local port of the page (on 127.0.0.1; 0: any)"
    )
    parser.add_argument(
        "--namespace", default=setup.DEFAULT_NAMESPACE, help="namespace of the credentials Secret"
    )
    parser.add_argument("--secret-name", default=setup.SECRET_NAME, help="name of the credentials Secret")
    parser.add_argument(
        "--output-dir", type=Path, help="write the credentials as files (mode 0600) here instead of a Secret"
    )
    parser.add_argument(
        "--replace", action="store_true", help="overwrite an existing credentials Secret or files"
    )


def setup_command(args: argparse.Namespace) -> int:
    """``ghapp setup``: create the App, store its credentials, print where to install it."""
    from ghapp import setup

    try:
        setup.check_options(org=args.org, webhook_url=args.webhook_url, port=args.port)
        settings = load_settings()
        loaded: list[kubeaccess.KubeAccess] = []

        async def go() -> int:
            configuration = None
            if args.output_dir is None:
                loaded.append(await kubeaccess.load(kubeaccess.kubeconfig_file(settings)))
                configuration = loaded[0].configuration
            return await setup.run(
                github_api_url=settings.github_api_url,
                web_url=settings.web_url,
                kube_configuration=configuration,
                namespace=args.namespace,
                secret_name=args.secret_name,
                output_dir=args.output_dir,
                replace=args.replace,
                org=args.org,
                name=args.name,
                webhook_url=args.webhook_url,
                port=args.port,
            )

        with _naming_the_cluster(loaded):
            return asyncio.run(go())
    except GhappError as exc:
        return fail(str(exc))
    except KeyboardInterrupt:
        print("ghapp: setup interrupted", file=sys.stderr)
        return 130


def _add_check_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "check",
        help="verify a deployment: settings, GitHub credentials and installations, Kubernetes access",
        description="Check the settings (and pools file), that GitHub accepts the App's JWT and that the "
        "App subscribes to workflow_job, the App's webhook (URL, content type, secret) and its failed "
        "deliveries of the last 24 hours, that every installation grants the permissions ghapp needs and "
        "that the account rule and the pools let its jobs in, that the Kubernetes API answers and that ghapp "
        "may do everything it needs in GHAPP_NAMESPACE (and in the pools' own namespaces). "
        "Prints one PASS/WARN/FAIL line per check; exit status 0 only if none fails "
        "(a WARN works but deserves a look). Writes nothing."
        " In a cluster: kubectl exec deploy/ghapp -- ghapp check",
    )
    _add_pools_argument(parser)


def check_command(args: argparse.Namespace) -> int:
    """``ghapp check``: print the report; 0 if every check passed, else 1."""
    from ghapp import check

    unknown = unknown_variables()
    try:
        settings = load_settings(pools_file=args.pools)
    except GhappError as exc:
        typos = [check.warn("settings: unknown variable", f"{name} is ignored") for name in unknown]
        print(check.report([check.Result(False, "settings", str(exc)), *typos]), end="")
        return 1

    async def go() -> list[check.Result]:
        try:
            configuration = (await kubeaccess.load(kubeaccess.kubeconfig_file(settings))).configuration
        except GhappError as exc:
            github = await check.run_checks(settings, kube_configuration=None, unknown_variables=unknown)
            return [*github, check.Result(False, "Kubernetes: configuration", str(exc))]
        return await check.run_checks(settings, kube_configuration=configuration, unknown_variables=unknown)

    results = asyncio.run(go())
    print(check.report(results), end="")
    return 0 if all(result.ok for result in results) else 1


def _add_status_parsers(commands: Any) -> None:
    for name, help_text in (
        (
            "status",
            "print what a running ghapp knows: pools, waiting jobs and why, refusals, runners failing, "
            "installations, the reconciler, runner time, recent jobs",
        ),
        ("usage", "print runner time per account and pool over the last 24 h and 7 d, from a running ghapp"),
    ):
        parser = commands.add_parser(
            name,
            help=help_text,
            description=help_text[0].upper() + help_text[1:] + ". Reads /status.json on the admin port "
            "(default: this host's GHAPP_ADMIN_PORT). In a cluster: kubectl exec deploy/ghapp -- ghapp "
            + name
            + ", or kubectl port-forward svc/ghapp-admin 9090 and run it locally.",
        )
        parser.add_argument(
            "--url", help="the status JSON to read (default: http://127.0.0.1:ADMIN_PORT/status.json)"
        )
        parser.add_argument("--json", action="store_true", help="print the JSON as it is")


def status_command(args: argparse.Namespace) -> int:
    """``ghapp status`` / ``ghapp usage``: fetch /status.json of a running ghapp and print it for people
    (exit 2 with one error line when it cannot be read)."""
    from ghapp import statuspage

    try:
        url = args.url or f"http://127.0.0.1:{load_settings().admin_port}/status.json"
    except GhappError as exc:
        return fail(str(exc))

    async def fetch() -> Any:
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as response:
            if response.status != 200:
                raise GhappError(f"{url} answered HTTP {response.status}")
            return await response.json()

    try:
        status = asyncio.run(fetch())
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return fail(f"cannot read {url}: {exc or type(exc).__name__}")
    except GhappError as exc:
        return fail(str(exc))
    if args.json:
        print(json.dumps(status if args.command == "status" else status["usage"], indent=2))
    else:
        print(statuspage.text(status, only=None if args.command == "status" else "Runner time"), end="")
    return 0


def _add_send_test_webhook_parser(commands: Any) -> None:
    from ghapp import testwebhook

    parser = commands.add_parser(
        "send-test-webhook",
        help="send a correctly signed webhook to a running ghapp and print its answer (no GitHub needed)",
        description="Sign a delivery with GHAPP_WEBHOOK_SECRET, POST it to a running ghapp (default: the "
        "local one on GHAPP_HOST:GHAPP_PORT) and print the answer: proves the secret and the route "
        "(Ingress, Service) without GitHub. A workflow_job delivery has the action "
        f"'{testwebhook.TEST_ACTION}', which ghapp logs and starts nothing for. Exit 0 on a 2xx answer, "
        "1 on another answer, 2 if nothing answered.",
    )
    parser.add_argument("--url", help="the webhook URL (default: http://GHAPP_HOST:GHAPP_PORT/webhook)")
    parser.add_argument(
        "--event", choices=testwebhook.EVENTS, default="ping", help="the event (default: ping)"
    )
    parser.add_argument(
        "--labels",
        nargs="+",
        default=["self-hosted", "linux", "x64"],
        metavar="LABEL",
        help="the workflow_job's runs-on labels (space- or comma-separated; default: self-hosted linux x64)",
    )
    _add_pools_argument(parser)


def send_test_webhook_command(args: argparse.Namespace) -> int:
    """``ghapp send-test-webhook``: 0 if ghapp answered 2xx, 1 if it answered otherwise, 2 on errors."""
    from ghapp import testwebhook

    try:
        settings = load_settings(pools_file=args.pools)
        if settings.webhook_secret is None:
            raise ConfigError(
                "GHAPP_WEBHOOK_SECRET (or GHAPP_WEBHOOK_SECRET_FILE): not set; it signs the delivery"
            )
        labels = [label.strip() for item in args.labels for label in item.split(",") if label.strip()]
        if args.event == "workflow_job" and not labels:
            raise ConfigError("--labels: give at least one label")
        url = args.url or testwebhook.default_url(settings)
        body = testwebhook.payload(args.event, labels=labels)
        delivery = testwebhook.signed(args.event, body, secret=settings.webhook_secret.get_secret_value())
        for line in testwebhook.describe(delivery, url=url, labels=labels, settings=settings):
            print(line, flush=True)
        answer = asyncio.run(testwebhook.send(delivery, url=url))
    except GhappError as exc:
        return fail(str(exc))
    print(testwebhook.verdict(answer))
    return 0 if answer.ok else 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
