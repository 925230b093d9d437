"""The checks of compose.yaml, the Dockerfile and what they mount.

Each `check_*` takes the project as compose reads it (model.Stack) and
returns the problems it finds, each a sentence saying what is wrong and why
it matters; an empty list means the check holds. `run_checks(root)` runs
them all on the repository (or a copy of it) at `root`, and
`check_app_environment` also reads the app's code under `root/app`. The
checks only read files: nothing is started, changed or sent anywhere.
"""

from __future__ import annotations

import ast
import dataclasses
import fnmatch
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

import yaml

from app.edge import nginx as edge
from app.platform.config import ConfigError, Settings
from tools.composecheck.model import (SECRET_NAME, Stack, apt_packages, arg_defaults, expand_args, image_problem,
                                      image_tag, parse_dockerfile)

# Conditions that wait for something: a dependency is healthy, or a one-shot
# job finished without error.
WAITING_CONDITIONS = {"service_healthy", "service_completed_successfully"}
RESTART_POLICIES = {"always", "unless-stopped", "on-failure"}
# The PostgreSQL apt repository's signing key (apt.postgresql.org), which
# the image's PostgreSQL client is installed with.
PGDG_FINGERPRINT = "B97B0AFCAA1A47F044F244A07FCC7D46ACCC4CF8"
# Packages that build software: none belongs in the image the appliance runs.
BUILD_TOOLS = {"gcc", "g++", "cpp", "clang", "make", "cmake", "build-essential", "autoconf", "automake",
               "libtool", "pkg-config", "pkgconf", "git", "cargo", "rustc", "python3-dev", "python3-pip"}
MOSIS_NAME = re.compile(r"\bMOSIS_[A-Z0-9_]*[A-Z0-9]\b")
# What the MinIO image carries besides the server: a shell, coreutils and mc;
# no curl, wget, sed or awk.
MINIO_IMAGE_TOOLS = {"sh", "cat", "dirname", "sleep", "mc"}
# Declarations of app/platform/config.py: each gives the default of its variable.
CONFIG_READERS = {"setting", "Var"}


@dataclass
class Read:
    name: str
    where: str
    has_default: bool


def scan_app(app_dir: Path) -> tuple[set[str], list[Read], set[str]]:
    """Every MOSIS_* name in the app's code, how each is read, and the names
    the app only sets for itself (os.environ[...] = ..., internal markers)."""
    names: set[str] = set()
    reads: list[Read] = []
    internal: set[str] = set()
    for path in sorted(app_dir.rglob("*.py")):
        text = path.read_text()
        found = MOSIS_NAME.findall(text)
        if not found:
            continue
        names.update(found)
        tree = ast.parse(text)
        # get(NAME) whose None the code itself handles: `get(NAME) or ...`,
        # a condition, a comparison.
        defaulted: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.BoolOp) and isinstance(node.op, ast.Or):
                defaulted.update(id(v) for v in node.values[:-1])
            elif isinstance(node, (ast.If, ast.IfExp, ast.While)):
                defaulted.add(id(node.test))
            elif isinstance(node, ast.Compare):
                defaulted.update(id(v) for v in [node.left, *node.comparators])
            elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
                defaulted.add(id(node.operand))
        rel = path.relative_to(app_dir.parent)
        for node in ast.walk(tree):
            where = f"{rel}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Call):
                const = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
                name = next((c for c in const if MOSIS_NAME.fullmatch(c)), None)
                if not name:
                    continue
                func = node.func
                fname = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if fname in CONFIG_READERS:
                    reads.append(Read(name, where, True))
                elif fname in ("get", "getenv", "pop", "setdefault"):
                    reads.append(Read(name, where, len(node.args) >= 2 or id(node) in defaulted))
            elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) \
                    and isinstance(node.slice.value, str) and MOSIS_NAME.fullmatch(node.slice.value):
                target = ast.unparse(node.value)
                if isinstance(node.ctx, ast.Store):
                    if target == "os.environ":
                        internal.add(node.slice.value)
                else:
                    reads.append(Read(node.slice.value, where, False))
    return names, reads, internal


# -- the checks ----------------------------------------------------------------------------


