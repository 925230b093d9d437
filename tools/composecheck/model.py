"""compose.yaml and the Dockerfile read as compose and docker read them.

YAML anchors and merge keys resolved, `${VAR:-default}` and `${VAR:?message}`
interpolated against a dotenv file (.env.example, the file operators copy to
.env, unless another is given), env_file and `environment` merged as compose
merges them, the Dockerfile split into its stages with its global build
arguments' defaults substituted. The checks (tools/composecheck/checks.py)
read the files with it; tests/test_image.py starts the services from it.
"""

from __future__ import annotations

import re
import secrets
import shlex
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import yaml

# Variable names whose values are secrets (not identifiers such as an access
# key id, not paths such as a TLS key file).
SECRET_NAME = re.compile(r"(PASSWORD|SECRET|TOKEN|SECRET_KEY|SIGNING_KEY)$")

# -- reading compose as compose does ---------------------------------------------------


class InterpolationError(ValueError):
    pass


def read_dotenv(path: Path) -> dict[str, str]:
    """KEY=VALUE lines as compose reads .env: comments, `export`, quotes."""
    env = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        key, sep, value = line.partition("=")
        if not sep:
            continue
        value = value.strip()
        if value[:1] in ("'", '"') and value.endswith(value[0]) and len(value) > 1:
            value = value[1:-1]
        else:
            value = re.split(r"\s+#", value, maxsplit=1)[0].strip()
        env[key.strip()] = value
    return env


def filled_in(env: dict[str, str]) -> dict[str, str]:
    """`env` (from .env.example) as an operator fills it in: each change-me
    placeholder replaced by a secret of its own."""
    return {k: (secrets.token_hex(32) if "change-me" in v else v) for k, v in env.items()}


def _closing_brace(text: str, start: int) -> int:
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
    raise InterpolationError(f"unclosed ${{ in {text!r}")


def interpolate(text: str, env: dict[str, str], where: str, seen: list | None = None) -> str:
    """Compose's interpolation: $$, $VAR, ${VAR}, ${VAR:-d}, ${VAR-d},
    ${VAR:?msg}, ${VAR?msg}, ${VAR:+alt}, ${VAR+alt}, nested defaults.
    `seen` collects (name, operator) of every reference."""
    out, i = [], 0
    while i < len(text):
        if text[i] != "$":
            out.append(text[i])
            i += 1
            continue
        nxt = text[i + 1:i + 2]
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt == "{":
            end = _closing_brace(text, i + 1)
            out.append(_expand(text[i + 2:end], env, where, seen))
            i = end + 1
        elif m := re.match(r"[A-Za-z_][A-Za-z0-9_]*", text[i + 1:]):
            if seen is not None:
                seen.append((m.group(), None))
            out.append(env.get(m.group(), ""))
            i += 1 + len(m.group())
        else:
            out.append("$")
            i += 1
    return "".join(out)


def _expand(body: str, env: dict[str, str], where: str, seen: list | None) -> str:
    m = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])(.*))?", body, re.S)
    if not m:
        raise InterpolationError(f"{where}: invalid interpolation ${{{body}}}")
    name, op, arg = m.groups()
    if seen is not None:
        seen.append((name, op))
    value = env.get(name)
    empty = value is None or value == ""
    if op is None:
        return value or ""
    if op in (":-", "-"):
        use_default = value is None or (op == ":-" and empty)
        return interpolate(arg, env, where, seen) if use_default else value
    if op in (":?", "?"):
        if value is None or (op == ":?" and empty):
            raise InterpolationError(f"{where}: compose refuses to start: {name} is required "
                                     f"({interpolate(arg, env, where)!r})")
        return value
    use_alt = value is not None and (op == "+" or not empty)
    return interpolate(arg, env, where, seen) if use_alt else ""


def _walk_strings(node, fn, where: str):
    """Apply fn to every string value (never to keys), as compose interpolates."""
    if isinstance(node, dict):
        return {k: _walk_strings(v, fn, f"{where}.{k}") for k, v in node.items()}
    if isinstance(node, list):
        return [_walk_strings(v, fn, f"{where}[{i}]") for i, v in enumerate(node)]
    if isinstance(node, str):
        return fn(node, where)
    return node


@dataclass
class Volume:
    source: str
    target: str
    named: bool
    read_only: bool


