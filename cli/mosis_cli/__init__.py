"""`mosis`: the command-line tool of Mosis app developers.

    mosis login --url https://store.example.com --token mos_...
    mosis pack ./notes            # -> com.example.notes-42.mosis, checked
    mosis upload com.example.notes-42.mosis --publish
    mosis download com.example.notes   # signature checked against the keyring

Commands: `mosis --help`; packaging, validation, uploads, signing,
configuration and exit codes: `mosis help` (mosis_cli/topics/).
"""

from __future__ import annotations

import argparse
import sys

from mosis_cli import commands
from mosis_cli.errors import CliError, Exit
from mosis_cli.progress import parse_rate
from mosis_cli.topics import TOPICS

PUBLIC_KEY_HELP = ("trust only a keyring that starts from this key (base64: the store's first key, "
                   "as /v1/signing-keys/1 holds it)")
EXIT_CODES = "\n".join(f"  {int(e):>3}  {e.name.lower()}" for e in Exit)


def _rate(text: str) -> int:
    try:
        return parse_rate(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def build_parser() -> argparse.ArgumentParser:
    # --json and --quiet work before or after the command.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print results (and errors) as JSON on stdout, for scripts")
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="no progress or notes on stderr")
    parser = argparse.ArgumentParser(
        prog="mosis", parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Package, upload, publish and download Mosis apps.",
        epilog=f"configuration: MOSIS_URL and MOSIS_TOKEN, else what `mosis login` saved in "
               f"$XDG_CONFIG_HOME/mosis/config.json\n\nexit codes:\n{EXIT_CODES}\n\n"
               f"more: mosis help TOPIC ({', '.join(TOPICS)})")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name, func, help_, parent=sub):
        p = parent.add_parser(name, parents=[common], help=help_, description=help_)
        p.set_defaults(func=func)
        return p

    p = command("login", commands.login, "save the service URL and your token")
    p.add_argument("--url", required=True, help="the service, e.g. https://store.example.com")
    p.add_argument("--token", help="your developer token; '-' or nothing reads it from stdin")
    p.add_argument("--no-verify", action="store_true", help="save without checking the token")
    command("logout", commands.logout, "forget the saved URL and token")
    p = command("help", commands.help_cmd, "read about packaging, validation, uploads, signing, ...")
    p.add_argument("topic", nargs="?", choices=TOPICS, metavar="TOPIC", help="one of: %(choices)s; none lists them")

    apps = sub.add_parser("apps", help="register and list your apps").add_subparsers(
        dest="apps_command", required=True, metavar="COMMAND")
    command("list", commands.apps_list, "list your apps", apps)
    p = command("create", commands.apps_create, "register an app", apps)
    p.add_argument("package_id", help="e.g. com.example.notes")
    p.add_argument("name", help="the app's name in the store")

    p = command("pack", commands.pack_cmd, "build a checked .mosis from a folder with manifest.json")
    p.add_argument("directory")
    p.add_argument("-o", "--output", help="file or folder to write (default: PACKAGE_ID-CODE.mosis)")

    p = command("check", commands.check_cmd, "validate a .mosis file as the store will")
    p.add_argument("package")

    p = command("upload", commands.upload,
                "upload a .mosis (resuming an interrupted upload), wait for validation")
    p.add_argument("package", help="the .mosis file; its manifest names the app and version")
    p.add_argument("--publish", action="store_true", help="publish it once it is validated")
    p.add_argument("--no-wait", action="store_true", help="do not wait for validation")
    p.add_argument("--timeout", type=_positive, default=600,
                   help="seconds to wait for validation (default 600)")
    p.add_argument("--restart", action="store_true",
                   help="abort an unfinished upload of another file for this version first")
    p.add_argument("--create-app", action="store_true",
                   help="register the app (named as in the manifest) if you have none with this package_id")
    p.add_argument("--no-check", action="store_true",
                   help="skip the local validation (the store validates anyway)")
    p.add_argument("--limit-rate", type=_rate, help="cap the upload speed, e.g. 500K or 4M (bytes/s)")

    p = command("versions", commands.versions, "list the versions of an app")
    p.add_argument("package_id")

    p = command("publish", commands.publish, "publish a validated (draft) version")
    p.add_argument("package_id")
    p.add_argument("version_code", type=int)

    p = command("abort", commands.abort, "abort an unfinished upload, freeing its version_code")
    p.add_argument("package_id")
    p.add_argument("version_code", type=int)

    p = command("download", commands.download,
                "download the published version, verify sha256 and signature (resumes)")
    p.add_argument("package_id")
    p.add_argument("-o", "--output", help="file or folder to write (default: PACKAGE_ID-CODE.mosis)")
    p.add_argument("--public-key", help=PUBLIC_KEY_HELP)
    p.add_argument("--limit-rate", type=_rate, help="cap the download speed, e.g. 500K or 4M (bytes/s)")
    p.add_argument("--from", dest="from_package", metavar="OLD.mosis",
                   help="the version you have: download a patch from it when the store has one "
                        "(falls back to the full package)")

    p = command("catalog", commands.catalog, "list every app's current version from the store's signed index")
    p.add_argument("--public-key", help=PUBLIC_KEY_HELP)

    icon = sub.add_parser("icon", help="the app's icon").add_subparsers(
        dest="icon_command", required=True, metavar="COMMAND")
    p = command("set", commands.icon_set, "upload the app's icon (square PNG or JPEG)", icon)
    p.add_argument("package_id")
    p.add_argument("file")

    shots = sub.add_parser("screenshots", help="the app's screenshots").add_subparsers(
        dest="screenshots_command", required=True, metavar="COMMAND")
    p = command("add", commands.screenshots_add, "add screenshots, in order", shots)
    p.add_argument("package_id")
    p.add_argument("files", nargs="+", metavar="FILE")
    p = command("list", commands.screenshots_list, "list screenshots", shots)
    p.add_argument("package_id")
    p = command("rm", commands.screenshots_rm, "remove the screenshot at a position", shots)
    p.add_argument("package_id")
    p.add_argument("position", type=int)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # usage errors exit with 2
    # (the flags' actions are shared by all parsers: no defaults set on them)
    out = commands.Output(getattr(args, "json", False), getattr(args, "quiet", False))
    try:
        args.func(commands.Context(args, out))
        return Exit.OK
    except CliError as e:
        out.error(e)
        return e.exit_code
    except KeyboardInterrupt:
        out.error(CliError(Exit.INTERRUPTED, "interrupted", code="interrupted",
                           hint="run the same command again: uploads and downloads resume"))
        return Exit.INTERRUPTED


def run() -> None:
    """The `mosis` console script."""
    sys.exit(int(main()))
