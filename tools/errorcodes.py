"""Which API errors a route can answer with, read from the source of app/.

A static reading: from a function, every call that resolves to a function or
class of app/ is followed (through imports, `self`, annotated parameters,
return annotations and dataclass fields); every construction of an
`app.platform.errors.ApiError` subclass met on the way is an error the route can
answer with, at the status and code of that construction (or its class's).
What an `except` clause swallows is dropped; what it re-raises is kept. A
route that references a model or the database can meet the database's error
handler as well. A call whose receiver cannot be typed falls back to every
method of that name in app/ (more errors, never fewer); `Reader.guessed`
lists those calls, to see where typing a parameter would sharpen the answer.

A receiver typed with a Protocol (a port such as ObjectStore) follows the
method of every class of app/ that has all the Protocol's methods.

It over-approximates rather than misses: the test that every error found
here is declared in the OpenAPI document (tests/test_openapi.py) fails when
a new raise appears anywhere below a route, however deep. It reads source
files only; `route_errors` takes the live Flask app for its URL map, hooks
and handlers.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

ERRORS_BASE = "app.platform.errors:ApiError"
CATCH_ALL = {"Exception", "BaseException"}
# The exceptions peewee raises when the database is down (app/__init__.py
# turns them into one error answer).
DATABASE_ERRORS = {"OperationalError", "InterfaceError", "DatabaseError", "PeeweeException"}


# The type of a value known to come from outside app/ (a library's class).
EXTERNAL = ""


@dataclass(frozen=True)
class Raised:
    status: int | None  # None: not a literal where it is raised
    code: str | None
    cls: str  # "app.platform.errors:Conflict", or "database" for the database's handler
    where: str  # "app/catalog/packages.py:110"

    @property
    def known(self) -> bool:
        return self.status is not None and self.code is not None


@dataclass
class _Module:
    name: str
    path: Path
    tree: ast.Module
    imports: dict[str, str] = field(default_factory=dict)  # local name -> "mod" or "mod:attr"
    defs: dict[str, ast.AST] = field(default_factory=dict)  # top-level functions and classes
    values: dict[str, ast.expr] = field(default_factory=dict)  # top-level `name = expr`


@dataclass
class _Func:
    key: str
    node: ast.AST  # FunctionDef, AsyncFunctionDef or Lambda
    module: _Module
    cls: str | None  # the class key, for methods


class Reader:
    """The app/ package, parsed once; `errors_of` answers per function."""

    def __init__(self, root: Path, package: str = "app"):
        self.root = root
        self.modules: dict[str, _Module] = {}
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            self.modules[name] = self._read(name, path)
        self.funcs: dict[str, _Func] = {}
        self.classes: dict[str, tuple[ast.ClassDef, _Module]] = {}
        self._by_line: dict[tuple[str, int], _Func] = {}
        for module in self.modules.values():
            self._index(module)
        self._memo: dict[str, frozenset[Raised]] = {}
        self._busy: set[str] = set()
        self.guessed: set[tuple[str, str]] = set()  # (function key, method name)
        self.database_handler: frozenset[Raised] = frozenset()

    # -- reading -------------------------------------------------------------------

    def _read(self, name: str, path: Path) -> _Module:
        module = _Module(name, path, ast.parse(path.read_text(), str(path)))
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(module.tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname:
                        module.imports[alias.asname] = alias.name
                    else:
                        module.imports.setdefault(alias.name.split(".")[0], alias.name.split(".")[0])
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                for alias in node.names:
                    module.imports[alias.asname or alias.name] = f"{base}:{alias.name}"
        for node in module.tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                module.defs[node.name] = node
            elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                module.values[node.targets[0].id] = node.value
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
                module.values[node.target.id] = node.value
        return module

    def _index(self, module: _Module) -> None:
        def add(key: str, node, cls: str | None):
            func = _Func(key, node, module, cls)
            self.funcs[key] = func
            first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
            self._by_line[(str(module.path), first)] = func
            self._by_line.setdefault((str(module.path), node.lineno), func)

        for name, node in module.defs.items():
            if isinstance(node, ast.ClassDef):
                key = f"{module.name}:{name}"
                self.classes[key] = (node, module)
                for item in node.body:
                    if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        add(f"{key}.{item.name}", item, key)
            else:
                add(f"{module.name}:{name}", node, None)
        # Nested functions and lambdas are read as part of their parent, but
        # can also be roots (a decorator's wrapper, a before_request lambda).
        for node in ast.walk(module.tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                if (str(module.path), node.lineno) not in self._by_line:
                    add(f"{module.name}:<line {node.lineno}>", node, None)

    def func_of(self, fn) -> str | None:
        """The key of a live function object of app/ (None if it is not ours)."""
        code = getattr(fn, "__code__", None)
        if code is None:
            return None
        found = self._by_line.get((str(Path(code.co_filename).resolve()), code.co_firstlineno))
        if found is None:
            found = self._by_line.get((code.co_filename, code.co_firstlineno))
        return found.key if found else None

    # -- resolving names -----------------------------------------------------------

    def _symbol(self, module: _Module, name: str, depth: int = 0):
        """What `name` is at the top level of `module`: ("module", name),
        ("func", key), ("class", key), ("value", (module, name)) or None."""
        if depth > 10:
            return None
        node = module.defs.get(name)
        if isinstance(node, ast.ClassDef):
            return ("class", f"{module.name}:{name}")
        if node is not None:
            return ("func", f"{module.name}:{name}")
        if name in module.values:
            return ("value", (module, name))
        target = module.imports.get(name)
        if target is None:
            return None
        if ":" not in target:
            return ("module", target) if target in self.modules else ("external", target)
        mod, _, attr = target.partition(":")
        if f"{mod}.{attr}" in self.modules:
            return ("module", f"{mod}.{attr}")
        if mod in self.modules:
            return self._symbol(self.modules[mod], attr, depth + 1)
        return ("external", target)

    def _expr_symbol(self, expr: ast.expr, module: _Module):
        if isinstance(expr, ast.Name):
            return self._symbol(module, expr.id)
        if isinstance(expr, ast.Attribute):
            base = self._expr_symbol(expr.value, module)
            if base and base[0] == "module":
                return self._symbol(self.modules[base[1]], expr.attr)
            if base and base[0] == "external":
                return ("external", f"{base[1]}.{expr.attr}")
        return None

    def _bases(self, cls: str) -> list[str]:
        """`cls` and its app/ ancestors, nearest first."""
        out, todo = [], [cls]
        while todo:
            key = todo.pop(0)
            if key in out or key not in self.classes:
                continue
            out.append(key)
            node, module = self.classes[key]
            for base in node.bases:
                found = self._expr_symbol(base, module)
                if found and found[0] == "class":
                    todo.append(found[1])
        return out

    def _external_bases(self, cls: str) -> set[str]:
        names = set()
        for key in self._bases(cls):
            node, module = self.classes[key]
            for base in node.bases:
                found = self._expr_symbol(base, module)
                if found and found[0] == "external":
                    names.add(found[1].rpartition(":")[2].rpartition(".")[2])
        return names

    def is_error_class(self, cls: str) -> bool:
        return ERRORS_BASE in self._bases(cls)

    def is_model(self, cls: str) -> bool:
        return cls.startswith("app.platform.models:") and "Model" in self._external_bases(cls)

    def _class_default(self, cls: str, attr: str):
        for key in self._bases(cls):
            node, _ = self.classes[key]
            for item in node.body:
                if isinstance(item, ast.Assign):
                    for target in item.targets:
                        names = target.elts if isinstance(target, ast.Tuple) else [target]
                        values = item.value.elts if isinstance(item.value, ast.Tuple) else [item.value]
                        for n, v in zip(names, values):
                            if isinstance(n, ast.Name) and n.id == attr and isinstance(v, ast.Constant):
                                return v.value
        return None

    def _method(self, cls: str, name: str) -> str | None:
        for key in self._bases(cls):
            if f"{key}.{name}" in self.funcs:
                return f"{key}.{name}"
        return None

    # -- types -----------------------------------------------------------------------

    def _annotation(self, ann: ast.expr | None, module: _Module) -> str | None:
        if ann is None:
            return None
        if isinstance(ann, ast.Constant) and isinstance(ann.value, str):
            try:
                ann = ast.parse(ann.value, mode="eval").body
            except SyntaxError:
                return None
        if isinstance(ann, ast.BinOp):  # X | None
            return self._annotation(ann.left, module) or self._annotation(ann.right, module)
        if isinstance(ann, ast.Subscript):  # Optional[X]
            return self._annotation(ann.slice, module)
        found = self._expr_symbol(ann, module)
        if found and found[0] == "external":
            return EXTERNAL
        return found[1] if found and found[0] == "class" else None

    def _is_protocol(self, cls: str) -> bool:
        node, _ = self.classes[cls]
        return any((isinstance(b, ast.Name) and b.id == "Protocol")
                   or (isinstance(b, ast.Attribute) and b.attr == "Protocol") for b in node.bases)

    def _implementations(self, protocol: str, name: str) -> list[str]:
        """`name` of every class of app/ that has all of `protocol`'s methods."""
        wanted = {k.rpartition(".")[2] for k in self.funcs if k.rpartition(".")[0] == protocol}
        found = []
        for cls in self.classes:
            if cls == protocol or self._is_protocol(cls):
                continue
            if all(self._method(cls, m) for m in wanted) and (method := self._method(cls, name)):
                found.append(method)
        return sorted(found)

    def _attr_type(self, cls: str, attr: str) -> str | None:
        for key in self._bases(cls):
            node, module = self.classes[key]
            for item in ast.walk(node):
                if isinstance(item, ast.AnnAssign):
                    target = item.target
                    if (isinstance(target, ast.Name) and target.id == attr) or (
                            isinstance(target, ast.Attribute) and target.attr == attr):
                        return self._annotation(item.annotation, module)
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item.name == attr and any(
                        isinstance(d, ast.Name) and d.id == "property" for d in item.decorator_list):
                    return self._annotation(item.returns, module)
        return None

    def _type_of(self, expr: ast.expr, func: _Func, depth: int = 0) -> str | None:
        """The app/ class of the value `expr` (an instance or the class itself)."""
        if depth > 8:
            return None
        module = func.module
        if isinstance(expr, ast.Name):
            if expr.id in ("self", "cls") and func.cls:
                return func.cls
            node = func.node
            args = node.args.args + node.args.kwonlyargs + node.args.posonlyargs
            for arg in args:
                if arg.arg == expr.id:
                    return self._annotation(arg.annotation, module)
            if not isinstance(node, ast.Lambda):
                for item in ast.walk(node):
                    if isinstance(item, ast.Assign):
                        for target in item.targets:
                            if isinstance(target, ast.Name) and target.id == expr.id:
                                return self._type_of(item.value, func, depth + 1)
                            if isinstance(target, ast.Tuple) and isinstance(item.value, ast.Tuple):
                                for t, v in zip(target.elts, item.value.elts):  # a, b = x, y
                                    if isinstance(t, ast.Name) and t.id == expr.id:
                                        return self._type_of(v, func, depth + 1)
                    if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name) \
                            and item.target.id == expr.id:
                        return self._annotation(item.annotation, module)
                    if isinstance(item, (ast.With, ast.AsyncWith)):
                        for w in item.items:
                            if isinstance(w.optional_vars, ast.Name) and w.optional_vars.id == expr.id:
                                return self._type_of(w.context_expr, func, depth + 1)
            found = self._symbol(module, expr.id)
            if found and found[0] == "class":
                return found[1]
            if found and found[0] == "value":  # a module-level object, e.g. a compiled query
                owner, name = found[1]
                return self._type_of(owner.values[name], _Func(f"{owner.name}:{name}", _EMPTY, owner, None),
                                     depth + 1)
            return None
        if isinstance(expr, ast.Call):
            target = self._callee(expr.func, func, depth + 1)
            if target and target[0] == "class":
                return target[1]
            if target and target[0] == "func":
                callee = self.funcs[target[1]]
                return self._annotation(getattr(callee.node, "returns", None), callee.module)
            return None
        if isinstance(expr, ast.Attribute):
            found = self._expr_symbol(expr, module)
            if found and found[0] == "class":
                return found[1]
            owner = self._type_of(expr.value, func, depth + 1)
            return self._attr_type(owner, expr.attr) if owner else None
        if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Div):
            return EXTERNAL  # `directory / name`: a pathlib path
        return None

    def _callee(self, expr: ast.expr, func: _Func, depth: int = 0):
        """What a call of `expr` runs: ("func", key), ("class", key),
        ("guess", [keys]) or None (not ours, or unknown)."""
        found = self._expr_symbol(expr, func.module)
        if found and found[0] in ("func", "class"):
            return found
        if found and found[0] == "value":
            module, name = found[1]
            value = module.values[name]
            if isinstance(value, ast.Call):  # `require_admin = _require("admin")`
                inner = _Func(f"{module.name}:{name}", func.node, module, None)
                return self._callee(value.func, inner, depth + 1)
            return None
        if found:
            return None  # a module, or something outside app/
        if isinstance(expr, ast.Attribute):
            if isinstance(expr.value, ast.Call) and getattr(expr.value.func, "id", "") == "super":
                for base in self._bases(func.cls)[1:] if func.cls else []:
                    if f"{base}.{expr.attr}" in self.funcs:
                        return ("func", f"{base}.{expr.attr}")
                return None
            owner = self._type_of(expr.value, func, depth + 1)
            if owner == EXTERNAL:
                return None  # a library's object: it raises no API error
            if owner and self._is_protocol(owner):  # a port: what its adapters run
                adapters = self._implementations(owner, expr.attr)
                return ("guess", adapters) if adapters else None
            if owner:
                method = self._method(owner, expr.attr)
                return ("func", method) if method else None
            candidates = sorted(k for k in self.funcs if "." in k.partition(":")[2]
                                and k.rpartition(".")[2] == expr.attr)
            if candidates:
                self.guessed.add((func.key, expr.attr))
                return ("guess", candidates)
        return None

    # -- errors ----------------------------------------------------------------------

    def _construction(self, call: ast.Call, cls: str, module: _Module) -> Raised:
        kw = {k.arg: k.value for k in call.keywords if k.arg}

        def literal(name):
            if name in kw:
                value = kw[name]
                return value.value if isinstance(value, ast.Constant) else None
            return self._class_default(cls, name)

        return Raised(literal("status"), literal("code"), cls,
                      f"{module.path.relative_to(self.root)}:{call.lineno}")

    def errors_of(self, key: str, method: str | None = None) -> frozenset[Raised]:
        """Every error the function `key` (and what it calls) can raise. With
        `method`, branches on `request.method` for another method are skipped."""
        if method is None and key in self._memo:
            return self._memo[key]
        if key in self._busy:
            return frozenset()  # recursion: the outer call collects it
        self._busy.add(key)
        try:
            func = self.funcs[key]
            body = func.node.body if isinstance(func.node.body, list) else [func.node.body]
            found = frozenset(self._block(body, func, method))
        finally:
            self._busy.discard(key)
        if method is None:
            self._memo[key] = found
        return found

    def _block(self, statements: list, func: _Func, method: str | None) -> set[Raised]:
        out: set[Raised] = set()
        for stmt in statements:
            if method and isinstance(stmt, ast.If) and (wanted := _method_test(stmt.test)):
                if wanted == method:
                    out |= self._block(stmt.body, func, method)
                    if _returns(stmt.body):
                        break
                else:
                    out |= self._block(stmt.orelse, func, method)
                continue
            if isinstance(stmt, ast.Try):
                inner = self._block(stmt.body, func, method)
                for handler in stmt.handlers:
                    if not _reraises(handler):
                        inner = {r for r in inner if not self._catches(handler, r, func.module)}
                    out |= self._block(handler.body, func, method)
                out |= inner
                out |= self._block(stmt.orelse + stmt.finalbody, func, method)
                continue
            out |= self._node(stmt, func, method)
        return out

    def _node(self, node: ast.AST, func: _Func, method: str | None) -> set[Raised]:
        out: set[Raised] = set()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Try):
                out |= self._block([child], func, method)
                continue
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out |= self._block(child.body, func, None)
                continue
            out |= self._node(child, func, method)
        if isinstance(node, ast.Call):
            out |= self._call(node, func)
        elif isinstance(node, (ast.Name, ast.Attribute)) and isinstance(node.ctx, ast.Load):
            found = self._expr_symbol(node, func.module)
            if found and (found[0] == "class" and self.is_model(found[1]) or found[0] == "value"
                          and found[1][0].name == "app.platform.models" and found[1][1] == "database"):
                out |= self.database_handler
        return out

    def _call(self, call: ast.Call, func: _Func) -> set[Raised]:
        out: set[Raised] = set()
        # A function handed over (a callback, a task) is taken as called.
        for arg in call.args + [k.value for k in call.keywords]:
            if isinstance(arg, (ast.Name, ast.Attribute)):
                found = self._expr_symbol(arg, func.module)
                if found and found[0] == "func":
                    out |= self.errors_of(found[1])
        target = self._callee(call.func, func)
        if target is None:
            return out
        kind, what = target
        keys = what if kind == "guess" else [what]
        for key in keys:
            if kind == "class":
                if self.is_error_class(key):
                    out.add(self._construction(call, key, func.module))
                    continue
                for name in ("__init__", "__post_init__", "__enter__", "__exit__", "__call__"):
                    if f"{key}.{name}" in self.funcs:
                        out |= self.errors_of(f"{key}.{name}")
            else:
                out |= self.errors_of(key)
        return out

    def _catches(self, handler: ast.ExceptHandler, raised: Raised, module: _Module) -> bool:
        if handler.type is None:
            return True
        types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
        for t in types:
            found = self._expr_symbol(t, module)
            name = t.id if isinstance(t, ast.Name) else getattr(t, "attr", "")
            if found is None and name in CATCH_ALL:
                return True
            if found and found[0] == "class" and found[1] in self._bases(raised.cls):
                return True
            if found and found[0] == "external" and raised.cls == "database" and (
                    found[1].rpartition(":")[2].rpartition(".")[2] in DATABASE_ERRORS):
                return True
        return False