def check_healthchecks(stack: Stack) -> list[str]:
    problems = []
    for name, svc in stack.services.items():
        if stack.is_one_shot(name):
            continue
        hc = svc.get("healthcheck") or {}
        test = hc.get("test")
        if not hc or hc.get("disable") or not test or test in ("NONE", ["NONE"]):
            problems.append(f"{name}: a long-running service without a healthcheck: nothing can wait for it "
                            f"to be ready, and `docker compose ps` cannot tell when it stops answering")
        if str(svc.get("restart", "")) not in RESTART_POLICIES:
            problems.append(f"{name}: no restart policy (restart: {svc.get('restart')!r}): it stays down after "
                            f"a crash or a reboot; only one-shot jobs may say restart: \"no\"")
    for name in stack.services:
        deps = stack.depends_on(name)
        for dep, spec in (deps.items() if isinstance(deps, dict) else []):
            condition = (spec or {}).get("condition")
            if dep in stack.services and stack.is_one_shot(dep) and condition != "service_completed_successfully":
                problems.append(f"{name}: waits for the one-shot job {dep} with {condition!r}; a job that exits "
                                f"is never healthy: use service_completed_successfully")
            if dep in stack.services and not stack.is_one_shot(dep) \
                    and condition == "service_completed_successfully":
                problems.append(f"{name}: waits for {dep} to complete, but {dep} runs until stopped")
    return problems


def check_images(stack: Stack) -> list[str]:
    problems = []
    for name, svc in stack.services.items():
        ref = svc.get("image")
        if not ref:
            problems.append(f"{name}: no image: name and version tag (a built image needs one too)")
        elif problem := image_problem(ref):
            problems.append(f"{name}: {problem}")
    version = re.search(r'^version\s*=\s*"([^"]+)"', (stack.root / "pyproject.toml").read_text(), re.M).group(1)
    for name, svc in stack.services.items():
        if svc.get("build") and svc.get("image") and image_tag(svc["image"]) != version:
            problems.append(f"{name}: builds {svc['image']!r} but pyproject.toml says version {version}: "
                            f"an upgrade would overwrite the tag a rollback needs")
    minio = {n: s.get("image") for n, s in stack.services.items() if re.fullmatch(r"minio(\d+|-init)", n)}
    if len(set(minio.values())) > 1:
        problems.append(f"the MinIO nodes and minio-init run different images {minio}: a cluster needs one version")
    return problems


def check_ports(stack: Stack) -> list[str]:
    problems = []
    for name, svc in stack.services.items():
        if svc.get("ports") and name != "nginx":
            problems.append(f"{name} publishes ports {svc['ports']}: only nginx may; everything else is "
                            f"reachable on the compose network alone")
        if svc.get("network_mode") == "host":
            problems.append(f"{name}: network_mode host puts every port it opens on the host")
    if not stack.services.get("nginx", {}).get("ports"):
        problems.append("nginx publishes no port: nothing can reach the appliance")
    return problems


def check_depends_on(stack: Stack) -> list[str]:
    problems = []
    for name in stack.services:
        deps = stack.depends_on(name)
        if isinstance(deps, list):
            problems.append(f"{name}: depends_on lists {deps} without a condition: compose then starts "
                            f"{name} as soon as they are created, not when they are ready")
            continue
        for dep, spec in deps.items():
            spec = spec or {}
            if spec.get("condition") not in WAITING_CONDITIONS:
                problems.append(f"{name}: depends_on {dep} with condition {spec.get('condition')!r}; use "
                                f"one of {sorted(WAITING_CONDITIONS)}")
            if dep not in stack.services:
                problems.append(f"{name}: depends_on {dep}, which is no service")
                continue
            own = set(stack.services[name].get("profiles") or [])
            theirs = set(stack.services[dep].get("profiles") or [])
            if theirs and not theirs <= own and spec.get("required", True) is not False:
                problems.append(f"{name}: depends_on {dep} (profiles {sorted(theirs)}) without required: false: "
                                f"compose refuses to start when that profile is off")
    return problems


def _pgdata(image: str) -> str:
    major = image_tag(image).split(".")[0].split("-")[0]
    # The postgres image moved its data under a versioned directory in 18.
    return "/var/lib/postgresql" if major.isdigit() and int(major) >= 18 else "/var/lib/postgresql/data"


