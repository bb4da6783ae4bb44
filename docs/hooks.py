"""Build-time helpers for the documentation site (MkDocs hooks and a griffe extension).

The docstrings in ``src/`` are written in reST (Sphinx) style: cross-references are roles such as
``:class:`~pytest_multiconn.EchoServer```, examples follow a paragraph that ends in ``::``.
mkdocstrings renders Markdown, so without help the site would show those roles as written.
Rather than rewrite every docstring, this file converts them when the site is built:

* :class:`SphinxRoles` is a griffe extension (loaded by mkdocstrings-python through
  ``extensions: [docs/hooks.py]`` in ``mkdocs.yml``). Once the package is loaded it rewrites
  each docstring: a role becomes an autorefs cross-reference
  (``<autoref identifier="full.path" optional><code>Name</code></autoref>``) when its target is an
  object of the package, else a code span; ``~`` shows only the last component, as in Sphinx;
  ``:func:`` and ``:meth:`` get ``()``. A paragraph ending in ``::`` becomes a paragraph ending
  in ``:`` followed by a fenced Python block, as reST means it.
* The MkDocs hooks (``hooks: [docs/hooks.py]``) check the result: a rendered page that still
  shows a raw role fails the build (``mkdocs build --strict``).

``sphinx_roles_to_markdown`` is the pure function behind the extension, for tests.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from typing import Any

try:  # griffe is installed with mkdocstrings-python; MkDocs loads this file without needing it
    import griffe
except ImportError:  # pragma: no cover - only without the docs extra
    griffe = None  # type: ignore[assignment]

log = logging.getLogger("mkdocs.hooks.docs")

ROLES = ("class", "mod", "func", "meth", "data", "attr", "exc", "obj", "const", "py:class")
_ROLE = re.compile(
    r":(?:py:)?(?P<role>class|mod|func|meth|data|attr|exc|obj|const):`(?P<body>[^`]+)`"
)
_TITLED = re.compile(r"^(?P<title>.*?)\s*<(?P<target>[^<>]+)>$")
# What a raw role looks like once Python-Markdown has rendered it: ``:class:<code>X</code>``.
RAW_ROLE_IN_HTML = re.compile(
    r":(?:py:)?(?:class|mod|func|meth|data|attr|exc|obj|const):(?:<code>|`)"
)

Resolver = Callable[[str, str], "str | None"]


def sphinx_roles_to_markdown(text: str, resolve: Resolver | None = None) -> str:
    """Return ``text`` with reST roles and ``::`` literal blocks turned into Markdown.

    ``resolve(role, target)`` returns the full dotted path of an object to link to, or None
    (then the role becomes a code span).
    """
    text = _literal_blocks(text)

    def replace(match: re.Match[str]) -> str:
        role, body = match["role"], match["body"].strip()
        title = None
        if titled := _TITLED.match(body):
            title, body = titled["title"], titled["target"].strip()
        short = body.startswith("~")
        target = body.lstrip("~!").removesuffix("()")
        if title is None:
            title = target.rsplit(".", 1)[-1] if short else target.lstrip(".")
            if role in ("func", "meth") and not title.endswith(")"):
                title += "()"
        path = resolve(role, target) if resolve else None
        code = f"<code>{_escape(title)}</code>"
        if path is None:
            return code
        return f'<autoref identifier="{path}" optional>{code}</autoref>'

    return _ROLE.sub(replace, text)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _literal_blocks(text: str) -> str:
    """``Paragraph::`` + an indented block -> ``Paragraph:`` + a fenced ``python`` block."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.rstrip().endswith("::") or line.lstrip().startswith((">>>", "..")):
            out.append(line)
            i += 1
            continue
        indent = len(line) - len(line.lstrip())
        head = line.rstrip()[:-2].rstrip()
        j = i + 1
        while j < len(lines) and not lines[j].strip():
            j += 1
        block: list[str] = []
        while j < len(lines) and (not lines[j].strip() or _indent(lines[j]) > indent):
            block.append(lines[j])
            j += 1
        while block and not block[-1].strip():
            block.pop()
        if not block:
            out.append(line)
            i += 1
            continue
        strip = min(_indent(b) for b in block if b.strip())
        pad = " " * indent
        if head:  # "Usage::" -> "Usage:"; a lone "::" disappears
            out.append(head + ":")
        out.append("")
        out.append(pad + "```python")
        out.extend(pad + b[strip:] if b.strip() else "" for b in block)
        out.append(pad + "```")
        out.append("")
        i = j
    return "\n".join(out)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


# -- griffe extension ----------------------------------------------------------------------------

if griffe is not None:

    class SphinxRoles(griffe.Extension):
        """Rewrite reST roles in every docstring of a loaded package (see the module docstring)."""

        def on_package(
            self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any
        ) -> None:
            collection = loader.modules_collection
            for obj in _walk(pkg):
                docstring = obj.docstring
                if docstring is None or not ("`" in docstring.value or "::" in docstring.value):
                    continue

                def resolve(role: str, target: str, obj: Any = obj) -> str | None:
                    return _resolve(collection, obj, role, target)

                docstring.value = sphinx_roles_to_markdown(docstring.value, resolve)

    def _walk(obj: Any) -> Iterator[Any]:
        yield obj
        for member in list(obj.members.values()):
            if member.is_alias:
                continue
            yield from _walk(member)

    def _lookup(collection: Any, path: str) -> Any:
        try:
            return collection.get_member(path)
        except Exception:  # noqa: BLE001 - griffe raises KeyError, AliasResolutionError, ...
            return None

    def _resolve(collection: Any, obj: Any, role: str, target: str) -> str | None:
        """The full path that ``target`` names as seen from ``obj``'s docstring, or None."""
        if not target:
            return None
        if target.startswith("."):  # ".method": a member of the class being documented
            scope = obj if obj.is_class else obj.parent
            target = target.lstrip(".")
            candidates = [f"{scope.path}.{target}"] if scope is not None else []
        else:
            scopes = []
            node = obj
            while node is not None:
                scopes.append(node.path)
                node = node.parent
            candidates = [target] + [f"{scope}.{target}" for scope in scopes]
        for candidate in candidates:
            found = _lookup(collection, candidate)
            if found is None:
                continue
            if found.is_alias:
                try:
                    found.final_target  # noqa: B018 - resolves, or raises for a dangling alias
                except Exception:  # noqa: BLE001, S112 - a dangling alias is no link target
                    continue
            return candidate
        return None


# -- MkDocs hooks --------------------------------------------------------------------------------


def on_page_content(html: str, page: Any, **kwargs: Any) -> str:
    """Fail the build (a warning under ``--strict``) if a page still shows a raw reST role."""
    for match in RAW_ROLE_IN_HTML.finditer(html):
        context = re.sub(r"<[^>]+>", "", html[max(0, match.start() - 60) : match.end() + 60])
        log.warning("raw reST role on %s: ...%s...", page.file.src_path, " ".join(context.split()))
        break
    return html