_EMPTY = ast.parse("lambda: None", mode="eval").body


def _method_test(test: ast.expr) -> str | None:
    """"X" for `request.method == "X"`."""
    if (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)
            and isinstance(test.left, ast.Attribute) and test.left.attr == "method"
            and isinstance(test.left.value, ast.Name) and test.left.value.id == "request"
            and isinstance(test.comparators[0], ast.Constant)):
        return test.comparators[0].value
    return None


def _returns(body: list) -> bool:
    return bool(body) and isinstance(body[-1], (ast.Return, ast.Raise))


def _reraises(handler: ast.ExceptHandler) -> bool:
    return any(isinstance(n, ast.Raise) and n.exc is None for n in ast.walk(handler))


def route_errors(reader: Reader, flask_app, endpoint: str, method: str) -> frozenset[Raised]:
    """What the route `endpoint` answers `method` with: its view (and each
    decorator's wrapper around it) and the app's before_request hooks."""
    import peewee as pw

    handlers = flask_app.error_handler_spec.get(None, {}).get(None, {})
    database = handlers.get(pw.OperationalError)
    if database is not None and (key := reader.func_of(database)):
        reader.database_handler = frozenset(
            Raised(r.status, r.code, "database", r.where) for r in reader.errors_of(key))
    chain = [flask_app.view_functions[endpoint]]
    while hasattr(chain[-1], "__wrapped__"):
        chain.append(chain[-1].__wrapped__)
    out: set[Raised] = set()
    for fn in flask_app.before_request_funcs.get(None, []) + chain:
        key = reader.func_of(fn)
        if key is not None:
            out |= reader.errors_of(key, method if fn is chain[-1] else None)
    return frozenset(out)