def check_volumes(stack: Stack) -> list[str]:
    problems = []
    declared = set(stack.resolved.get("volumes") or {})
    used = set()
    for name in stack.services:
        for v in stack.volumes(name):
            if v.named:
                used.add(v.source)
                if v.source not in declared:
                    problems.append(f"{name}: volume {v.source!r} is not declared under the top-level volumes:")
    for unused in sorted(declared - used):
        problems.append(f"volume {unused!r} is declared but no service mounts it")

    def needs(service: str, path: str, what: str):
        if service not in stack.services:
            problems.append(f"no service {service!r} for {what}")
            return None
        for v in stack.volumes(service):
            if v.target.rstrip("/") == path.rstrip("/"):
                if not v.named:
                    problems.append(f"{service}: {what} ({path}) is a bind mount of {v.source!r}, not a named volume")
                return v.source
        problems.append(f"{service}: {what} ({path}) has no named volume: it would be lost when the "
                        f"container is recreated")
        return None

    minio_volumes = [needs(f"minio{i}", "/data", "the MinIO drive") for i in range(1, 5)]
    if None not in minio_volumes and len(set(minio_volumes)) != 4:
        problems.append(f"the four MinIO nodes must each have a volume of their own, got {minio_volumes}")
    if "postgres" in stack.services:
        needs("postgres", _pgdata(stack.services["postgres"]["image"]), "PostgreSQL's data directory")
    data = {s: needs(s, stack.container_env(s).get("MOSIS_DATA_DIR", "/var/lib/mosis"), "the app's data")
            for s in ("app", "scheduler")}
    if len(set(data.values())) != 1:
        problems.append(f"the app and the scheduler must share their data volume, got {data}")
    needs("nginx", str(PurePosixPath(edge.compose_target(Settings()).cache_dir).parent), "the edge cache")
    if "prometheus" in stack.services:
        tsdb = next((c.split("=", 1)[1] for c in stack.command("prometheus") or []
                     if c.startswith("--storage.tsdb.path=")), "/prometheus")
        needs("prometheus", tsdb, "Prometheus's time series")
    needs("grafana", "/var/lib/grafana", "Grafana's database")
    return problems


def check_minio(stack: Stack) -> list[str]:
    problems = []
    nodes = sorted(n for n in stack.services if re.fullmatch(r"minio\d+", n))
    if nodes != ["minio1", "minio2", "minio3", "minio4"]:
        problems.append(f"the MinIO cluster must be four nodes minio1..minio4, got {nodes}")
    for n in nodes:
        svc = stack.services[n]
        cmd = stack.command(n) or []
        if "server" not in cmd or "http://minio{1...4}/data" not in cmd:
            problems.append(f"{n}: command {cmd} is not `server http://minio{{1...4}}/data`: the four nodes "
                            f"must form one erasure-coded set")
        if svc.get("hostname") != n:
            problems.append(f"{n}: hostname {svc.get('hostname')!r}: the cluster finds its peers as minio1..4")
        test = (svc.get("healthcheck") or {}).get("test") or []
        argv = shlex.split(test) if isinstance(test, str) else list(test)
        kind, argv = (argv[0], argv[1:]) if argv[:1] in (["CMD"], ["CMD-SHELL"]) else ("CMD", argv)
        if kind == "CMD-SHELL":
            argv = shlex.split(" ".join(argv))
        if argv[:1] and argv[0] not in MINIO_IMAGE_TOOLS:
            problems.append(f"{n}: healthcheck runs {argv[0]!r}, which the MinIO image does not have "
                            f"(it has {sorted(MINIO_IMAGE_TOOLS)}): the node never turns healthy")
        elif argv != ["mc", "ready", "local"]:
            problems.append(f"{n}: healthcheck {argv} is not `mc ready local` (the node's own health "
                            f"endpoint through mc's built-in alias for localhost:9000)")
        if stack.container_env(n).get("MINIO_PROMETHEUS_AUTH_TYPE") != "public":
            problems.append(f"{n}: MINIO_PROMETHEUS_AUTH_TYPE is not public: Prometheus scrapes it without a token")
    init = stack.services.get("minio-init")
    if init is None:
        problems.append("no minio-init job: nothing creates the bucket, the app's user and policy")
    else:
        waits = stack.depends_on("minio-init")
        missing = [n for n in nodes if (waits.get(n) or {}).get("condition") != "service_healthy"]
        if missing:
            problems.append(f"minio-init does not wait for {missing} to be healthy")
    return problems


