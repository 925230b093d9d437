"""compose.yaml's services on the test engine, as Compose would create them.

Compose itself is not to be had on these machines, and what the image tests
need of it is small: a service's container made from its image with the
command, environment and mounts compose.yaml gives it (read by
tools/composecheck/model.py with the test's .env), named as Compose names them
(`mosis-app-1`, volume `mosis_app-data`). The engine has no bridge network,
so every container uses the host's and every compose service name resolves
to this host (`--add-host`).

Run as `python -m tests.compose_cli compose ARGS...` it stands in for
`docker compose` in the commands the docs give operators (exec, run --rm,
cp, stop, up -d), so tests can run those lines as written; any other
`docker` command is refused. Its settings come from the environment:
MOSIS_TEST_DOCKER (the engine's client; DOCKER_HOST names the engine),
MOSIS_TEST_COMPOSE_ENV (the .env) and MOSIS_TEST_EDGE_IMAGE (nginx's
stand-in).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

from tools.composecheck.model import Stack

ROOT = Path(__file__).resolve().parent.parent


class Engine:
    """The docker client of the test engine (DOCKER_HOST)."""

    def __init__(self, client: str):
        self.client = client

    def __call__(self, *args: str, check: bool = True, input: str | None = None,
                 timeout: float = 300) -> subprocess.CompletedProcess:
        proc = subprocess.run([self.client, *args], input=input, capture_output=True, text=True,
                              timeout=timeout, **({"stdin": subprocess.DEVNULL} if input is None else {}))
        if check and proc.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args[:3])} … failed ({proc.returncode}):\n"
                               f"{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
        return proc


class Project:
    """The services of compose.yaml on `engine`; images compose cannot pull
    here are replaced as `stand_ins` says (image reference -> local image)."""

    def __init__(self, engine: Engine, stack: Stack, stand_ins: dict[str, str] | None = None):
        self.engine = engine
        self.stack = stack
        self.name = stack.raw.get("name", "mosis")
        self.stand_ins = stand_ins or {}

    @classmethod
    def from_environment(cls) -> "Project":
        stack = Stack.load(ROOT, Path(os.environ["MOSIS_TEST_COMPOSE_ENV"]))
        nginx = stack.services["nginx"]["image"]
        return cls(Engine(os.environ["MOSIS_TEST_DOCKER"]), stack, {nginx: os.environ["MOSIS_TEST_EDGE_IMAGE"]})

    # -- names -------------------------------------------------------------------

    def container(self, service: str) -> str:
        return f"{self.name}-{service}-1"

    def volume(self, name: str) -> str:
        return f"{self.name}_{name}"

    def image(self, service: str) -> str:
        ref = self.stack.services[service]["image"]
        return self.stand_ins.get(ref, ref)

    # -- what compose gives a container -----------------------------------------

    def create_volumes(self) -> None:
        for name in self.stack.resolved.get("volumes") or {}:
            self.engine("volume", "create", self.volume(name))

    def remove(self) -> None:
        """Every container and volume of the project."""
        ids = self.engine("ps", "-aq", "--filter", f"label=com.docker.compose.project={self.name}").stdout.split()
        if ids:
            self.engine("rm", "-f", *ids, check=False)
        for name in self.stack.resolved.get("volumes") or {}:
            self.engine("volume", "rm", "-f", self.volume(name), check=False)

    def container_args(self, service: str) -> list[str]:
        """`docker run` options for `service`: network, names, environment, mounts."""
        args = ["--network", "host", "--label", f"com.docker.compose.project={self.name}",
                "--label", f"com.docker.compose.service={service}"]
        for other in self.stack.services:
            args += ["--add-host", f"{other}:127.0.0.1"]
        for key, value in self.stack.container_env(service).items():
            args += ["--env", f"{key}={value}"]
        for v in self.stack.volumes(service):
            source = self.volume(v.source) if v.named else str((self.stack.root / v.source).resolve())
            args += ["--volume", f"{source}:{v.target}{':ro' if v.read_only else ''}"]
        if user := self.stack.services[service].get("user"):
            args += ["--user", str(user)]
        return args

    def command(self, service: str) -> list[str]:
        return list(self.stack.command(service) or [])

    def up(self, service: str) -> str:
        """Start the service's container in the background, as `up -d` does."""
        self.engine("rm", "-f", self.container(service), check=False)
        self.engine("run", "--detach", "--name", self.container(service), *self.container_args(service),
                    self.image(service), *self.command(service))
        return self.container(service)

    def run(self, service: str, command: list[str] | None = None, input: str | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
        """A one-off container of the service, as `compose run --rm` makes it
        (its own command, or `command`), in the foreground."""
        name = f"{self.name}-{service}-run-{uuid.uuid4().hex[:12]}"
        return self.engine("run", "--rm", "--interactive", "--name", name, *self.container_args(service),
                           self.image(service), *(command if command is not None else self.command(service)),
                           check=False, input=input, timeout=timeout)

    def exec(self, service: str, command: list[str], input: str | None = None,
             timeout: float = 120) -> subprocess.CompletedProcess:
        return self.engine("exec", "--interactive", self.container(service), *command, check=False,
                           input=input, timeout=timeout)

    def healthcheck(self, service: str) -> subprocess.CompletedProcess:
        """The service's healthcheck command, run in its container as the engine runs it."""
        test = self.stack.services[service]["healthcheck"]["test"]
        if isinstance(test, str):
            test = ["CMD-SHELL", test]
        argv = list(test[1:]) if test[0] == "CMD" else ["/bin/sh", "-c", " ".join(test[1:])]
        return self.exec(service, argv, timeout=60)

    def logs(self, service: str) -> str:
        proc = self.engine("logs", self.container(service), check=False)
        return proc.stdout + proc.stderr

    def state(self, service: str) -> dict:
        import json

        proc = self.engine("inspect", "--format", "{{json .State}}", self.container(service), check=False)
        return json.loads(proc.stdout) if proc.returncode == 0 else {}


# -- `docker compose ...` as operators type it -------------------------------------------

def _compose(project: Project, args: list[str]) -> int:
    sub, rest = args[0], args[1:]
    while rest and rest[0] in ("-T", "--no-TTY", "--rm"):
        rest = rest[1:]  # no terminal is ever allocated; run always removes its container
    if sub in ("exec", "run"):
        service, command = rest[0], rest[1:]
        stdin = None if sys.stdin.isatty() else sys.stdin.read()
        if sub == "exec":
            proc = project.exec(service, command, input=stdin, timeout=600)
        else:
            proc = project.run(service, command, input=stdin, timeout=600)
        sys.stdout.write(proc.stdout)
        sys.stderr.write(proc.stderr)
        return proc.returncode
    if sub == "cp":
        source, dest = rest
        if ":" in source:
            service, path = source.split(":", 1)
            source = f"{project.container(service)}:{path}"
        return project.engine("cp", source, dest, check=False).returncode
    if sub == "stop":
        for service in rest:
            project.engine("stop", project.container(service))
        return 0
    if sub == "up" and rest[:1] == ["-d"]:
        services = rest[1:] or [s for s in project.stack.services if project.state(s)]
        for service in services:
            project.engine("start", project.container(service))
        return 0
    print(f"compose_cli: `docker compose {' '.join(args)}` is not among what the tests stand in for",
          file=sys.stderr)
    return 97


def main(argv: list[str]) -> int:
    if argv[:1] != ["compose"]:
        print(f"compose_cli: only `docker compose …` is stood in for, not `docker {' '.join(argv)}`",
              file=sys.stderr)
        return 97
    return _compose(Project.from_environment(), argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