@dataclass
class Stack:
    """The compose project as compose sees it, plus the files around it."""

    root: Path
    raw: dict  # anchors and merge keys resolved, not interpolated
    env: dict[str, str]  # .env (by default .env.example, standing in for it)
    dotenv: Path | None = None
    resolved: dict = field(default_factory=dict)
    interpolation_problems: list[str] = field(default_factory=list)
    references: list[tuple[str, str | None, str]] = field(default_factory=list)

    @classmethod
    def load(cls, root: Path, dotenv: Path | None = None, fill: bool = False) -> "Stack":
        """compose.yaml under `root`, with `dotenv` as its .env (default:
        .env.example) for interpolation and for `env_file: .env`; `fill`:
        its placeholders filled in (filled_in) as an operator would."""
        dotenv = dotenv or root / ".env.example"
        raw = yaml.safe_load((root / "compose.yaml").read_text())
        env = read_dotenv(dotenv)
        stack = cls(root=root, raw=raw, env=filled_in(env) if fill else env, dotenv=dotenv)

        def fn(text: str, where: str) -> str:
            seen: list = []
            try:
                value = interpolate(text, stack.env, where, seen)
            except InterpolationError as e:
                stack.interpolation_problems.append(str(e))
                value = text
            stack.references += [(name, op, where) for name, op in seen]
            return value

        stack.resolved = _walk_strings({k: v for k, v in raw.items() if not k.startswith("x-")}, fn, "compose.yaml")
        return stack

    def filled(self) -> "Stack":
        """The same project with .env's placeholders filled in."""
        return Stack.load(self.root, self.dotenv, fill=True)

    @property
    def services(self) -> dict[str, dict]:
        return self.resolved["services"]

    def raw_service(self, name: str) -> dict:
        return self.raw["services"][name]

    def volumes(self, name: str) -> list[Volume]:
        out = []
        for v in self.services[name].get("volumes") or []:
            if isinstance(v, dict):
                source, target = v.get("source", ""), v["target"]
                ro = bool(v.get("read_only"))
            else:
                parts = v.split(":")
                source, target = parts[0], parts[1]
                ro = len(parts) > 2 and "ro" in parts[2].split(",")
            named = bool(source) and not source.startswith((".", "/", "~"))
            out.append(Volume(source, target, named, ro))
        return out

    def depends_on(self, name: str) -> dict | list:
        return self.services[name].get("depends_on") or {}

    def environment(self, name: str) -> dict[str, str | None]:
        env = self.services[name].get("environment") or {}
        if isinstance(env, list):
            env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
        return {k: (None if v is None else str(v)) for k, v in env.items()}

    def container_env(self, name: str) -> dict[str, str]:
        """What the container's process sees: env_file (.env is the stack's
        dotenv file), then `environment` over it, then nothing from the image."""
        files = self.services[name].get("env_file") or []
        out: dict[str, str] = {}
        for f in [files] if isinstance(files, str) else files:
            path = f["path"] if isinstance(f, dict) else f
            out.update(self.env if path == ".env" else read_dotenv(self.root / path))
        out.update({k: v for k, v in self.environment(name).items() if v is not None})
        return out

    def command(self, name: str) -> list[str] | None:
        cmd = self.services[name].get("command")
        return shlex.split(cmd) if isinstance(cmd, str) else cmd

    def is_one_shot(self, name: str) -> bool:
        return str(self.services[name].get("restart", "")) == "no"

    def bind_source(self, name: str, container_path: str) -> Path | None:
        """The repository file behind a container path, through a bind mount."""
        p = PurePosixPath(container_path)
        for v in self.volumes(name):
            if not v.named and (p == PurePosixPath(v.target) or PurePosixPath(v.target) in p.parents):
                return (self.root / v.source / p.relative_to(v.target)).resolve()
        return None


def image_problem(ref: str) -> str | None:
    """Why an image reference is not pinned to a version, if it is not."""
    name = ref.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" not in last:
        return f"{ref!r} has no tag: it means whatever `latest` is on the day it is pulled"
    tag = last.rsplit(":", 1)[1]
    if tag == "latest" or not re.search(r"\d+[.-]\d+", tag):
        return f"{ref!r} is not pinned to a version (tag {tag!r} moves)"
    return None


def image_tag(ref: str) -> str:
    return ref.split("@", 1)[0].rsplit("/", 1)[-1].rsplit(":", 1)[1]


# -- reading the Dockerfile -------------------------------------------------------------


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        return [a for k, a in self.instructions if k == keyword]


def expand_args(text: str, args: dict[str, str]) -> str:
    """`$NAME` and `${NAME}` of build arguments replaced by their values."""
    return re.sub(r"\$(?:{(\w+)}|(\w+))",
                  lambda m: args.get(m.group(1) or m.group(2), m.group(0)), text)


def arg_defaults(lines: list[str]) -> dict[str, str]:
    """The defaults of `ARG NAME=value` instructions."""
    return dict(re.findall(r"(\w+)=(\S*)", " ".join(lines)))


def parse_dockerfile(text: str) -> list[Stage]:
    """Stages with their instructions; continuation lines joined, comments
    dropped; build arguments declared before the first FROM (the only ones
    FROM may use) replaced by their defaults in FROM, as docker does."""
    logical, current = [], ""
    for line in text.splitlines():
        if not current and line.lstrip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        current += line
        if current.strip():
            logical.append(current.strip())
        current = ""
    stages: list[Stage] = []
    global_args: list[str] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "ARG" and not stages:
            global_args.append(args)
        elif keyword == "FROM":
            args = expand_args(args, arg_defaults(global_args))
            words = [w for w in args.split() if not w.startswith("--")]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
        elif stages:
            stages[-1].instructions.append((keyword, args.strip()))
    return stages


def apt_packages(run: str) -> list[str]:
    """Packages named by `apt-get install` commands in one RUN line."""
    packages = []
    for command in re.split(r"&&|;|\|\|", run):
        words = shlex.split(command.replace('"', "").replace("'", ""))
        if "apt-get" in words and "install" in words:
            packages += [w for w in words[words.index("install") + 1:] if not w.startswith("-")]
    return packages


# -- what the app reads ------------------------------------------------------------------