def check_app_environment(stack: Stack, app_dir: Path) -> list[str]:
    problems = []
    names, reads, internal = scan_app(app_dir)
    app_services = ("app", "scheduler", "edge-config")
    # Settings as an operator's .env gives them: the placeholders are refused (test_startup.py).
    filled = stack.filled()
    envs = {s: filled.container_env(s) for s in app_services if s in stack.services}
    for read in reads:
        if read.name in internal or read.has_default:
            continue
        for s in ("app", "scheduler"):
            if not envs.get(s, {}).get(read.name):
                problems.append(f"{read.name} is read without a default ({read.where}) but {s}'s environment "
                                f"(compose.yaml, .env.example) does not set it")
    documented = set(re.findall(r"`(MOSIS_[A-Z0-9_]+)`", (stack.root / "docs/configuration.md").read_text()))
    for name in sorted(names - internal - documented):
        problems.append(f"{name} is read by the app but not documented in docs/configuration.md")
    settings = {}
    for s, env in envs.items():
        try:
            settings[s] = Settings.from_env(env)
        except ConfigError as e:
            problems.append(f"{s}: the settings compose gives it are refused: {e}")
    app = settings.get("app")
    if app:
        for s in ("scheduler", "edge-config"):
            if s in settings:
                differ = [f.name for f in dataclasses.fields(Settings)
                          if f.name != "scheduler_metrics_addr"
                          and getattr(settings[s], f.name) != getattr(app, f.name)]
                if differ:
                    problems.append(f"{s} runs with other settings than the app: {differ}")
        if not app.database_url.startswith("postgresql://") or urlparse(app.database_url).hostname not in stack.services:
            problems.append(f"app: MOSIS_DATABASE_URL {app.database_url!r} is not the compose PostgreSQL")
        for label, url in (("MOSIS_S3_ENDPOINT", app.s3_endpoint), ("MOSIS_EDGE_INTERNAL_URL", app.edge_internal_url)):
            if urlparse(url).hostname not in stack.services:
                problems.append(f"app: {label} {url!r} names no compose service")
        for label, value in (("MOSIS_ADMIN_TOKEN", app.admin_token),
                             ("MOSIS_DOWNLOAD_LINK_SECRET", app.download_link_secret)):
            if not value:
                problems.append(f"app: {label} is empty: compose must require it from .env")
    # The app's environment carries the secrets it uses, not MinIO's or Grafana's.
    for s, env in envs.items():
        for key, value in env.items():
            if SECRET_NAME.search(key) and value and key not in names:
                problems.append(f"{s}: its environment carries {key}, a secret it does not use")
    return problems


def check_required_variables(stack: Stack) -> list[str]:
    problems = list(stack.interpolation_problems)
    for name, op, where in stack.references:
        if op in (":?", "?") and not stack.env.get(name):
            problems.append(f"{where}: requires {name}, which .env.example does not set")
        if op is None and name not in stack.env:
            problems.append(f"{where}: uses {name} without a default and .env.example does not set it "
                            f"(compose would use an empty string)")
    return sorted(set(problems))


def _is_ignored(root: Path, path: str) -> bool:
    """By the repository's .gitignore, whatever this machine's own excludes say."""
    return subprocess.run(["git", "-c", "core.excludesFile=/dev/null", "check-ignore", "-q", path],
                          cwd=root).returncode == 0


def check_secrets(stack: Stack) -> list[str]:
    problems = []
    root = stack.root
    if not _is_ignored(root, ".env"):
        problems.append(".env is not git-ignored: secrets would be committed")
    if _is_ignored(root, ".env.example"):
        problems.append(".env.example is git-ignored: operators would not get it")
    dockerignore = [line.strip() for line in (root / ".dockerignore").read_text().splitlines()]
    if not any(fnmatch.fnmatch(".env", p) for p in dockerignore if p and not p.startswith("#")):
        problems.append(".dockerignore does not exclude .env: the build context would carry the secrets")
    for name, svc in stack.raw["services"].items():
        env = svc.get("environment") or {}
        if isinstance(env, list):
            env = dict(item.split("=", 1) for item in env if "=" in item)
        for key, value in env.items():
            value = "" if value is None else str(value)
            if SECRET_NAME.search(key) and value and "${" not in value and not value.startswith("/"):
                problems.append(f"{name}: {key} has a value written into compose.yaml; secrets come from .env")
    raw_text = (root / "compose.yaml").read_text()
    for m in re.finditer(r"://[^/\s:@]+:([^@\s]+)@", raw_text):
        if not m.group(1).startswith("${"):
            problems.append(f"compose.yaml: a URL carries a password written into the file ({m.group(0)!r})")
    for key, value in stack.env.items():
        if SECRET_NAME.search(key) and value and "change-me" not in value:
            problems.append(f".env.example: {key} holds a value that is not a change-me placeholder")
    for stage in parse_dockerfile((root / "Dockerfile").read_text()):
        for keyword in ("ENV", "ARG"):
            for args in stage.args(keyword):
                for key in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", args):
                    if SECRET_NAME.search(key):
                        problems.append(f"Dockerfile: {keyword} {key} bakes a secret into the image")
        for args in stage.args("COPY") + stage.args("ADD"):
            if re.search(r"(^|\s)\.env(\s|$)", args):
                problems.append(f"Dockerfile: copies .env into the image ({args})")
    return problems


def check_bind_mounts(stack: Stack) -> list[str]:
    problems = []
    for name in stack.services:
        for v in stack.volumes(name):
            if not v.named and not (stack.root / v.source).exists():
                problems.append(f"{name}: bind-mounts {v.source!r} at {v.target}, which does not exist")
        files = stack.services[name].get("env_file") or []
        for f in [files] if isinstance(files, str) else files:
            path = f["path"] if isinstance(f, dict) else f
            if not (stack.root / (path + ".example" if path == ".env" else path)).exists():
                problems.append(f"{name}: env_file {path!r} has no {path}.example to start from")
        build = stack.services[name].get("build")
        if build:
            context = stack.root / (build if isinstance(build, str) else build.get("context", "."))
            dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
            if not (context / dockerfile).exists():
                problems.append(f"{name}: builds from {context / dockerfile}, which does not exist")
    for stage in parse_dockerfile((stack.root / "Dockerfile").read_text()):
        for args in stage.args("COPY"):
            words = [w for w in args.split() if not w.startswith("--")]
            if "--from=" in args:
                continue
            for src in words[:-1]:
                if not (stack.root / src).exists():
                    problems.append(f"Dockerfile: COPY {src}, which does not exist")
    return problems


def _listen_ports(stack: Stack, name: str) -> set[int]:
    """Ports a service answers on from the compose network."""
    svc = stack.services[name]
    ports = {int(str(p).split("/")[0]) for p in svc.get("expose") or []}
    if svc.get("build") or svc.get("image", "").startswith("mosis-storage"):
        env = {**_dockerfile_env(stack.root), **stack.container_env(name)}
        cmd = stack.command(name)
        addr = env.get("MOSIS_APP_BIND") if cmd is None else (
            env.get("MOSIS_SCHEDULER_METRICS_ADDR") if "app.scheduler" in cmd else None)
        if addr and addr.rsplit(":", 1)[0] in ("0.0.0.0", "[::]", ""):
            ports.add(int(addr.rsplit(":", 1)[1]))
    return ports


def _dockerfile_env(root: Path) -> dict[str, str]:
    final = parse_dockerfile((root / "Dockerfile").read_text())[-1]
    env = {}
    for args in final.args("ENV"):
        env.update(dict(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=(\S+)", args)))
    return env


def check_prometheus(stack: Stack) -> list[str]:
    problems = []
    cmd = stack.command("prometheus") or []
    flags = dict(c.split("=", 1) for c in cmd if c.startswith("--") and "=" in c)
    config = stack.bind_source("prometheus", flags.get("--config.file", "/etc/prometheus/prometheus.yml"))
    ours = (stack.root / "grafana/prometheus/prometheus.yml").resolve()
    if config != ours:
        problems.append(f"prometheus reads {flags.get('--config.file')} ({config}), not the repository's "
                        f"grafana/prometheus/prometheus.yml")
        return problems
    conf = yaml.safe_load(config.read_text())
    for rules in conf.get("rule_files") or []:
        if not (config.parent / rules).exists():
            problems.append(f"prometheus.yml loads rule file {rules!r}, which is not beside it")
    prefix = urlparse(flags.get("--web.external-url", "/")).path.rstrip("/")
    minio_scraped = set()
    for job in conf.get("scrape_configs") or []:
        path = job.get("metrics_path", "/metrics")
        for sc in job.get("static_configs") or []:
            for target in sc.get("targets") or []:
                host, port = target.rsplit(":", 1)
                if host == "localhost":
                    if path != f"{prefix}/metrics":
                        problems.append(f"job {job['job_name']}: Prometheus serves its metrics at "
                                        f"{prefix}/metrics, not {path}")
                    continue
                if host not in stack.services:
                    problems.append(f"job {job['job_name']}: target {target} is no compose service")
                    continue
                if int(port) not in _listen_ports(stack, host):
                    problems.append(f"job {job['job_name']}: {host} does not answer on port {port} on the "
                                    f"compose network (listens on {sorted(_listen_ports(stack, host))})")
                if re.fullmatch(r"minio\d+", host) and path == "/minio/v2/metrics/cluster":
                    minio_scraped.add(host)
    # Any node answers for the cluster, but the one that is down cannot
    # report itself offline: every node is a target.
    nodes = {n for n in stack.services if re.fullmatch(r"minio\d+", n)}
    if minio_scraped != nodes:
        problems.append(f"Prometheus does not scrape MinIO's /minio/v2/metrics/cluster from every MinIO node "
                        f"{sorted(nodes)}, only from {sorted(minio_scraped)}")
    health = " ".join(map(str, stack.services["prometheus"].get("healthcheck", {}).get("test") or []))
    if f":9090{prefix}/-/healthy" not in health:
        problems.append(f"prometheus: healthcheck {health!r} does not ask {prefix}/-/healthy")
    datasource = yaml.safe_load((stack.root / "grafana/provisioning/datasources/prometheus.yml").read_text())
    url = datasource["datasources"][0]["url"]
    if url.rstrip("/") != f"http://prometheus:9090{prefix}":
        problems.append(f"Grafana's datasource {url} is not where compose serves Prometheus "
                        f"(http://prometheus:9090{prefix})")
    provider = yaml.safe_load((stack.root / "grafana/provisioning/dashboards/mosis.yml").read_text())
    dashboards = stack.bind_source("grafana", provider["providers"][0]["options"]["path"])
    if dashboards != (stack.root / "grafana/dashboards").resolve():
        problems.append(f"Grafana's dashboard provider reads {dashboards}, not grafana/dashboards")
    if stack.bind_source("grafana", "/etc/grafana/provisioning/datasources") != \
            (stack.root / "grafana/provisioning/datasources").resolve():
        problems.append("grafana does not mount grafana/provisioning at /etc/grafana/provisioning")
    return problems


def edge_path_problems(stack: Stack, target: edge.Target) -> list[str]:
    """Directories nginx must find when it starts: in the nginx container
    only the volume mount points (and the image's /var/run) are sure to exist."""
    settings = Settings.from_env(stack.filled().container_env("edge-config"))
    text = edge.render(settings, target, "s" * 43)
    mounts = {PurePosixPath(v.target) for v in stack.volumes("nginx")} | {PurePosixPath("/var/run")}
    paths = re.findall(r"^\s*(?:\w+_temp_path|proxy_cache_path|access_log|pid)\s+(/\S+?);?\s", text, re.M)
    problems = []
    for p in paths:
        parent = PurePosixPath(p).parent
        if parent not in mounts:
            problems.append(f"nginx needs {p}, but its directory {parent} is no mount point of the nginx "
                            f"service (nginx creates only the last level; mounts: {sorted(map(str, mounts))})")
    return problems


def check_edge(stack: Stack) -> list[str]:
    settings = Settings.from_env(stack.filled().container_env("edge-config"))
    servers = tuple(s for s in stack.container_env("edge-config").get("MOSIS_EDGE_STORAGE_SERVERS", "").split(",")
                    if s)
    target = edge.compose_target(settings, storage_servers=servers or None)
    problems = edge_path_problems(stack, target)
    for server in servers:
        host, port = server.rsplit(":", 1)
        if host not in stack.services or int(port) not in _listen_ports(stack, host):
            problems.append(f"the edge's storage server {server} is no compose service answering on {port}")
    nginx = " ".join(map(str, stack.services["nginx"].get("healthcheck", {}).get("test") or []))
    if not re.search(rf"127\.0\.0\.1:{target.internal_listen}/health\b(?!z)", nginx):
        problems.append(f"nginx: healthcheck {nginx!r} does not ask nginx's own /health on its internal "
                        f"server (the app's /healthz would make nginx unhealthy whenever the app is)")
    grafana = stack.container_env("grafana")
    if not grafana.get("GF_SERVER_ROOT_URL", "").endswith("/grafana/") \
            or grafana.get("GF_SERVER_SERVE_FROM_SUB_PATH") != "true":
        problems.append("grafana is not set up to be served under /grafana/, where the edge proxies it")
    return problems


def check_dockerfile(stack: Stack) -> list[str]:
    problems = []
    root = stack.root
    stages = parse_dockerfile((root / "Dockerfile").read_text())
    names = {s.name for s in stages if s.name}
    if len(stages) < 2:
        problems.append("Dockerfile: a single stage; build in one stage and run from a clean one")
    for s in stages:
        if s.base not in names and (problem := image_problem(s.base)):
            problems.append(f"Dockerfile: FROM {problem}")
    final = stages[-1]
    if not re.fullmatch(r"python:\d+\.\d+\.\d+-slim(-\w+)?", final.base.split("@")[0]):
        problems.append(f"Dockerfile: the final stage runs on {final.base}, not a slim Python image pinned "
                        f"to a patch version")
    venv_from = [re.search(r"--from=(\S+)", a).group(1) for a in final.args("COPY") if "--from=" in a]
    builders = [s for s in stages if s.name in venv_from]
    for b in builders:
        if b.base != final.base:
            problems.append(f"Dockerfile: stage {b.name} builds on {b.base} but the final stage runs {final.base}: "
                            f"the virtualenv's interpreter would differ")
    users = final.args("USER")
    if not users or users[-1].split(":")[0] in ("root", "0"):
        problems.append(f"Dockerfile: the final stage runs as {users[-1] if users else 'root'}: it must run as "
                        f"a non-root USER")
    for run in final.args("RUN"):
        tools = [p for p in apt_packages(run) if p in BUILD_TOOLS or p.endswith("-dev")]
        if tools:
            problems.append(f"Dockerfile: the final stage installs build tools {tools}")
        if re.search(r"\bpip3? install\b", run):
            problems.append("Dockerfile: the final stage runs pip install; packages come from the build stage")
    install = [b for b in builders if any("scripts/install-python" in r for r in b.args("RUN"))
               and any("scripts/install-python" in c for c in b.args("COPY"))]
    if not install:
        problems.append("Dockerfile: no build stage copies and runs scripts/install-python, the install step "
                        "scripts/run and scripts/test use")
    lib = (root / "scripts/lib.sh").read_text()
    ensure = re.search(r"ensure_venv\(\)\s*{(.*?)\n}", lib, re.S)
    if not ensure or not re.search(r'"\$ROOT/scripts/install-python"', ensure.group(1)):
        problems.append("scripts/lib.sh: ensure_venv does not run scripts/install-python, so scripts/run and "
                        "the image install differently")
    # pg_dump must be at least the server's version, or it refuses to dump.
    postgres = stack.services.get("postgres", {}).get("image", "")
    pg_major = image_tag(postgres).split(".")[0].split("-")[0] if postgres else None
    args = arg_defaults(final.args("ARG"))
    # As docker runs them with the build arguments' defaults (production's).
    runs = expand_args(" ".join(final.args("RUN")), args)
    majors = {re.sub(r"\$\{?PG_MAJOR\}?", args.get("PG_MAJOR", ""), m.group(1))
              for p in apt_packages(runs) if (m := re.fullmatch(r"postgresql-client-(\S+)", p))}
    if majors != {pg_major}:
        problems.append(f"Dockerfile: installs PostgreSQL client {sorted(majors) or 'none'} (PG_MAJOR="
                        f"{args.get('PG_MAJOR')}) but compose runs {postgres}: pg_dump must match the server")
    suites = re.findall(r"apt\.postgresql\.org/pub/repos/apt (\S+)-pgdg", runs)
    codename = final.base.rsplit("-", 1)[-1]
    if not suites or any(s != codename for s in suites):
        problems.append(f"Dockerfile: the PostgreSQL apt repository is for {suites}, the base image is "
                        f"Debian {codename}")
    keys = re.findall(r"signed-by=(\S+?)\]", runs)
    added = {a.split()[-1]: a.split()[-2] for a in final.args("ADD") + final.args("COPY")}
    if not keys or any(k not in added for k in keys):
        problems.append(f"Dockerfile: the PostgreSQL repository's key {keys} is not the one the stage adds "
                        f"{sorted(added)}")
    for key in keys:
        source = root / added.get(key, "")
        if key in added and source.is_file() and openpgp_fingerprint(source.read_text()) != PGDG_FINGERPRINT:
            problems.append(f"Dockerfile: {added[key]} is not the PostgreSQL repository's signing key "
                            f"({PGDG_FINGERPRINT})")
    return problems


def openpgp_fingerprint(armored: str) -> str:
    """The v4 fingerprint of the first public key in an ASCII-armored OpenPGP
    key (RFC 4880 12.2: SHA-1 over 0x99, the packet's length and body)."""
    import base64
    import hashlib

    body = re.search(r"\n\n(.*?)\n=", armored, re.S)
    data = base64.b64decode("".join(body.group(1).split())) if body else b""
    if len(data) < 3:
        return ""
    if data[0] & 0x40:  # new format
        tag = data[0] & 0x3F
        length, start = (data[1], 2) if data[1] < 192 else (((data[1] - 192) << 8) + data[2] + 192, 3)
    else:  # old format: the length's size in the low two bits
        tag, size = (data[0] >> 2) & 0x0F, {0: 1, 1: 2, 2: 4}.get(data[0] & 0x03, 0)
        length, start = int.from_bytes(data[1:1 + size], "big"), 1 + size
    if tag != 6:  # not a public key packet
        return ""
    packet = data[start:start + length]
    return hashlib.sha1(b"\x99" + len(packet).to_bytes(2, "big") + packet).hexdigest().upper()


def check_docs(stack: Stack) -> list[str]:
    """The compose facts the deployment docs repeat, and their override snippets."""
    problems = []
    deploy = (stack.root / "docs/deploy.md").read_text()
    minio = stack.services.get("minio1", {}).get("image", "")
    if minio and minio not in deploy:
        problems.append(f"docs/deploy.md does not name the MinIO image compose runs ({minio})")
    for doc in ("docs/deploy.md", "docs/cloudflare.md", "docs/scaling.md"):
        for block in re.findall(r"```yaml\n(.*?)```", (stack.root / doc).read_text(), re.S):
            snippet = yaml.safe_load(block) or {}
            for name, svc in (snippet.get("services") or {}).items():
                svc = svc or {}
                new = any(k in svc for k in ("image", "build", "extends"))
                if name not in stack.services and not new:
                    problems.append(f"{doc}: an override names service {name!r}, which compose.yaml does not have")
                for port in svc.get("ports") or []:
                    if name != "nginx" and not str(port).startswith("127.0.0.1:"):
                        problems.append(f"{doc}: publishes {name}'s {port} beyond the host's loopback")
    # The database's user and name are settings (.env): commands the docs run
    # in the postgres container read them there, not a copy of the defaults.
    pg_env = stack.environment("postgres")
    for doc in sorted((stack.root / "docs").glob("*.md")):
        for cmd in re.findall(r"docker compose exec[^`\n]* postgres [^`\n]*", doc.read_text()):
            if not re.search(r"\b(pg_dump|pg_restore|psql)\b", cmd):
                continue
            quoted = re.search(r"sh -c '([^']*)'", cmd)
            inner = quoted.group(1) if quoted else ""
            for var in ("POSTGRES_USER", "POSTGRES_DB"):
                if f'"${var}"' not in inner or var not in pg_env:
                    problems.append(f"{doc.relative_to(stack.root)}: `{cmd}` does not read {var} in the "
                                    f"container (sh -c '… \"${var}\" …'): it breaks when .env changes it")
    # The managed-database override replaces the URL compose.yaml builds, but
    # compose still requires what that URL reads.
    database = (stack.root / "docs/scaling.md").read_text().partition("## Database")[2].partition("\n## ")[0]
    required = sorted({name for name, op, where in stack.references
                       if where.endswith(".environment.MOSIS_DATABASE_URL") and op in (":?", "?")})
    for name in required:
        if name not in database:
            problems.append(f"docs/scaling.md: the managed-database override does not say that {name} must stay "
                            f"set (compose.yaml requires it in MOSIS_DATABASE_URL)")
    problems += link_problems(stack.root)
    return problems


def heading_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def link_problems(root: Path) -> list[str]:
    """Links from the docs to a section (`file.md#anchor`, `#anchor`) that
    names a heading the file has."""
    problems = []
    pages = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    for page in pages:
        text = page.read_text()
        for target, anchor in re.findall(r"\]\(([\w./-]*\.md|)#([\w-]+)\)", text):
            path = (page.parent / target).resolve() if target else page
            if not path.is_file():
                problems.append(f"{page.relative_to(root)}: links to {target}, which does not exist")
                continue
            headings = re.findall(r"^#+ (.+)$", re.sub(r"```.*?```", "", path.read_text(), flags=re.S), re.M)
            if anchor not in {heading_anchor(h) for h in headings}:
                problems.append(f"{page.relative_to(root)}: links to {target or page.name}#{anchor}, "
                                f"a section {path.name} does not have")
    return problems


CHECKS = {
    "healthchecks": check_healthchecks,
    "images": check_images,
    "ports": check_ports,
    "depends_on": check_depends_on,
    "volumes": check_volumes,
    "minio": check_minio,
    "required_variables": check_required_variables,
    "secrets": check_secrets,
    "bind_mounts": check_bind_mounts,
    "prometheus": check_prometheus,
    "edge": check_edge,
    "dockerfile": check_dockerfile,
    "docs": check_docs,
}


def run_checks(root: Path) -> dict[str, list[str]]:
    """Every check on the repository at `root`: check name -> its problems."""
    stack = Stack.load(root)
    results = {name: check(stack) for name, check in CHECKS.items()}
    results["app_environment"] = check_app_environment(stack, root / "app")
    return results
